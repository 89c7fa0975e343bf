"""The model folder: the one module that knows its file names, reads and writes them, and finds models.

A single model folder holds::

    decoder.keras        the Keras decoder (no optimizer state; loaded in safe mode)
    vocab.json           the vocabulary (JSON, never pickle)
    config.json          TrainConfig; its "decoder" names the family in ``decoders.registry``
    decoding.json        decoding settings chosen on held-out training images (optional)
    tune_images.txt      those held-out training images, one name a line
    training.json        the training summary (epochs, losses, time, data facts)
    scst.json            self-critical fine-tuning summary (only for fine-tuned folders)
    metrics.json         evaluation results written with the model card
    MODEL_CARD.md, training_curve.png, history.csv

An ensemble folder holds ``ensemble.json`` (``{"members": ["../merge-lstm", ...]}``, paths relative
to the folder, always a list) plus its own decoding.json, tune_images.txt, metrics.json and card.

Loading checks everything a user could get wrong and says how to fix it, instead of a traceback.
Where models are found: ``--model DIR``, else ``CAPTIONER_MODELS``, else the models installed with the
package, else the repository's ``models/``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import DecodeConfig, TrainConfig, save_json
from .vocab import Vocabulary, VocabError

DECODER_FILE, VOCAB_FILE, CONFIG_FILE = "decoder.keras", "vocab.json", "config.json"
DECODING_FILE = "decoding.json"
ENSEMBLE_FILE = "ensemble.json"
TUNE_FILE = "tune_images.txt"
TRAINING_FILE = "training.json"
SCST_FILE = "scst.json"
METRICS_FILE = "metrics.json"
CARD_FILE = "MODEL_CARD.md"
CURVE_FILE = "training_curve.png"
HISTORY_FILE = "history.csv"
TRUECASE_FILE = "truecase.json"  # lower-case token -> written form, for languages modelled in lower case (German)
CONFIDENCE_FILE = "confidence.json"  # the folder's calibrator (serving/confidence.py)
# shared by every folder of a models root, found through the calibrator's relative paths
DOMAIN_FILE = "domain.json"  # the out-of-domain check (serving/domain.py)
NEIGHBOURS_FILE = "neighbours.json"  # training photos' coordinates and hashed caption n-grams (serving/confidence.py)
KERAS_WEIGHTS_ENTRY, KERAS_CONFIG_ENTRY = "model.weights.h5", "config.json"  # inside decoder.keras (a zip)
DEFAULT_MODEL_NAME = "merge-ensemble"  # chosen by docs/SELECTION.md
MODELS_ENV = "CAPTIONER_MODELS"


def neighbours_file_for(lang: str) -> str:
    """The shared neighbour index of a caption language: its references are in that language."""
    return NEIGHBOURS_FILE if lang == "en" else f"neighbours-{lang}.json"


class CheckpointError(RuntimeError):
    """A model folder that cannot be used; the message names the file and the fix."""


# ---------------------------------------------------------------------------------------------- where

def models_roots() -> list[Path]:
    """Folders that may hold model folders, in the order they are searched."""
    return [root for root, _ in _labelled_roots()]


def _labelled_roots() -> list[tuple[Path, str]]:
    """``models_roots()`` with what each one is, for error messages."""
    package = Path(__file__).resolve().parents[1]  # captioner/
    env = os.environ.get(MODELS_ENV)
    roots = [(Path(env).expanduser(), MODELS_ENV)] if env else []
    return roots + [(package / "models", "the models installed with the package"),
                    (package.parent / "models", "the repository's models/")]


def models_root() -> Path:
    """The first folder in ``models_roots()`` that holds at least one model folder (else the first)."""
    roots = models_roots()
    for root in roots:
        if root.is_dir() and any(is_model_folder(p) for p in root.iterdir()):
            return root
    return roots[0]


def default_model_name(lang: str | None = None) -> str:
    """The default model folder's name for a caption language: the English default, or ``merge-<lang>``."""
    from .languages import DEFAULT_LANG, language

    code = language(lang).code  # LanguageError for a language the project has no captions in
    return DEFAULT_MODEL_NAME if code == DEFAULT_LANG else f"merge-{code}"


