"""Saving and loading a trained captioner folder: decoder.keras + vocab.json + config.json.

Loading checks everything a user could get wrong and says how to fix it, instead of a traceback.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .config import DecodeConfig, TrainConfig, save_json
from .vocab import Vocabulary, VocabError

DECODER_FILE, VOCAB_FILE, CONFIG_FILE = "decoder.keras", "vocab.json", "config.json"
DECODING_FILE = "decoding.json"  # decoding settings chosen on held-out training images (optional)
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "merge-lstm"


class CheckpointError(RuntimeError):
    """A model folder that cannot be used; the message names the file and the fix."""


@dataclass
class Checkpoint:
    model: object  # keras.Model
    vocab: Vocabulary
    config: TrainConfig
    folder: Path
    length_alpha: float = DecodeConfig.length_alpha  # from decoding.json when the folder has one


def save_checkpoint(model, vocab: Vocabulary, config: TrainConfig, folder: Path) -> None:
    """Write the folder; the decoder is saved without optimizer state (a third of the size)."""
    import keras

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    inference_copy = keras.Model.from_config(model.get_config())  # same layers and names, not compiled
    inference_copy.set_weights(model.get_weights())
    tmp = folder / f".{DECODER_FILE}.tmp.keras"
    inference_copy.save(tmp)
    tmp.replace(folder / DECODER_FILE)
    vocab.save(folder / VOCAB_FILE)
    save_json(config.to_json(), folder / CONFIG_FILE)


def load_checkpoint(folder: str | Path | None = None) -> Checkpoint:
    """Load and cross-check a model folder (safe mode: no arbitrary code from the file)."""
    import keras

    folder = Path(folder) if folder else DEFAULT_MODEL_DIR
    fix = ("train one with `python -m captioner train --out DIR`, or pass --model with a folder "
           f"holding {DECODER_FILE}, {VOCAB_FILE} and {CONFIG_FILE}")
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: model folder not found; {fix}")
    for name in (DECODER_FILE, VOCAB_FILE, CONFIG_FILE):
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder / name}: missing; {fix}")
    try:
        config = TrainConfig.from_json(json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8")))
        config.validate()
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{folder / CONFIG_FILE}: invalid config ({err})") from err
    try:
        vocab = Vocabulary.load(folder / VOCAB_FILE)
    except VocabError as err:
        raise CheckpointError(str(err)) from err
    from . import decoders  # noqa: F401  registers the custom layers (AttentionLSTM) that safe mode may load
    try:
        model = keras.models.load_model(folder / DECODER_FILE, compile=False, safe_mode=True)
    except Exception as err:  # zip, h5 and deserialisation errors all land here
        raise CheckpointError(f"{folder / DECODER_FILE}: cannot load the decoder "
                              f"({type(err).__name__}: {str(err)[:200]}); {fix}") from err
    try:
        output_size = int(model.get_layer("logits").units)
    except ValueError as err:
        raise CheckpointError(f"{folder / DECODER_FILE}: not a captioner decoder (no 'logits' layer)") from err
    if output_size != len(vocab):
        raise CheckpointError(f"{folder}: the vocabulary has {len(vocab)} words but the decoder predicts "
                              f"{output_size}; {VOCAB_FILE} belongs to a different checkpoint")
    alpha = DecodeConfig.length_alpha
    if (folder / DECODING_FILE).is_file():
        try:
            alpha = float(json.loads((folder / DECODING_FILE).read_text(encoding="utf-8"))["length_alpha"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{folder / DECODING_FILE}: unreadable ({err})") from err
    return Checkpoint(model, vocab, config, folder, alpha)


def available_models(root: Path | None = None) -> list[Path]:
    """Model folders under ``models/`` (each holding a decoder), the default first."""
    root = Path(root) if root else DEFAULT_MODEL_DIR.parent
    found = sorted(p for p in root.iterdir() if (p / DECODER_FILE).is_file()) if root.is_dir() else []
    return sorted(found, key=lambda p: p != DEFAULT_MODEL_DIR)
