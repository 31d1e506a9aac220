"""Widgets of the resume picker."""
