"""Decoder models (Keras) and their one-step functions for caption generation."""
from .merge import build_merge_model, MergeStepper

__all__ = ["build_merge_model", "MergeStepper"]