def default_model_dir(lang: str | None = None) -> Path:
    """The default model folder (of caption language ``lang``; None = English); CheckpointError naming
    every place searched when there is none."""
    name = default_model_name(lang)
    labelled = _labelled_roots()
    for root, _ in labelled:
        if is_model_folder(root / name):
            return root / name
    searched = [f"{label} ({root})" for root, label in labelled]
    if not os.environ.get(MODELS_ENV):
        searched.insert(0, f"{MODELS_ENV} (not set)")
    train = "" if name == DEFAULT_MODEL_NAME else f" --lang {lang}"
    raise CheckpointError(f"no {name}/ model folder found: searched {'; '.join(searched)}. Set "
                          f"{MODELS_ENV}=DIR to a folder holding model folders such as {name}/, "
                          f"pass --model DIR, or train one with `python -m captioner train{train} --out DIR`")


def is_model_folder(folder: Path) -> bool:
    """True for a folder holding a decoder or naming ensemble members."""
    return (folder / DECODER_FILE).is_file() or (folder / ENSEMBLE_FILE).is_file()


def resolve_model_dir(model_dir: str | Path | None) -> Path:
    """The model folder as an absolute path (the default model when None), checked, without loading Keras."""
    folder = Path(model_dir).expanduser() if model_dir else default_model_dir()
    if not is_model_folder(folder):
        raise CheckpointError(f"{folder}: not a model folder (no decoder or ensemble file); pass --model DIR")
    return folder.resolve()


def is_ensemble_folder(folder: Path) -> bool:
    return (Path(folder) / ENSEMBLE_FILE).is_file()


def folder_has_attention(folder: Path) -> bool:
    """True for a single attention decoder, read from its config without loading it (what
    ``Captioner.has_attention`` says once loaded); False for anything unreadable, which loading reports."""
    from .decoders import family

    try:
        return not is_ensemble_folder(folder) and family(read_config(folder).decoder).has_attention
    except (CheckpointError, ValueError):
        return False


def available_models(root: Path | None = None) -> list[Path]:
    """Model folders under ``root`` (default ``models_root()``), the default first."""
    root = Path(root) if root else models_root()
    found = sorted(p for p in root.iterdir() if is_model_folder(p)) if root.is_dir() else []
    return sorted(found, key=lambda p: p.name != DEFAULT_MODEL_NAME)


# --------------------------------------------------------------------------------- typed JSON files

def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable {what} ({err})") from err


def read_config(folder: Path) -> TrainConfig:
    """config.json as a validated TrainConfig."""
    path = Path(folder) / CONFIG_FILE
    try:
        config = TrainConfig.from_json(_read_json(path, "config"))
        config.validate()
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: invalid config ({err})") from err
    return config


def write_config(folder: Path, config: TrainConfig) -> None:
    save_json(config.to_json(), Path(folder) / CONFIG_FILE)


