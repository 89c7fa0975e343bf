"""The out-of-domain check: its arithmetic on small fakes, the generated non-photos, and the shipped
check with the real Xception weights (a generated text page is flagged, a Flickr dev photo is not)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from captioner.pipeline import nonphotos
from captioner.serving.domain import DomainCheck, DomainError, pooled_features
from conftest import ROOT, data_missing

DEV_PHOTO = "3515904775_f8acc5909e.jpg"  # a Flickr8k dev photo: a dog carrying a ball out of the water


def test_a_broken_stored_array_is_a_domain_error_naming_the_file(tmp_path):
    check = DomainCheck(np.zeros(3, np.float32), np.eye(3, dtype=np.float32)[:2], threshold=0.5)
    data = check.to_json()
    data["components"] = {"dtype": "object", "shape": [1], "base64": ""}
    (tmp_path / "domain.json").write_text(json.dumps(data))
    with pytest.raises(DomainError, match="domain.json: unreadable"):
        DomainCheck.load(tmp_path / "domain.json")


def test_distance_is_the_residual_off_the_photo_directions():
    check = DomainCheck(np.zeros(3, np.float32), np.array([[1, 0, 0], [0, 1, 0]], np.float32), threshold=0.3)
    features = np.array([[2.0, 1.0, 0.0],  # in the plane: distance 0
                         [0.0, 0.0, 5.0],  # orthogonal: distance 1 (features are scaled to unit length)
                         [1.0, 0.0, 1.0]], np.float32)
    np.testing.assert_allclose(check.distance(features), [0.0, 1.0, np.sqrt(0.5)], atol=1e-6)
    verdicts = check.check(features)
    assert [v.in_domain for v in verdicts] == [True, False, False]
    in_domain, reason = verdicts[1]
    assert "unlike the photos" in reason and "0.300" in reason
    grid = np.broadcast_to(features[:, None, None, :], (3, 10, 10, 3))  # spatial grids: their mean is pooled
    np.testing.assert_allclose(check.distance(grid), check.distance(features), atol=1e-6)
    np.testing.assert_allclose(pooled_features(features[0]), features[:1])
    with pytest.raises(ValueError):
        check.distance(np.zeros((2, 5), np.float32))


def test_nonphotos_are_reproducible_and_every_kind_draws():
    first = list(nonphotos.generate(len(nonphotos.KINDS), seed=7))
    again = list(nonphotos.generate(len(nonphotos.KINDS), seed=7))
    other = list(nonphotos.generate(len(nonphotos.KINDS), seed=8))
    assert [k for k, _ in first] == list(nonphotos.KINDS)
    for (kind, a), (_, b), (_, c) in zip(first, again, other):
        assert a.mode == "RGB" and min(a.size) >= 32, kind
        assert np.array_equal(np.asarray(a), np.asarray(b)), kind
        if kind != "flat colour" or a.size == c.size:
            assert a.size != c.size or not np.array_equal(np.asarray(a), np.asarray(c)), kind
    assert nonphotos.THRESHOLD_SEED != nonphotos.REPORT_SEED != nonphotos.SAMPLE_SEED


def test_samples_for_the_app(tmp_path):
    paths = nonphotos.write_samples(tmp_path)
    assert [p.name for p in paths] == [f"sample-{k.replace(' ', '-')}.png" for k in nonphotos.SAMPLE_KINDS]
    assert all(p.stat().st_size > 1000 for p in paths)


# --------------------------------------------------------------------------- the real, shipped check

@pytest.fixture(scope="module")
def encoder(xception_weights):
    from captioner.serving.encoder import XceptionEncoder

    path, digest = xception_weights
    return XceptionEncoder(path, digest)


@pytest.fixture(scope="module")
def shipped():
    path = ROOT / "models" / "domain.json"
    if not path.is_file():
        pytest.fail(f"{path} is missing; fit it with `python -m captioner calibrate --all`")
    return DomainCheck.load(path)


def _pooled(encoder, images):
    from captioner.serving.images import preprocess_image

    return encoder.encode(np.stack([preprocess_image(img) for img in images]))


def test_generated_text_page_is_flagged(encoder, shipped):
    pages = [nonphotos.text_page(np.random.default_rng([nonphotos.SAMPLE_SEED, i])) for i in range(3)]
    verdicts = shipped.check(_pooled(encoder, pages))
    assert not any(v.in_domain for v in verdicts), [v.reason for v in verdicts]
    assert shipped.encoder == encoder.cache_key


def test_dev_photo_is_not_flagged(encoder, shipped):
    from captioner.pipeline.data import DataError, load_dataset
    from captioner.serving.images import load_image

    try:
        dataset = load_dataset()
    except DataError as err:
        data_missing(err)
    if DEV_PHOTO not in dataset.split_names("dev"):
        data_missing(f"{DEV_PHOTO} is not a dev image of {dataset.image_dir.parent}")
    [verdict] = shipped.check(_pooled(encoder, [load_image(dataset.image_path(DEV_PHOTO))]))
    assert verdict.in_domain, verdict.reason
