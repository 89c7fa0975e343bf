"""Decoder families (Keras models and their one-step functions), looked up by name in ``registry``.

Importing this package imports no TensorFlow; the family modules are loaded when a model is built or
stepped.
"""
from .registry import FAMILIES, POOLED, SPATIAL, DecoderFamily, family


def make_stepper(model, decoder: str):
    """The decoding step interface over a trained ``model`` of the family called ``decoder``."""
    return family(decoder).stepper(model)


def checkpoint_stepper(checkpoint):
    """The step interface for a loaded model folder: one decoder, or an ensemble of its members."""
    if checkpoint.members:
        from .ensemble import EnsembleStepper

        return EnsembleStepper([make_stepper(m.model, m.config.decoder) for m in checkpoint.members])
    return make_stepper(checkpoint.model, checkpoint.config.decoder)


def build_model(vocab_size: int, cfg):
    """A new decoder of the family ``cfg.decoder``."""
    return family(cfg.decoder).build(vocab_size, cfg)


__all__ = ["FAMILIES", "POOLED", "SPATIAL", "DecoderFamily", "family", "make_stepper", "checkpoint_stepper", "build_model"]
