"""Widgets, one sub-package per screen area."""
