"""Training-image augmentation: one fixed augmented copy per training image, whose features are cached.

The decoder trains on cached features, so augmentation cannot be a fresh random transform per epoch;
instead each training image gets one augmented copy (mirrored with probability 1/2, cropped to
70-100% of its area, brightness x0.7-1.3), chosen from a seed and the image's name so that the cache
key and the training captions always agree. Training then shows each caption with the original or the
augmented features at random (``TrainConfig.augment``). The copy goes through the same
``preprocess_image`` as every other image. Only training images are augmented, after the split.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

AUGMENT_VERSION = "aug1"  # part of the cache key: change it when the transform changes
MIRROR_WORDS = {"left": "right", "right": "left"}  # a mirrored photo swaps the sides its captions name


@dataclass(frozen=True)
class Augmentation:
    """One image's transform: mirror?, crop box as fractions (left, top, right, bottom), brightness factor."""

    mirror: bool
    crop: tuple[float, float, float, float]
    brightness: float

    @property
    def tag(self) -> str:
        return f"{AUGMENT_VERSION}:{int(self.mirror)}:{','.join(f'{c:.4f}' for c in self.crop)}:{self.brightness:.4f}"


def augmentation_for(name: str, seed: int) -> Augmentation:
    """The augmentation of image ``name`` under ``seed`` (the same on every run and machine)."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    area = rng.uniform(0.7, 1.0)
    aspect = rng.uniform(0.85, 1.0 / 0.85)
    width = min(1.0, float(np.sqrt(area * aspect)))
    height = min(1.0, float(np.sqrt(area / aspect)))
    left, top = rng.uniform(0.0, 1.0 - width), rng.uniform(0.0, 1.0 - height)
    return Augmentation(mirror=bool(rng.random() < 0.5), crop=(left, top, left + width, top + height),
                        brightness=float(rng.uniform(0.7, 1.3)))


def apply_augmentation(img: Image.Image, aug: Augmentation) -> Image.Image:
    """Crop, mirror and re-light ``img`` (RGB); resizing is left to ``preprocess_image``."""
    w, h = img.size
    left, top, right, bottom = aug.crop
    box = (round(left * w), round(top * h), max(round(left * w) + 1, round(right * w)),
           max(round(top * h) + 1, round(bottom * h)))
    out = img.crop(box)
    if aug.mirror:
        out = ImageOps.mirror(out)
    return ImageEnhance.Brightness(out).enhance(aug.brightness)


def mirror_caption(caption: str) -> str:
    """``"a dog on the left"`` -> ``"a dog on the right"``: what the caption of a mirrored photo says."""
    return " ".join(MIRROR_WORDS.get(w, w) for w in caption.split())


def augmented_key(content_key: str, aug: Augmentation) -> str:
    """Feature-cache key of an augmented copy: the image's bytes plus the exact transform."""
    return hashlib.sha1(f"{content_key}|{aug.tag}".encode()).hexdigest()


def load_augmented(path: Path, aug: Augmentation) -> np.ndarray:
    """(299, 299, 3) float32 pixels of the augmented copy, through the shared preprocessing."""
    from ..serving.images import load_image, preprocess_image

    return preprocess_image(apply_augmentation(load_image(path).convert("RGB"), aug))
