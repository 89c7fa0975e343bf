"""The feature cache: keyed by image bytes and encoder, resumable, and tolerant of bad images."""
from __future__ import annotations

import numpy as np

from captioner.pipeline.features import FeatureCache, content_key, extract_features


class CountingEncoder:
    """Stands in for Xception: the 'feature' is the mean pixel, repeated; counts images encoded."""

    cache_key = "fake-encoder"

    def __init__(self):
        self.encoded = 0

    def encode(self, pixels, batch_size=32, spatial=False):
        self.encoded += len(pixels)
        pooled = np.repeat(pixels.mean(axis=(1, 2, 3))[:, None], 2048, axis=1).astype(np.float32)
        if not spatial:
            return pooled
        grid = np.repeat(np.repeat(pooled[:, None, None, :], 10, axis=1), 10, axis=2)  # (N, 10, 10, 2048)
        grid[:, 0, 0, :] += 0.5  # not flat, so the mean over the grid differs from any one cell
        return grid


def test_cache_resumes_and_skips_bad_images(tmp_path, make_image):
    paths = [make_image(f"{i}.jpg", color=(10 * i, 0, 0)) for i in range(5)]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    cache = FeatureCache("fake-encoder", root=tmp_path / "cache")
    encoder = CountingEncoder()
    first = extract_features(encoder, paths[:3], cache, batch_size=2, progress=False)
    assert encoder.encoded == 3 and first.features.shape == (3, 2048)
    # "interrupted" after three images: the next run encodes only the rest, and records the bad file
    result = extract_features(encoder, [*paths, bad], cache, batch_size=2, progress=False)
    assert encoder.encoded == 5
    assert result.names == [p.name for p in paths]
    assert list(result.errors) == ["bad.jpg"] and "not a recognised image format" in result.errors["bad.jpg"]
    np.testing.assert_allclose(result.features[:3], first.features)
    assert result.features[1, 0] != result.features[2, 0]


def test_key_follows_content_not_name(tmp_path, make_image):
    a = make_image("same.jpg", color=(1, 2, 3), folder=tmp_path / "a")
    b = make_image("same.jpg", color=(200, 2, 3), folder=tmp_path / "b")
    assert content_key(a) != content_key(b)
    cache = FeatureCache("fake-encoder", root=tmp_path / "cache")
    result = extract_features(CountingEncoder(), [a, b], cache, progress=False)
    assert result.features[0, 0] != result.features[1, 0]


def test_unreadable_cache_entry_is_recomputed(tmp_path, make_image):
    path = make_image("x.jpg")
    cache = FeatureCache("fake-encoder", root=tmp_path / "cache")
    encoder = CountingEncoder()
    extract_features(encoder, [path], cache, progress=False)
    cache.path_for(content_key(path)).write_bytes(b"garbage")
    extract_features(encoder, [path], cache, progress=False)
    assert encoder.encoded == 2


def test_spatial_features_are_float16_grids_and_fill_the_pooled_cache_too(tmp_path, make_image):
    paths = [make_image(f"{i}.jpg", color=(40 * i, 0, 0)) for i in range(3)]
    root = tmp_path / "cache"
    encoder = CountingEncoder()
    grids = extract_features(encoder, paths, FeatureCache("fake-encoder", root=root, kind="spatial"),
                             batch_size=2, progress=False)
    assert grids.features.shape == (3, 10, 10, 2048) and grids.features.dtype == np.float16
    # the pooled vectors came free with the grids: no second encoder pass, and they are the grid means
    pooled = extract_features(encoder, paths, FeatureCache("fake-encoder", root=root), progress=False)
    assert encoder.encoded == 3
    expected = grids.features.astype(np.float32).mean(axis=(1, 2))
    np.testing.assert_allclose(pooled.features, expected, atol=2e-3)
