"""Attention overlays: same size as the photo, brighter where the weights are high."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from captioner.serving.heatmap import caption_overlays, overlay, word_overlays


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


@pytest.mark.parametrize("text, tokens", [
    ("一个女孩在跑。", "一个 女孩 在 跑"),  # Chinese is written without spaces
    ("L'homme fait du vélo.", "l' homme fait du vélo"),  # a French elision joins two tokens
    ("A person runs.", "a man runs"),  # neutral wording rewrites the written words, not the tokens
])
def test_caption_overlays_are_labelled_by_the_decoders_tokens(text, tokens):
    """Catches labels taken from the written caption: for Chinese, French or neutral wording the count
    of written words differs from the maps', which crashed the page."""
    from captioner.serving.captioner import Caption

    n = len(tokens.split())
    maps = np.random.default_rng(1).dirichlet(np.ones(25), size=n).reshape(n, 5, 5).astype(np.float32)
    caption = Caption(text, -2.0, -0.5, list(range(n)), maps, tokens)
    labelled = caption_overlays(Image.new("RGB", (120, 90), (40, 90, 200)), caption)
    assert [word for word, _ in labelled] == tokens.split()
    with pytest.raises(ValueError, match="keep_attention"):
        caption_overlays(Image.new("RGB", (10, 10)), Caption(text, -2.0, -0.5, tokens=tokens))
