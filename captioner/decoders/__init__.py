"""Decoder models (Keras) and their one-step functions for caption generation."""
from .attention import AttentionLSTM, AttentionStepper, build_attention_model
from .ensemble import EnsembleStepper
from .merge import MergeStepper, build_merge_model


def make_stepper(model):
    """The decoding step interface matching ``model``'s decoder family."""
    names = {layer.name for layer in model.layers}
    return AttentionStepper(model) if "attention_lstm" in names else MergeStepper(model)


def checkpoint_stepper(checkpoint):
    """The step interface for a loaded model folder: one decoder, or an ensemble of its members."""
    if checkpoint.members:
        return EnsembleStepper([make_stepper(m.model) for m in checkpoint.members])
    return make_stepper(checkpoint.model)


__all__ = ["build_merge_model", "MergeStepper", "build_attention_model", "AttentionStepper", "AttentionLSTM",
           "EnsembleStepper", "make_stepper", "checkpoint_stepper"]