def read_decoding(folder: Path) -> dict:
    """decoding.json (the tuned length exponent and the sweep behind it), or {} when there is none."""
    path = Path(folder) / DECODING_FILE
    if not path.is_file():
        return {}
    data = _read_json(path, "decoding settings")
    try:
        float(data["length_alpha"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable (no numeric length_alpha: {err})") from err
    return data


def write_decoding(folder: Path, decoding: dict) -> None:
    save_json(decoding, Path(folder) / DECODING_FILE)


def read_length_alpha(folder: Path) -> float:
    """The tuned length exponent, or DecodeConfig's default when the folder has none."""
    return float(read_decoding(folder).get("length_alpha", DecodeConfig.length_alpha))


def read_rerank(folder: Path) -> str:
    """How the folder's beam captions are ordered by default ("score" or "consensus", chosen on its held-out
    images by ``python -m captioner calibrate --tune-rerank``); "score" when decoding.json names none."""
    from ..config import RERANKINGS

    choice = read_decoding(folder).get("rerank", "score")
    if choice not in RERANKINGS or choice == "auto":
        raise CheckpointError(f"{Path(folder) / DECODING_FILE}: rerank must be score or consensus, not {choice!r}")
    return choice


def read_training(folder: Path) -> dict:
    """training.json, with scst.json under "scst" when the folder was fine-tuned."""
    path = Path(folder) / TRAINING_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; the model card needs the training summary")
    summary = _read_json(path, "training summary")
    if (Path(folder) / SCST_FILE).is_file():
        summary["scst"] = _read_json(Path(folder) / SCST_FILE, "fine-tuning summary")
    return summary


def write_training(folder: Path, summary: dict) -> None:
    save_json(summary, Path(folder) / TRAINING_FILE)


def write_scst(folder: Path, summary: dict) -> None:
    save_json(summary, Path(folder) / SCST_FILE)


def read_truecase(folder: Path) -> dict[str, str]:
    """The folder's written forms of lower-case tokens ({} when it has none: nothing to restore)."""
    path = Path(folder) / TRUECASE_FILE
    if not path.is_file():
        return {}
    data = _read_json(path, "truecase table")
    if not isinstance(data, dict) or not isinstance(data.get("forms"), dict):
        raise CheckpointError(f"{path}: not a truecase table (expected {{\"forms\": {{token: written form}}}})")
    return data["forms"]


def write_truecase(folder: Path, forms: dict[str, str]) -> None:
    save_json({"forms": forms, "learned_from": "training captions (first words and all-lower-case captions left out)"},
              Path(folder) / TRUECASE_FILE)


def read_metrics(folder: Path) -> dict:
    return _read_json(Path(folder) / METRICS_FILE, "metrics")


def write_metrics(folder: Path, metrics: dict) -> None:
    save_json(metrics, Path(folder) / METRICS_FILE)


def read_tune_images(folder: Path) -> list[str]:
    """The held-out training images the folder's decoding was chosen on ([] when there are none)."""
    path = Path(folder) / TUNE_FILE
    return path.read_text(encoding="utf-8").split() if path.is_file() else []


def write_tune_images(folder: Path, names: list[str]) -> None:
    (Path(folder) / TUNE_FILE).write_text("".join(f"{n}\n" for n in names), encoding="utf-8")


def ensemble_members(folder: Path) -> list[Path]:
    """The member folders an ensemble folder names (resolved against it)."""
    path = Path(folder) / ENSEMBLE_FILE
    data = _read_json(path, 'ensemble list; expected {"members": ["../merge-lstm", ...]}')
    names = data.get("members") if isinstance(data, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{path}: 'members' must be a list of folder paths, like "
                              '{"members": ["../merge-lstm", "../merge-gru"]}')
    if len(names) < 2:
        raise CheckpointError(f"{path}: an ensemble needs at least two member folders, not {len(names)}")
    return [(Path(folder) / n).resolve() for n in names]


def write_ensemble(folder: Path, members: list[Path]) -> None:
    """ensemble.json naming ``members`` by paths relative to ``folder`` (so the pair can move together)."""
    folder = Path(folder)
    save_json({"members": [os.path.relpath(Path(m).resolve(), folder.resolve()) for m in members]},
              folder / ENSEMBLE_FILE)


# ------------------------------------------------------------------------------------ whole folders

@dataclass
class Checkpoint:
    """A loaded model folder. For an ensemble, ``model``/``config``/``vocab`` are the first member's."""

    model: object  # keras.Model
    vocab: Vocabulary
    config: TrainConfig
    folder: Path
    length_alpha: float = DecodeConfig.length_alpha  # from decoding.json when the folder has one
    members: list["Checkpoint"] = field(default_factory=list)  # an ensemble's members
    truecase: dict[str, str] = field(default_factory=dict)  # written forms of lower-case tokens (German)
    rerank: str = "score"  # how the beam's captions are ordered when a DecodeConfig says "auto" (decoding.json)

    @property
    def is_ensemble(self) -> bool:
        return bool(self.members)

    @property
    def language(self):
        """The captions' Language (``languages.py``), from config.json's "lang"."""
        from .languages import language

        return language(self.config.lang)

    def write(self, tokens: str) -> str:
        """The decoder's tokens as people write them in the folder's language."""
        return self.language.write(tokens, self.truecase)

    @property
    def family(self):
        """The decoder family (``decoders.registry``) every member shares."""
        from .decoders import family

        return family(self.config.decoder)

    def default_decode(self, **overrides) -> DecodeConfig:
        """Decoding settings for this folder: DecodeConfig's defaults with the tuned length exponent."""
        return DecodeConfig(**{"length_alpha": self.length_alpha, **overrides})


def save_checkpoint(model, vocab: Vocabulary, config: TrainConfig, folder: Path) -> None:
    """Write decoder, vocabulary and config; the decoder without optimizer state (a third of the size)."""
    import keras

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    inference_copy = keras.Model.from_config(model.get_config())  # same layers and names, not compiled
    inference_copy.set_weights(model.get_weights())
    tmp = folder / f".{DECODER_FILE}.tmp.keras"
    inference_copy.save(tmp)
    if config.storage == "float16":
        _weights_to_float16(tmp)
    tmp.replace(folder / DECODER_FILE)
    vocab.save(folder / VOCAB_FILE)
    write_config(folder, config)


def store_float16(folder: Path) -> int:
    """Rewrite a single folder's decoder.keras with float16 weights (half the bytes; Keras casts them back
    to float32 variables on load) and record ``storage: float16`` in its config. -> bytes saved."""
    folder = Path(folder)
    config = read_config(folder)
    before = (folder / DECODER_FILE).stat().st_size
    tmp = folder / f".{DECODER_FILE}.tmp.keras"
    tmp.write_bytes((folder / DECODER_FILE).read_bytes())
    _weights_to_float16(tmp)
    tmp.replace(folder / DECODER_FILE)
    config.storage = "float16"
    write_config(folder, config)
    return before - (folder / DECODER_FILE).stat().st_size


def _weights_to_float16(path: Path) -> None:
    """Cast every float32 array in a .keras file's ``model.weights.h5`` to float16, in place."""
    import io
    import zipfile

    import h5py
    import numpy as np

    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    buf = io.BytesIO()
    with h5py.File(io.BytesIO(members[KERAS_WEIGHTS_ENTRY]), "r") as src, h5py.File(buf, "w") as dst:
        dst.attrs.update(src.attrs)

        def copy(name, obj):
            if isinstance(obj, h5py.Group):
                dst.require_group(name).attrs.update(obj.attrs)
                return
            data = obj[()]
            if getattr(data, "dtype", None) == np.float32:
                data = data.astype(np.float16)
            dst.create_dataset(name, data=data).attrs.update(obj.attrs)

        src.visititems(copy)
    members[KERAS_WEIGHTS_ENTRY] = buf.getvalue()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


@dataclass(frozen=True)
class SavedLayer:
    """One layer of a saved decoder: its Keras class, its settings and its weights."""

    class_name: str  # "Dense", "LSTM", ...
    config: dict  # the layer's config as decoder.keras's config.json stores it
    weights: list  # NumPy arrays in Keras order (Dense: kernel, bias; LSTM/GRU: kernel, recurrent kernel, bias)


def read_decoder_layers(folder: str | Path) -> dict[str, SavedLayer]:
    """Layer name ("image_dense", "rnn", ...) -> SavedLayer of a single folder's decoder.keras, read with
    zipfile, json and h5py only (no TensorFlow, no Keras); floating-point weights as float32 (float16
    storage widened back). Layers without variables have ``weights == []``.

    The one place that knows the file's layout: a zip of config.json (the layer graph) and
    model.weights.h5, where each layer's variables sit in a group ``layers/<key>/vars/0, 1, ...`` (an
    RNN's under its child ``cell``) whose ``name`` attribute is the layer's own name."""
    import io
    import zipfile

    import h5py
    import numpy as np

    path = Path(folder) / DECODER_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read(KERAS_CONFIG_ENTRY))
            weights_bytes = archive.read(KERAS_WEIGHTS_ENTRY)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{path}: not a readable .keras file ({type(err).__name__}: {err})") from err
    layer_list = (config.get("config") or {}).get("layers") if isinstance(config, dict) else None
    if not isinstance(layer_list, list):
        raise CheckpointError(f"{path}: not a functional Keras model (its config.json lists no layers)")

    def arrays(group) -> list:
        """A saved object's own ``vars/0, 1, ...`` in order, then its children's (an RNN layer's cell)."""
        found = []
        if "vars" in group:
            for key in sorted(group["vars"], key=int):
                data = np.asarray(group["vars"][key][()])
                found.append(data.astype(np.float32) if np.issubdtype(data.dtype, np.floating) else data)
        for key in sorted(group):
            if key != "vars" and isinstance(group[key], h5py.Group):
                found += arrays(group[key])
        return found

    by_name: dict[str, list] = {}
    try:
        with h5py.File(io.BytesIO(weights_bytes), "r") as store:
            for key, group in (store["layers"].items() if "layers" in store else ()):
                name = group["vars"].attrs.get("name") if "vars" in group else None
                found = arrays(group)
                if found and name is None:
                    raise CheckpointError(f"{path}: the weights of {key!r} carry no layer name; load the model "
                                          "with Keras and save it again with the version in requirements.txt")
                by_name[name.decode() if isinstance(name, bytes) else str(name)] = found
    except OSError as err:
        raise CheckpointError(f"{path}: unreadable weights ({err})") from err
    try:
        return {layer["config"]["name"]: SavedLayer(layer["class_name"], layer["config"],
                                                    by_name.get(layer["config"]["name"], []))
                for layer in layer_list}
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: config.json has a layer without a class or name ({err!r})") from err


def load_checkpoint(folder: str | Path | None = None, keras: bool = True) -> Checkpoint:
    """Load and cross-check a model folder (default: the default model), single or ensemble.

    ``keras=False`` reads everything but the Keras decoder (``model`` stays None): for serving on
    ``decoders/portable.py``'s steppers, which read the weights through ``read_decoder_layers``, with no
    TensorFlow."""
    folder = Path(folder) if folder else default_model_dir()
    if is_ensemble_folder(folder):
        return _load_ensemble(folder, keras)
    return _load_single(folder, keras)


def _load_single(folder: Path, keras: bool = True) -> Checkpoint:
    fix = ("train one with `python -m captioner train --out DIR`, or pass --model with a folder "
           f"holding {DECODER_FILE}, {VOCAB_FILE} and {CONFIG_FILE}")
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: model folder not found; {fix}")
    for name in (DECODER_FILE, VOCAB_FILE, CONFIG_FILE):
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder / name}: missing; {fix}")
    config = read_config(folder)
    try:
        vocab = Vocabulary.load(folder / VOCAB_FILE)
    except VocabError as err:
        raise CheckpointError(str(err)) from err
    if not keras:
        return Checkpoint(None, vocab, config, folder, read_length_alpha(folder), truecase=read_truecase(folder),
                          rerank=read_rerank(folder))
    import keras as keras_module

    from .decoders import family

    family(config.decoder).import_module()  # registers the family's custom layers for safe-mode loading
    try:
        model = keras_module.models.load_model(folder / DECODER_FILE, compile=False, safe_mode=True)
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
    return Checkpoint(model, vocab, config, folder, read_length_alpha(folder), truecase=read_truecase(folder),
                      rerank=read_rerank(folder))


