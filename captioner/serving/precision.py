"""Which encoder precision runs by default (``--precision auto``): the fastest one this CPU supports that
keeps the captions, found by a short self-check on first use per CPU and model, and cached.

Candidates (``candidates``):

* **float32** always; it is the reference every other candidate is compared with.
* **bfloat16** (the float32 IR compiled with OpenVINO's bf16 hint) only where OpenVINO reports bf16
  support and the CPU has AMX-BF16 or AVX512-BF16. With AMX it is about 4x faster; with AVX512-BF16 alone
  it can be slower, which the timing finds out.
* **int8** (the IR ``python -m captioner quantize`` builds) only where the CPU has VNNI (AVX512-VNNI,
  AVX-VNNI) or AMX-INT8, the int8 IR is already built (building it needs nncf and training images, so
  ordinary installs never build it), and the model folder's ``precision.json`` says int8 kept the
  model's quality on dev (``experiments/precision_auto.py``: BLEU-4, CIDEr-D, confidence ECE and
  out-of-domain flag rates within ``INT8_RULE``).

The self-check encodes ``CHECK_IMAGES`` (the repository's familiar sample photos; neither training nor
dev images, since Flickr8k may not be redistributed) with each candidate, times it, and compares its
features (cosine) and captions with float32's. ``choose`` then keeps the fastest acceptable candidate:
bfloat16 when every check image's features stay within ``BF16_COSINE`` and its captions are the same,
int8 when the features stay within ``INT8_COSINE`` (its captions may differ: its quality rule was
measured on dev instead), and either only when it is at least ``MIN_SPEEDUP`` faster than float32
(under that the gain is within timing noise). The result is cached as JSON under
``weights.cache_dir()/precision``, keyed by the CPU (model name, arch, relevant flags), the OpenVINO
version, the model folder's digest and the weights' and int8 IR's digests: another CPU, model or IR
means another check. ``python -m captioner info`` prints what was chosen and why.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

BF16_COSINE = 0.999  # bfloat16 measured 0.99982 on an AMX Xeon; below this it is not the same encoder
INT8_COSINE = 0.97  # int8's min over the check images; dev mean 0.994, so lower means a broken IR
MIN_SPEEDUP = 1.15  # a candidate must be this much faster than float32 to be worth changing features for
TIMING_PASSES = 5  # timed passes over the check images (the median image time of the fastest pass counts)
INT8_RULE = {"bleu4": 0.005, "cider": 0.01, "ece": 0.01, "flag_rate_points": 1.0}
CHECK_IMAGES = ("dog-field.jpg", "cameraman.jpg", "astronaut.jpg")
PRECISION_FILE = "precision.json"  # in a model folder: which precisions kept its quality on dev
# CPU flags that decide which candidates exist (x86 /proc/cpuinfo names)
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")
IDENTITY_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8", "amx_tile")


@dataclass
class Trial:
    """One candidate's self-check: median ms per image, min feature cosine against float32, whether its
    captions equal float32's on every check image; ``error`` when it could not run at all."""

    ms: float | None = None
    cosine: float | None = None
    same_captions: bool | None = None
    error: str = ""


@dataclass
class Choice:
    """What ``choose`` decided: the precision, one sentence why, and each candidate's verdict."""

    precision: str
    reason: str
    verdicts: dict[str, str] = field(default_factory=dict)


