"""The app's screens: setup, dashboard, resume picker and the modal dialogs."""
