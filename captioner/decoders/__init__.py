"""Decoder models (Keras) and their one-step functions for caption generation."""
from .attention import AttentionLSTM, AttentionStepper, build_attention_model
from .merge import MergeStepper, build_merge_model

__all__ = ["build_merge_model", "MergeStepper", "build_attention_model", "AttentionStepper", "AttentionLSTM"]
