"""Widgets of the browse and compare screens."""
