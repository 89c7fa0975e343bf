"""Attention overlays: same size as the photo, brighter where the weights are high."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from captioner.serving.heatmap import overlay, word_overlays


def test_overlay_is_brighter_where_the_model_looked():
    photo = Image.new("RGB", (100, 100), (128, 128, 128))
    weights = np.zeros((5, 5), np.float32)
    weights[0, 4] = 1.0  # top-right cell
    out = np.asarray(overlay(photo, weights), np.float32).sum(axis=2)
    assert out.shape == (100, 100)
    assert out[5:15, 85:95].mean() > 1.5 * out[85:95, 5:15].mean()  # top-right vs bottom-left


def test_word_overlays_one_per_word_and_checks_counts():
    photo = Image.new("RGB", (300, 200), (10, 200, 30))
    maps = np.random.default_rng(0).dirichlet(np.ones(25), size=3).reshape(3, 5, 5)
    images = word_overlays(photo, maps, ["a", "green", "field"])
    assert len(images) == 3 and all(im.size == (224, 149) for im in images)
    with pytest.raises(ValueError, match="3 attention maps for 2 words"):
        word_overlays(photo, maps, ["a", "field"])


def test_a_flat_map_highlights_nothing():
    photo = Image.new("RGB", (50, 50), (90, 160, 200))
    out = np.asarray(overlay(photo, np.full((5, 5), 1 / 25, np.float32)), np.float32)
    assert out.std(axis=(0, 1)).max() < 1.0  # uniformly dimmed, no hot spot anywhere
