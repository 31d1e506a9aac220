"""Widgets of the setup screen."""
