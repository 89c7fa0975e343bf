"""Serving: everything between a picture and its caption (and its speech). Imports nothing from training."""
