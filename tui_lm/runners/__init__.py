"""Where the Textual app and headless mode run a trainer, or follow a run folder, and hand its events to the UI."""
