"""CIDEr-D (serving/cider.py), the one implementation behind the confidence's neighbour consensus, the
definition of a good caption when calibrating, and the SCST reward: it gives pycocoevalcap's numbers."""
from __future__ import annotations

import numpy as np
import pytest

from captioner.serving.cider import CiderD, ngram_counts

REFS = {
    "1": ["a dog runs on the grass", "a brown dog is running", "the dog plays outside"],
    "2": ["a man rides a bike", "a person on a bicycle", "a man is cycling down the road"],
    "3": ["two children play in the water", "kids splash in a pool", "two kids swim"],
}
HYPS = {"1": "a dog runs on grass", "2": "a man on a bike", "3": "a dog in the water"}


def test_cider_d_matches_pycocoevalcap_when_given_the_same_documents():
    from pycocoevalcap.cider.cider import Cider

    keys = sorted(REFS)
    expected_mean, expected_each = Cider().compute_score({k: REFS[k] for k in keys}, {k: [HYPS[k]] for k in keys})
    cider = CiderD([REFS[k] for k in keys])
    ours = [cider.score(HYPS[k], cider.prepare(REFS[k])) for k in keys]
    np.testing.assert_allclose(ours, expected_each, rtol=1e-9)
    assert np.mean(ours) == pytest.approx(expected_mean)
    assert cider.score(REFS["1"][0], cider.prepare(REFS["1"])) > cider.score("a man rides", cider.prepare(REFS["1"]))


def test_cider_d_matches_pycocoevalcap_and_is_the_scst_reward():
    from pycocoevalcap.cider.cider import Cider

    from captioner.pipeline import scst

    refs = {"a": ["a dog runs on the grass", "a brown dog runs", "the dog is running in a field"],
            "b": ["a man rides a bike", "a cyclist on a dirt road", "a man on a bicycle rides down a hill"],
            "c": ["two children play in the water", "kids splash in a pool", "two kids swimming"]}
    candidates = {"a": "a dog runs in the grass", "b": "a man rides a bike on a road", "c": "a dog runs"}
    _, expected = Cider().compute_score(refs, {k: [v] for k, v in candidates.items()})
    ours = CiderD(list(refs.values()))
    for (key, caption), value in zip(candidates.items(), expected):
        assert ours.score(caption, ours.prepare(refs[key])) == pytest.approx(value, rel=1e-6)
    assert scst.CiderD is CiderD  # the reward SCST fine-tunes on is this very scorer, not a copy


def test_ngram_counts_are_per_order_in_first_occurrence_order():
    one, two, three, four = ngram_counts("a dog a dog".split())
    assert list(one.items()) == [(("a",), 2), (("dog",), 2)]
    assert list(two.items()) == [(("a", "dog"), 2), (("dog", "a"), 1)]
    assert sum(three.values()) == 2 and sum(four.values()) == 1
    assert ngram_counts(["dog"], key=" ".join)[0] == {"dog": 1}


def test_no_references_score_zero():
    cider = CiderD([REFS["1"]])
    assert cider.score("a dog", []) == 0.0
    assert cider.score("", cider.prepare(REFS["1"])) == 0.0
