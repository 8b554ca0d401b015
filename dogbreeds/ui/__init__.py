"""Gradio app support: handler functions, English and Korean text, training sessions, plots and settings.

`app.py` at the repository root lays the components out and wires them to the handlers in this package.
"""
