"""Sub-commands of `tui-lm` (`estimate`, `sample`, `export`): each module has `main(argv) -> int`."""
