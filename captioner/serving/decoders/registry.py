"""The one place that maps a decoder family's name (``config.json``'s ``"decoder"``) to its code.

A family is a module with ``build_model(vocab_size, cfg) -> keras.Model`` and a ``Stepper`` class
(the step interface over a trained model), plus the facts serving needs before loading anything:
which image features it reads and how to describe it. Adding a family is one module and one line in
``FAMILIES``. This file imports no TensorFlow: pickers and validation read it for free.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

POOLED, SPATIAL = "pooled", "spatial"  # (B, 2048) vectors, or (B, 10, 10, 2048) region grids


@dataclass(frozen=True)
class DecoderFamily:
    name: str
    module: str  # relative to this package; imported only when a model is built or stepped
    feature_kind: str  # POOLED or SPATIAL: what the encoder must produce for it
    has_attention: bool  # its stepper can say where it looked for each word
    describe: Callable[[dict], str]  # config.json -> a short label for model pickers

    def import_module(self):
        """The family's module (importing it also registers its custom Keras layers for safe loading)."""
        return importlib.import_module(f"{__package__}.{self.module}")

    def build(self, vocab_size: int, cfg):
        """A new, untrained Keras model of this family."""
        return self.import_module().build_model(vocab_size, cfg)

    def stepper(self, model):
        """The compiled step interface over a trained model of this family."""
        return self.import_module().Stepper(model)


FAMILIES: dict[str, DecoderFamily] = {f.name: f for f in (
    DecoderFamily("merge", "merge", POOLED, False,
                  lambda cfg: f"merge decoder, {str(cfg.get('rnn', 'lstm')).upper()}"),
    DecoderFamily("inject", "inject", POOLED, False,
                  lambda cfg: f"init-inject {str(cfg.get('rnn', 'lstm')).upper()} (the image sets the first state)"),
    DecoderFamily("attention", "attention", SPATIAL, True,
                  lambda cfg: f"soft-attention {str(cfg.get('rnn', 'lstm')).upper()} (shows where it looked)"),
)}


def family(name: str) -> DecoderFamily:
    """The family called ``name``, or ValueError listing the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown decoder {name!r}; available: {', '.join(repr(n) for n in FAMILIES)}") from None