def choose(candidates: dict[str, str], trials: dict[str, Trial]) -> Choice:
    """The fastest acceptable candidate (pure: no timing, no I/O).

    ``candidates``: precision -> "" when this CPU and model allow it, else why not (never tried);
    ``trials``: precision -> its Trial (float32's is the reference; a missing trial counts as failed).
    float32 wins whenever no other candidate is acceptable and clearly faster."""
    verdicts: dict[str, str] = {}
    base = trials.get("float32")
    if base is None or base.error or not base.ms:
        return Choice("float32", "float32: the reference could not be timed"
                      + (f" ({base.error})" if base and base.error else ""), {"float32": "reference"})
    verdicts["float32"] = f"reference, {base.ms:.1f} ms per image"
    best, best_ms = "float32", base.ms
    for name, why_not in candidates.items():
        if name == "float32":
            continue
        trial = trials.get(name)
        if why_not:
            verdicts[name] = f"not a candidate: {why_not}"
            continue
        if trial is None or trial.error or not trial.ms:
            verdicts[name] = f"failed: {trial.error if trial else 'not tried'}"
            continue
        speed = base.ms / trial.ms
        timing = f"{trial.ms:.1f} ms per image ({speed:.2f}x float32)"
        bound = BF16_COSINE if name == "bfloat16" else INT8_COSINE
        if trial.cosine is None or not np.isfinite(trial.cosine) or trial.cosine < bound:
            verdicts[name] = f"refused: features drift from float32 (cosine {trial.cosine} < {bound}); {timing}"
        elif name != "int8" and not trial.same_captions:
            verdicts[name] = f"refused: captions differ from float32 on the check images; {timing}"
        elif speed < MIN_SPEEDUP:
            verdicts[name] = f"refused: not clearly faster (under {MIN_SPEEDUP}x); {timing}"
        else:
            verdicts[name] = f"acceptable: {timing}, cosine {trial.cosine:.5f}"
            if trial.ms < best_ms:
                best, best_ms = name, trial.ms
    if best == "float32":
        reason = "float32: no other precision is both faster here and close enough to it"
    else:
        reason = f"{best}: {base.ms / best_ms:.2f}x faster than float32 here, {verdicts[best].split(': ', 1)[1]}"
    return Choice(best, reason, verdicts)


# ----------------------------------------------------------------------------------- CPU and model

def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The first processor's flags in /proc/cpuinfo (all of them; ``machine.describe_machine`` keeps only
    the ones that matter for TensorFlow)."""
    if cpuinfo is None:
        from ..machine import CPUINFO

        try:
            cpuinfo = CPUINFO.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            return set(value.split())
    return set()


def cpu_identity(cpuinfo: str | None = None) -> dict:
    """The CPU as the cache key sees it: model name, architecture and the flags that decide candidates."""
    from ..machine import describe_machine

    machine = describe_machine(cpuinfo)
    flags = cpu_flags(cpuinfo)
    return {"cpu": machine["cpu"], "arch": machine["arch"], "flags": sorted(f for f in IDENTITY_FLAGS if f in flags)}


def model_digest(folder: str | Path) -> str:
    """sha256 over a model folder's files and its ensemble members' (so a retrained model is rechecked)."""
    folder = Path(folder)
    folders = [folder]
    ensemble = folder / "ensemble.json"
    if ensemble.is_file():
        try:
            folders += [(folder / m).resolve() for m in json.loads(ensemble.read_text())["members"]]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # the loader reports a bad ensemble.json; the digest just covers less
    h = hashlib.sha256()
    for f in folders:
        for path in sorted(p for p in f.glob("*") if p.is_file() and p.suffix in (".keras", ".json", ".txt")):
            h.update(f"{path.name}\0{path.stat().st_size}\0".encode())
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def int8_allowed(folder: str | Path) -> str:
    """"" when the model folder's precision.json says int8 kept its quality on dev, else why not."""
    path = Path(folder) / PRECISION_FILE
    try:
        verdict = json.loads(path.read_text(encoding="utf-8")).get("int8", {})
    except FileNotFoundError:
        return "its quality on dev was never measured for this model"
    except (OSError, ValueError, AttributeError) as err:
        return f"{path} is unreadable ({type(err).__name__})"
    if verdict.get("auto") is True:
        return ""
    return f"on dev it missed the quality rule ({verdict.get('why', 'see ' + str(path))})"


