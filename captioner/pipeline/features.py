"""The on-disk feature cache: one small ``.npy`` per image, keyed by the image's bytes and the
encoder weights' digest, so an interrupted extraction resumes where it stopped and a changed
image or encoder never reuses stale features."""
from __future__ import annotations

import hashlib
import os
import queue
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..config import FEATURE_DIM, GRID_SIZE
from ..serving.images import ImageError, load_and_preprocess
from ..serving.weights import cache_dir


def content_key(path: Path) -> str:
    """sha1 of a file's bytes: identifies the picture, whatever its name or folder."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


@dataclass
class FeatureCache:
    """Feature files under ``root/<encoder cache key>/<kind>/`` (the key is the weights digest, plus the
    precision when it is not float32). ``kind`` is "pooled" ((2048,) float32, 8 KB per image) or
    "spatial" ((10, 10, 2048) float16, 400 KB per image: half the disk and memory of float32; its
    ~3 significant digits are ample for inputs to learned projections)."""

    encoder_key: str
    root: Path = field(default_factory=lambda: cache_dir() / "features")
    kind: str = "pooled"

    def __post_init__(self) -> None:
        if self.kind not in ("pooled", "spatial"):
            raise ValueError(f"feature kind must be 'pooled' or 'spatial', not {self.kind!r}")

    @property
    def dtype(self):
        return np.float16 if self.kind == "spatial" else np.float32

    @property
    def folder(self) -> Path:
        return Path(self.root) / self.encoder_key / self.kind

    def path_for(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        """The cached (2048,) feature, or None if absent or unreadable (then it is recomputed)."""
        path = self.path_for(key)
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None

    def put(self, key: str, feature: np.ndarray) -> None:
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, feature.astype(self.dtype), allow_pickle=False)
        tmp.replace(path)  # atomic: a killed run never leaves a half-written feature


@dataclass
class ExtractionResult:
    """Features for the images that could be read, in input order, plus what failed and why."""

    names: list[str]
    features: np.ndarray  # (N, 2048) float32, or (N, 10, 10, 2048) float16 for spatial features
    errors: dict[str, str]


def extract_features(encoder, paths: Sequence[Path], cache: FeatureCache | None = None,
                     batch_size: int = 32, progress: bool = True, kind: str = "pooled",
                     augment_seed: int | None = None) -> ExtractionResult:
    """Encode ``paths`` (cached ones are read back), batched, with a progress bar.

    ``kind`` "spatial" gives region features for attention decoders. With ``augment_seed``, each
    image's augmented training copy is encoded instead (see ``augment.py``; pooled only). Unreadable
    images are recorded in ``errors`` and skipped, never fatal.
    """
    from tqdm import tqdm

    from .augment import augmentation_for, augmented_key, load_augmented

    if augment_seed is not None and kind != "pooled":
        raise ValueError("augmented copies are cached as pooled features only")

    cache = cache or FeatureCache(encoder.cache_key, kind=kind)
    spatial = cache.kind == "spatial"
    pooled_cache = FeatureCache(cache.encoder_key, cache.root, "pooled") if spatial else None
    paths = [Path(p) for p in paths]
    keys: dict[Path, str] = {}
    found: dict[Path, np.ndarray] = {}
    errors: dict[str, str] = {}
    for p in paths:
        try:
            keys[p] = content_key(p)
            if augment_seed is not None:
                keys[p] = augmented_key(keys[p], augmentation_for(p.name, augment_seed))
        except OSError as err:
            errors[p.name] = f"{p}: cannot read file ({err.strerror or err})"
            continue
        cached = cache.get(keys[p])
        if cached is not None:
            found[p] = cached
    todo = [p for p in keys if p not in found]

    # A loader thread decodes and resizes images while the encoder runs (PIL releases the GIL).
    batches: queue.Queue = queue.Queue(maxsize=3)

    def load_batches() -> None:
        for start in range(0, len(todo), batch_size):
            chunk, pixels, attempted = [], [], todo[start:start + batch_size]
            for p in attempted:
                try:
                    pixels.append(load_and_preprocess(p) if augment_seed is None else
                                  load_augmented(p, augmentation_for(p.name, augment_seed)))
                    chunk.append(p)
                except ImageError as err:
                    errors[p.name] = str(err)
            batches.put((chunk, pixels, len(attempted)))
        batches.put(None)

    threading.Thread(target=load_batches, daemon=True).start()
    bar = tqdm(total=len(todo), desc="encoding images", unit="img", disable=not progress or not todo,
               file=sys.stderr)
    while (item := batches.get()) is not None:
        chunk, pixels, attempted = item
        if chunk:
            feats = encoder.encode(np.stack(pixels), batch_size=batch_size, spatial=spatial)
            if spatial:  # the pooled vector comes free with the grid: fill that cache too
                for p, f in zip(chunk, feats):
                    if pooled_cache.get(keys[p]) is None:
                        pooled_cache.put(keys[p], f.mean(axis=(0, 1)))
                feats = feats.astype(np.float16)
            for p, f in zip(chunk, feats):
                cache.put(keys[p], f)
                found[p] = f
        bar.update(attempted)
    bar.close()
    ok = [p for p in paths if p in found]
    if ok:
        feats = np.stack([found[p] for p in ok]).astype(cache.dtype)
    else:
        feats = np.zeros((0, GRID_SIZE, GRID_SIZE, FEATURE_DIM) if spatial else (0, FEATURE_DIM), cache.dtype)
    return ExtractionResult([p.name for p in ok], feats, errors)
