"""Widgets of the training dashboard."""
