"""Is the photo itself the problem? Fast checks for blur (out of focus, shaken), darkness and glare.

    >>> from PIL import Image
    >>> check_photo(Image.new("RGB", (640, 480), (3, 3, 3))).problems
    ['dark']

Every picture is measured on a greyscale copy squashed to ``SIDE`` x ``SIDE`` pixels (the Flickr8k photos
the model learned from were squashed to 224x224 the same way), so a threshold means the same for a
224-pixel training photo and a 12-megapixel phone shot: blur is measured relative to the picture's size.

* **blurry**: the no-reference blur measure of Crété et al. (2007, "The blur effect: perception and
  estimation with a new no-reference perceptual blur metric"): blur the copy again along one direction
  and see how much of its pixel-to-pixel variation survives; a sharp photo loses much, a blurred one
  little. Taken along four directions (horizontal, vertical, both diagonals) and the largest kept, so a
  shake in any one direction is caught. Contrast-free (a ratio), so a dim photo is not "blurry" for
  being dim; a nearly flat picture (a wall, fog, a black frame) has too little detail to judge.
* **dark**: the bright end of the picture (``DARK_BRIGHT_END`` percentile) is still dark. A night scene
  with street lights or a person in dark clothes has bright parts somewhere and is not flagged.
* **bright**: blown out or washed out by glare: a large share of the picture is clipped white and its
  median is light (a blown-out sky over a darker field is not enough), or its
  dark end (``BRIGHT_DARK_END`` percentile) is already light while its bright end is near white (a light
  veil over everything; an evenly mid-grey wall is not flagged). Snow with people or trees keeps dark
  parts and is usually not flagged; snow and beaches in hard sunlight are the usual false alarms.

A picture crisper than any camera photo (``Thresholds.rendered_blur``: a rendered page, chart or
screenshot, whose white is paper and not glare) is not judged at all.

All thresholds are in ``THRESHOLDS`` (a frozen dataclass), chosen on held-out training photos and
degraded copies of them (``experiments/photo_quality.py``; ``docs/PHOTO-QUALITY.md`` gives the figures).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np
from PIL import Image

SIDE = 224  # the greyscale copy every check reads (the training photos' own size)
PROBLEMS = ("blurry", "dark", "bright")  # in the order they are reported and advised on


@dataclass(frozen=True)
class Thresholds:
    """Where each check draws the line, chosen on the 300 held-out training photos
    (models/merge-ensemble/tune_images.txt) and degraded copies of them; docs/PHOTO-QUALITY.md says how."""

    blur: float = 0.55  # Crété blur measure at or above which a photo is blurry (clean training photos: 99% < 0.49)
    blur_min_contrast: float = 8.0  # luminance standard deviation (0-255) under which blur is not judged (flat)
    dark_bright_end: float = 95.0  # brightest 2% still below this (0-255): dark (clean training photos: >= 106)
    bright_dark_end: float = 110.0  # darkest 5% already at or above this (0-255): washed out (clean: 99% < 103)
    bright_bright_end: float = 200.0  # ... while its brightest 2% reach this (a light veil, not a grey wall)
    bright_clipped: float = 0.15  # share of clipped-white pixels at or above which, ...
    bright_middle: float = 170.0  # ... with a median this light (0-255), it is blown out (a white sky alone is not)
    rendered_blur: float = 0.15  # crisper than this, it is rendered (a page, chart, screenshot), not judged at all:
    # clean training photos measure >= 0.219, their degraded copies >= 0.16; its white is paper, not glare


THRESHOLDS = Thresholds()
DARK_BRIGHT_END = 98  # percentile: "the brightest 2% of the picture"
BRIGHT_DARK_END = 5  # percentile: "the darkest 5% of the picture"
CLIPPED = 250  # luminance at or above which a pixel counts as clipped white
BLUR_SPAN = 9  # pixels of the re-blur (Crété et al. use 9 at about this size)
BAND_CAP = "medium"  # the best band a caption of a flawed photo can have (never "high")


@dataclass(frozen=True)
class PhotoQuality:
    """The measures of one photo and the problems they add up to (``PROBLEMS`` order; empty: fine)."""

    blur: float  # Crété blur measure, largest over four directions (0 sharp .. 1 featureless)
    contrast: float  # standard deviation of luminance (0-255): a flat picture has too little to judge
    bright_end: float  # DARK_BRIGHT_END percentile of luminance (0-255)
    middle: float  # median luminance (0-255)
    dark_end: float  # BRIGHT_DARK_END percentile of luminance (0-255)
    clipped: float  # share of pixels at or above CLIPPED
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        """The measures, rounded, for reports."""
        return {"blur": round(self.blur, 4), "contrast": round(self.contrast, 3), "bright_end": round(self.bright_end, 2), "middle": round(self.middle, 2),
                "dark_end": round(self.dark_end, 2), "clipped": round(self.clipped, 4), "problems": list(self.problems)}


def grey_copy(pixels: np.ndarray) -> np.ndarray:
    """The encoder's (299, 299, 3) pixels in [-1, 1] (``images.preprocess_image``, already squashed to a
    fixed size) -> a SIDE x SIDE float32 luminance array (0-255). Reading the encoder's copy costs no second
    resize of a large photo, so the checks take the same time whatever the photo's size."""
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected (height, width, 3) pixels in [-1, 1], got shape {pixels.shape}")
    luma = (pixels @ np.array([0.299, 0.587, 0.114], np.float32) + 1.0) * 127.5  # ITU-R 601, as Pillow's "L"
    if luma.shape != (SIDE, SIDE):
        luma = np.asarray(Image.fromarray(luma, "F").resize((SIDE, SIDE), Image.Resampling.BILINEAR))
    return np.clip(luma, 0.0, 255.0)