def _load_ensemble(folder: Path, keras: bool = True) -> Checkpoint:
    """Load every member; they must share the vocabulary and the kind of image features."""
    members = []
    for member in ensemble_members(folder):
        if is_ensemble_folder(member):
            raise CheckpointError(f"{folder / ENSEMBLE_FILE}: member {member} is itself an ensemble")
        try:
            members.append(_load_single(member, keras))
        except CheckpointError as err:
            raise CheckpointError(f"{folder / ENSEMBLE_FILE}: member {member.name} cannot be loaded: {err}") from err
    first = members[0]
    for other in members[1:]:
        if other.vocab != first.vocab:
            raise CheckpointError(f"{folder}: members {first.folder.name} and {other.folder.name} have different "
                                  "vocabularies; an ensemble votes word by word, so they must share one")
        if other.config.lang != first.config.lang:
            raise CheckpointError(f"{folder}: members {first.folder.name} ({first.config.lang}) and "
                                  f"{other.folder.name} ({other.config.lang}) caption in different languages")
        if other.family.feature_kind != first.family.feature_kind:
            raise CheckpointError(f"{folder}: members mix {first.config.decoder} and {other.config.decoder} "
                                  "decoders, which read different image features")
    return Checkpoint(first.model, first.vocab, first.config, folder, read_length_alpha(folder), members,
                      truecase=first.truecase, rerank=read_rerank(folder))


