"""captioner: image captioning with a frozen Xception encoder and an LSTM/GRU decoder.

    from captioner import Captioner, DecodeConfig
    cap = Captioner.load()                                  # the default model + cached Xception weights
    [result] = cap.caption(["photo.jpg"], DecodeConfig(beam_width=3))
    print(result.text)

The package has two halves: ``captioner.serving`` (what captions a picture: images, encoder, decoders,
decoding, model folders, confidence, speech) and ``captioner.pipeline`` (what builds and measures models:
data, features, training, evaluation, calibration, model cards). The pipeline uses serving, never the
other way round (``tests/test_layers.py``); ``config.py`` and ``machine.py`` serve both.
``captioner.cli`` is the command line over both.
"""
from __future__ import annotations

from .config import DecodeConfig
from .serving.captioner import Caption, CaptionResult, Captioner
from .serving.images import ImageError

__version__ = "0.1.0"

__all__ = ["Captioner", "Caption", "CaptionResult", "DecodeConfig", "ImageError", "__version__"]
