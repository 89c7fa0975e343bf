"""Saving and loading a trained captioner folder: decoder.keras + vocab.json + config.json, or an
ensemble folder: ensemble.json naming member folders that share one vocabulary.

Loading checks everything a user could get wrong and says how to fix it, instead of a traceback.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .config import DecodeConfig, TrainConfig, save_json
from .vocab import Vocabulary, VocabError

DECODER_FILE, VOCAB_FILE, CONFIG_FILE = "decoder.keras", "vocab.json", "config.json"
DECODING_FILE = "decoding.json"  # decoding settings chosen on held-out training images (optional)
ENSEMBLE_FILE = "ensemble.json"  # {"members": ["../merge-lstm", ...]}: paths relative to the ensemble folder
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "merge-ensemble"  # chosen by docs/SELECTION.md


class CheckpointError(RuntimeError):
    """A model folder that cannot be used; the message names the file and the fix."""


@dataclass
class Checkpoint:
    model: object  # keras.Model
    vocab: Vocabulary
    config: TrainConfig
    folder: Path
    length_alpha: float = DecodeConfig.length_alpha  # from decoding.json when the folder has one
    members: list["Checkpoint"] = field(default_factory=list)  # an ensemble's members (model/config: the first's)

    @property
    def is_ensemble(self) -> bool:
        return bool(self.members)


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
    if (folder / ENSEMBLE_FILE).is_file():
        return _load_ensemble(folder)
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
    return Checkpoint(model, vocab, config, folder, _length_alpha(folder))


def _length_alpha(folder: Path) -> float:
    """The tuned length exponent from ``decoding.json``, or the default when the folder has none."""
    if not (folder / DECODING_FILE).is_file():
        return DecodeConfig.length_alpha
    try:
        return float(json.loads((folder / DECODING_FILE).read_text(encoding="utf-8"))["length_alpha"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{folder / DECODING_FILE}: unreadable ({err})") from err


def ensemble_members(folder: Path) -> list[Path]:
    """The member folders an ensemble folder names (resolved against it)."""
    path = Path(folder) / ENSEMBLE_FILE
    try:
        names = json.loads(path.read_text(encoding="utf-8"))["members"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise TypeError("'members' must be a list of folder paths")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: unreadable ({err}); expected {{\"members\": [\"../merge-lstm\", ...]}}") from err
    if len(names) < 2:
        raise CheckpointError(f"{path}: an ensemble needs at least two member folders, not {len(names)}")
    return [(Path(folder) / n).resolve() for n in names]


def _load_ensemble(folder: Path) -> Checkpoint:
    """Load every member; they must share the vocabulary and the kind of image features."""
    members = []
    for member in ensemble_members(folder):
        if (member / ENSEMBLE_FILE).is_file():
            raise CheckpointError(f"{folder / ENSEMBLE_FILE}: member {member} is itself an ensemble")
        try:
            members.append(load_checkpoint(member))
        except CheckpointError as err:
            raise CheckpointError(f"{folder / ENSEMBLE_FILE}: member {member.name} cannot be loaded: {err}") from err
    first = members[0]
    for other in members[1:]:
        if other.vocab != first.vocab:
            raise CheckpointError(f"{folder}: members {first.folder.name} and {other.folder.name} have different "
                                  "vocabularies; an ensemble votes word by word, so they must share one")
        if other.config.decoder != first.config.decoder:
            raise CheckpointError(f"{folder}: members mix {first.config.decoder} and {other.config.decoder} "
                                  "decoders, which read different image features")
    return Checkpoint(first.model, first.vocab, first.config, folder, _length_alpha(folder), members)


def available_models(root: Path | None = None) -> list[Path]:
    """Model folders under ``models/`` (each holding a decoder), the default first."""
    root = Path(root) if root else DEFAULT_MODEL_DIR.parent
    found = sorted(p for p in root.iterdir() if (p / DECODER_FILE).is_file() or (p / ENSEMBLE_FILE).is_file()
                   ) if root.is_dir() else []
    return sorted(found, key=lambda p: p != DEFAULT_MODEL_DIR)


def describe_model(folder: Path) -> str:
    """A short label for a model folder, from its JSON files alone (no Keras): for pickers and logs."""
    folder = Path(folder)
    try:
        if (folder / ENSEMBLE_FILE).is_file():
            text = f"{folder.name}: ensemble of {' + '.join(m.name for m in ensemble_members(folder))}"
        else:
            cfg = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
            rnn = str(cfg.get("rnn", "lstm")).upper()
            text = (f"{folder.name}: soft-attention {rnn} (shows where it looked)" if cfg.get("decoder") == "attention"
                    else f"{folder.name}: merge decoder, {rnn}")
    except (CheckpointError, OSError, ValueError, KeyError, TypeError, AttributeError):
        text = folder.name  # a broken folder still gets listed; loading it reports the problem
    return text + (" (default)" if folder.resolve() == DEFAULT_MODEL_DIR.resolve() else "")
