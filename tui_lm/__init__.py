"""tui-lm: a terminal workbench for training GPT-style language models.

`tui_lm.app.make_app()` builds the Textual dashboard, `tui_lm.cli` is the
command line; the training itself lives in the `engine` package.
"""