def model_language(folder: Path) -> str:
    """The caption language of a model folder (an ensemble's: its first member's), from JSON alone;
    "en" for folders written before languages were recorded."""
    folder = Path(folder)
    try:
        if is_ensemble_folder(folder):
            folder = ensemble_members(folder)[0]
        return str(_read_json(folder / CONFIG_FILE, "config").get("lang", "en"))
    except (CheckpointError, OSError, ValueError, IndexError, AttributeError):
        return "en"


def models_by_language(root: Path | None = None) -> dict[str, list[Path]]:
    """Caption language -> its model folders (the language's default first), languages in the order of
    ``languages.LANGUAGES`` (English first)."""
    from .languages import LANGUAGES

    found: dict[str, list[Path]] = {}
    for folder in available_models(root):
        found.setdefault(model_language(folder), []).append(folder)
    ordered = {}
    for code in [c for c in LANGUAGES if c in found] + [c for c in found if c not in LANGUAGES]:
        default = default_model_name(code) if code in LANGUAGES else ""
        ordered[code] = sorted(found[code], key=lambda f: (f.name != default, f.name))
    return ordered


def describe_model(folder: Path) -> str:
    """A short label for a model folder, from its JSON files alone (no Keras): for pickers and logs."""
    from .decoders import family

    folder = Path(folder)
    try:
        if is_ensemble_folder(folder):
            text = f"{folder.name}: ensemble of {' + '.join(m.name for m in ensemble_members(folder))}"
        else:
            cfg = _read_json(folder / CONFIG_FILE, "config")
            text = f"{folder.name}: {family(cfg.get('decoder', 'merge')).describe(cfg)}"
    except (CheckpointError, OSError, ValueError, KeyError, TypeError, AttributeError):
        text = folder.name  # a broken folder still gets listed; loading it reports the problem
    return text + (" (default)" if folder.name == DEFAULT_MODEL_NAME else "")