def candidates(folder: str | Path, weights_digest: str, flags: set[str] | None = None,
               ov_capabilities: list[str] | None = None) -> dict[str, str]:
    """precision -> "" when this CPU and model can try it, else why not."""
    from .openvino_encoder import _check_ir, import_openvino, int8_ir_path

    flags = cpu_flags() if flags is None else flags
    out = {"float32": ""}
    if ov_capabilities is None:
        try:
            ov_capabilities = list(import_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        except Exception:  # noqa: BLE001 - no OpenVINO, or a CPU plugin that does not say
            ov_capabilities = []
    if "BF16" not in ov_capabilities:
        out["bfloat16"] = "OpenVINO reports no bfloat16 support on this CPU"
    elif not flags & set(BF16_FLAGS):
        out["bfloat16"] = "the CPU has neither AMX-BF16 nor AVX512-BF16"
    else:
        out["bfloat16"] = ""
    if not flags & set(INT8_FLAGS):
        out["int8"] = "the CPU has neither VNNI nor AMX-INT8"
    else:
        why = int8_allowed(folder)
        if not why:
            try:
                xml = int8_ir_path(weights_digest, import_openvino().__version__)
                problem = _check_ir(xml, weights_digest)
            except Exception as err:  # noqa: BLE001
                problem = f"{type(err).__name__}: {err}"
            if problem is not None:
                why = ("the int8 encoder is not built (`python -m captioner quantize --data DIR` builds it; "
                       "needs nncf and Flickr8k training images)" if problem == "" else f"the int8 IR is unusable ({problem})")
        out["int8"] = why
    return out


def identity(folder: str | Path, weights_digest: str) -> dict:
    """Everything the cached choice depends on."""
    from .openvino_encoder import import_openvino, int8_ir_path, openvino_version

    version = openvino_version()
    int8 = ""
    if version:
        sidecar = int8_ir_path(weights_digest, import_openvino().__version__).with_suffix(".sha256.json")
        try:
            int8 = json.loads(sidecar.read_text()).get("bin_sha256", "")
        except (OSError, ValueError):
            int8 = ""
    return {**cpu_identity(), "openvino": version, "model": Path(folder).name, "model_sha256": model_digest(folder),
            "weights_sha256": weights_digest, "int8_ir_sha256": int8}


def cache_folder() -> Path:
    """Where self-check results are cached (``weights.cache_dir()/precision``)."""
    from .weights import cache_dir

    return cache_dir() / "precision"


def cache_path(ident: dict) -> Path:
    """The cached choice for this identity (one file per CPU + model + versions)."""
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    return cache_folder() / f"{ident.get('model', 'model')}-{key}.json"


def read_cached(ident: dict) -> dict | None:
    """The cached self-check for exactly this identity, else None."""
    try:
        record = json.loads(cache_path(ident).read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("identity") == ident and record.get("precision") else None


def write_cached(ident: dict, record: dict) -> None:
    """Save the self-check result atomically (a failed write only means checking again next time)."""
    path = cache_path(ident)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**record, "identity": ident}, indent=1) + "\n")
        tmp.replace(path)
    except OSError as err:
        logger.warning("captioner: could not cache the precision self-check at %s (%s)", path, err)


# ------------------------------------------------------------------------------------ the self-check

def check_pixels() -> np.ndarray:
    """The self-check's images, preprocessed: the familiar sample photos when the checkout has them, else
    three fixed smooth synthetic pictures (enough for the cosine and timing; captions compared all the same)."""
    from ..config import IMAGE_SIZE
    from .images import load_image, preprocess_image

    assets = Path(__file__).resolve().parents[2] / "assets"
    found = [assets / n for n in CHECK_IMAGES if (assets / n).is_file()]
    if found:
        return np.stack([preprocess_image(load_image(p)) for p in found]).astype(np.float32)
    rng = np.random.default_rng(0)
    grid = np.linspace(-1, 1, IMAGE_SIZE, dtype=np.float32)
    out = []
    for _ in range(3):
        a, b, c = rng.uniform(1, 4, 3)
        img = np.stack([np.sin(a * grid[:, None] + b * grid[None, :] + k * c) for k in range(3)], -1)
        out.append(img.astype(np.float32))
    return np.stack(out)


def time_per_image(runs: dict, pixels: np.ndarray, passes: int = TIMING_PASSES) -> dict[str, float]:
    """ms per image of each ``runs[name](batch)``: batch-1 runs over ``pixels``, the candidates taking turns
    pass by pass (so load from other work on a shared machine falls on all of them alike); each one's
    figure is the fastest pass's median image (the least disturbed)."""
    for run in runs.values():
        run(pixels[:1])  # warm: the first inference allocates
    best = {name: float("inf") for name in runs}
    for _ in range(passes):
        for name, run in runs.items():
            each = []
            for i in range(len(pixels)):
                start = time.perf_counter()
                run(pixels[i:i + 1])
                each.append(1000 * (time.perf_counter() - start))
            best[name] = min(best[name], float(np.median(each)))
    return best