def _box(a: np.ndarray, axis: int, span: int) -> np.ndarray:
    """Moving average of ``span`` pixels along ``axis`` (edges repeated), via a cumulative sum."""
    pad = [(0, 0), (0, 0)]
    pad[axis] = (span // 2 + 1, span - 1 - span // 2)
    c = np.cumsum(np.pad(a, pad, mode="edge"), axis=axis)
    if axis == 0:
        return (c[span:] - c[:-span]) / span
    return (c[:, span:] - c[:, :-span]) / span


@lru_cache(maxsize=8)
def _shear(shape: tuple[int, int], flip: bool, span: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices that shear an image so one diagonal becomes a column (``out[r, c] = a[r, (c +/- r) mod
    w]``), and a 0/1 mask of the vertical differences whose re-blur never crosses the wrap-around seam."""
    h, w = shape
    rows = np.arange(h)[:, None]
    step = -1 if flip else 1
    index = rows * w + (np.arange(w)[None, :] + step * rows) % w
    cols, rows = np.arange(w)[None, :], rows[:-1]
    first, last = cols + step * (rows - span // 2), cols + step * (rows + 1 + span // 2)
    return index, (np.floor_divide(first, w) == np.floor_divide(last, w)).astype(np.float32)


def blur_measure(grey: np.ndarray, span: int = BLUR_SPAN) -> float:
    """Crété et al.'s blur measure of a greyscale array (0 sharp .. 1 featureless), the largest over the
    horizontal, vertical and both diagonal directions."""
    views = [(grey, 1, None), (grey, 0, None)]
    for flip in (False, True):
        index, keep = _shear(grey.shape, flip, span)
        views.append((grey.ravel()[index], 0, keep))
    worst = 0.0
    for a, axis, keep in views:
        d_sharp = np.abs(np.diff(a, axis=axis))
        lost = np.minimum(d_sharp, np.abs(np.diff(_box(a, axis, span), axis=axis)))  # what the re-blur took
        if keep is not None:
            d_sharp, lost = d_sharp * keep, lost * keep
        total = float(d_sharp.sum())
        worst = max(worst, float(lost.sum()) / total if total > 0 else 1.0)
    return worst


def measure_grey(grey: np.ndarray) -> PhotoQuality:
    """The measures of a SIDE x SIDE luminance array (``grey_copy``), problems not yet judged."""
    bright_end, middle, dark_end = (float(v) for v in np.percentile(grey, [DARK_BRIGHT_END, 50, BRIGHT_DARK_END]))
    return PhotoQuality(blur_measure(grey), float(grey.std()), bright_end, middle, dark_end,
                        float((grey >= CLIPPED).mean()))


def verdict(q: PhotoQuality, thresholds: Thresholds = THRESHOLDS) -> list[str]:
    """The problems (``PROBLEMS`` order) that the measures ``q`` add up to under ``thresholds``."""
    if q.blur < thresholds.rendered_blur:  # no camera took it: "turn on a light" would be nonsense
        return []
    problems = []
    if q.blur >= thresholds.blur and q.contrast >= thresholds.blur_min_contrast:
        problems.append("blurry")
    if q.bright_end < thresholds.dark_bright_end:
        problems.append("dark")
    washed_out = q.dark_end >= thresholds.bright_dark_end and q.bright_end >= thresholds.bright_bright_end
    blown_out = q.clipped >= thresholds.bright_clipped and q.middle >= thresholds.bright_middle
    if washed_out or blown_out:
        problems.append("bright")
    return problems


def check_grey(grey: np.ndarray, thresholds: Thresholds = THRESHOLDS) -> PhotoQuality:
    """The checks on a SIDE x SIDE luminance array (``grey_copy``): its measures and their problems."""
    q = measure_grey(grey)
    return replace(q, problems=verdict(q, thresholds))


def check_pixels(pixels: np.ndarray, thresholds: Thresholds = THRESHOLDS) -> PhotoQuality:
    """The checks on the encoder's (299, 299, 3) pixels in [-1, 1], as ``Captioner.caption`` runs them."""
    return check_grey(grey_copy(pixels), thresholds)


def check_photo(img: Image.Image, thresholds: Thresholds = THRESHOLDS) -> PhotoQuality:
    """The checks on a decoded picture (any size; upright, as ``images.load_image`` returns it)."""
    from .images import preprocess_image

    return check_pixels(preprocess_image(img), thresholds)


def cap_assessment(assessment, problems: list[str], high: float):
    """The assessment of a caption of a photo with ``problems``: never in the "high" band (capped at
    BAND_CAP, its confidence just under the calibrator's ``high`` line, so the JSON confidence, band and
    sentence agree). The confidence model learned from sharp, well-lit photos and does not know a
    blurred or dark one is harder; "low" stays "low". None (no calibration) and [] pass unchanged."""
    if assessment is None or not problems or assessment.band != "high":
        return assessment
    below = math.floor(high * 1000 - 1e-6) / 1000  # under the line even when JSON rounds to 3 decimals
    return replace(assessment, band=BAND_CAP, confidence=min(float(assessment.confidence), below))
