"""Attention heatmaps: where an attention decoder looked while it said each word, over the photo."""
from __future__ import annotations

import numpy as np
from PIL import Image


def overlay(image: Image.Image, weights: np.ndarray, strength: float = 0.6) -> Image.Image:
    """The photo with one word's (g, g) attention weights laid over it as a smooth heatmap.

    The weights are stretched from the least to the most attended region (one word's map sums to 1
    and is often fairly flat, so raw values would all look alike) and upsampled bilinearly, since each
    cell covers a patch of the picture, not a point. Brighter, warmer areas are where the model looked
    most; the rest of the photo is dimmed. A perfectly flat map highlights nothing.
    """
    import matplotlib

    rgb = image.convert("RGB")
    weights = np.asarray(weights, np.float32)
    low, high = float(weights.min()), float(weights.max())
    scaled = (weights - low) / (high - low) if high > low else np.zeros_like(weights)
    small = Image.fromarray(np.uint8(255 * scaled), mode="L")
    heat = np.asarray(small.resize(rgb.size, Image.BILINEAR), np.float32) / 255.0  # (H, W) in [0, 1]
    colours = matplotlib.colormaps["inferno"](heat)[..., :3]  # (H, W, 3)
    photo = np.asarray(rgb, np.float32) / 255.0
    shaded = photo * (0.35 + 0.65 * heat[..., None])  # dim what was not looked at
    alpha = strength * heat[..., None]  # colour only where the model looked
    mixed = (1 - alpha) * shaded + alpha * colours
    return Image.fromarray(np.uint8(np.clip(mixed, 0, 1) * 255))


def word_overlays(image: Image.Image, maps: np.ndarray, words: list[str], side: int = 224) -> list[Image.Image]:
    """One overlay per word: ``maps`` (n_words, g, g) from ``Captioner.attention_maps``."""
    if len(maps) != len(words):
        raise ValueError(f"{len(maps)} attention maps for {len(words)} words")
    base = image.convert("RGB")
    base.thumbnail((side, side))
    return [overlay(base, m) for m in maps]


def caption_overlays(image: Image.Image, caption) -> list[tuple[str, Image.Image]]:
    """(word, overlay) for each word the decoder chose in ``caption`` (a ``Caption`` decoded with
    ``keep_attention=True``): labelled by its tokens, one per attention map, never by the written text,
    which joins Chinese words and French elisions ("l'homme") and is reworded by neutral wording."""
    if caption.attention is None:
        raise ValueError("this caption was decoded without keep_attention=True")
    words = caption.tokens.split()
    return list(zip(words, word_overlays(image, caption.attention, words)))