def self_check(captioner, cands: dict[str, str], pixels: np.ndarray | None = None) -> dict[str, Trial]:
    """Time and compare every allowed candidate against float32 on the check images, with the loaded
    float32 ``captioner``'s decoders. A candidate that fails gets its error (logged once) instead."""
    from .encoder import feature_cosines
    from .openvino_encoder import OpenVINOXception

    pixels = check_pixels() if pixels is None else pixels
    spatial = captioner.feature_kind == "spatial"
    encoder = captioner.encoder
    decode = captioner.default_decode()

    def captions_of(features):
        return [c[0].tokens for c in captioner.caption_features(features, decode)]

    ref = encoder._openvino.run(pixels, spatial)
    ref_captions = captions_of(ref)
    trials = {"float32": Trial(cosine=1.0, same_captions=True)}
    runs = {"float32": lambda x: encoder._openvino.run(x, spatial)}
    for name, why_not in cands.items():
        if name == "float32" or why_not:
            continue
        try:
            model = OpenVINOXception(encoder._float32_keras, encoder.weights_digest, precision=name)
            feats = model.run(pixels, spatial)
            cosine = float(np.min(feature_cosines(ref.astype(np.float64), feats.astype(np.float64))))
            trials[name] = Trial(cosine=cosine, same_captions=captions_of(feats) == ref_captions)
            runs[name] = lambda x, model=model: model.run(x, spatial)
        except Exception as err:  # noqa: BLE001 - any failure of a candidate means float32 keeps running
            trials[name] = Trial(error=f"{type(err).__name__}: {err}")
            logger.warning("captioner: precision %s failed its self-check (%s: %s); not used",
                           name, type(err).__name__, err)
    for name, ms in time_per_image(runs, pixels).items():
        trials[name].ms = round(ms, 2)
    return trials


def auto_precision(load_at, folder: str | Path, weights, allow_download: bool, backend: str | None):
    """(precision, note, captioner or None) for ``--precision auto``: the cached choice for this CPU and
    model, else a fresh self-check (cached). ``load_at(precision)`` loads a Captioner; when the check
    loaded the float32 one and float32 wins, it is returned so it is not loaded twice."""
    from .encoder import resolve_backend
    from .weights import ensure_weights

    if resolve_backend(backend) == "tensorflow":
        return "float32", "auto: float32, because the encoder runs on TensorFlow", None
    _, digest = ensure_weights(weights, allow_download=allow_download)
    ident = identity(folder, digest)
    cached = read_cached(ident)
    if cached:
        return cached["precision"], f"auto (cached self-check {cached.get('checked', '')}): {cached['reason']}", None
    captioner = load_at("float32")
    if captioner.encoder.backend != "openvino":
        return "float32", f"auto: float32, because {captioner.encoder.backend_note}", captioner
    start = time.perf_counter()
    cands = candidates(folder, digest)
    trials = self_check(captioner, cands)
    choice = choose(cands, trials)
    seconds = time.perf_counter() - start
    write_cached(ident, {"precision": choice.precision, "reason": choice.reason, "verdicts": choice.verdicts,
                         "trials": {k: vars(v) for k, v in trials.items()}, "check_seconds": round(seconds, 1),
                         "checked": time.strftime("%Y-%m-%d", time.gmtime())})
    logger.info("captioner: precision self-check (%.1f s) chose %s", seconds, choice.reason)
    note = f"auto (self-check just now): {choice.reason}"
    return choice.precision, note, captioner if choice.precision == "float32" else None


def describe(record: dict | None) -> list[str]:
    """Lines for ``info``: each candidate's verdict from a cached self-check."""
    if not record:
        return []
    return [f"{k}: {v}" for k, v in (record.get("verdicts") or {}).items()]


def load_auto(load, folder: str | Path, weights, allow_download: bool, backend: str | None, lang: str | None):
    """``Captioner.load`` at the precision ``auto_precision`` picks; a chosen precision that fails to load
    falls back to float32 with one log line. The encoder's ``precision_note`` says what was chosen and why."""

    def load_at(precision):
        return load(folder, weights, allow_download=allow_download, backend=backend, lang=lang, precision=precision)

    precision, note, captioner = auto_precision(load_at, folder, weights, allow_download, backend)
    if captioner is None and precision != "float32":
        try:
            captioner = load_at(precision)
        except Exception as err:  # noqa: BLE001 - OpenVINOUnavailable, a compile error: float32 still works
            logger.warning("captioner: precision %s failed to load (%s: %s); using float32",
                           precision, type(err).__name__, err)
            note = f"auto: float32, because {precision} failed to load ({type(err).__name__})"
            captioner = None
    if captioner is None:
        captioner = load_at("float32")
    captioner.encoder.precision_note = note
    return captioner


def precision_summary(folder: str | Path, weights_digest: str) -> str:
    """Each candidate's verdict from the cached self-check for this CPU and model ("" when none), for info."""
    try:
        return "; ".join(describe(read_cached(identity(folder, weights_digest))))
    except Exception:  # noqa: BLE001 - info must print whatever else it knows
        return ""
