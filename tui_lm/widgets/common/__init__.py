"""Helpers shared by the widgets of several screens."""
