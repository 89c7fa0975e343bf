"""Serving: everything between a picture and its caption (and its speech). Imports nothing from the
pipeline, not even inside functions (``tests/test_layers.py`` checks)."""
