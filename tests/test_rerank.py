"""Consensus reranking (serving/rerank.py): the beam's captions reordered by what people said about the
most similar training photos, with the shipped German folder (which chose it on its held-out images) and
its real neighbour index; the folder's choice, the refusal without an index, and the held-out choice."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
PHOTOS = ["dog-field.jpg", "cat.jpg", "cameraman.jpg", "astronaut.jpg"]


@pytest.fixture(scope="module")
def german(xception_weights):
    from captioner.serving.captioner import Captioner

    return Captioner.load(lang="de", allow_download=False, precision="float32")


@pytest.fixture(scope="module")
def german_features(german):
    from captioner.serving.images import load_image, preprocess_image

    return german.encode(np.stack([preprocess_image(load_image(ASSETS / n)) for n in PHOTOS]))


def test_decode_config_refuses_an_unknown_ranking():
    from captioner.config import DecodeConfig

    with pytest.raises(ValueError, match="rerank must be one of auto, score, consensus"):
        DecodeConfig(rerank="best").validate()


def test_consensus_reorders_the_beams_own_captions_by_their_consensus(german, german_features):
    """Catches a ranking that drops or invents captions (it is a permutation of the beam's), one that is
    not by consensus (the values, recomputed here from the neighbour index, never rise down the list), and
    consensus computed against another picture's neighbours (each picture's own row is used)."""
    from captioner.serving.domain import pooled_features

    decode = german.default_decode(beam_width=4, n_best=4, wording="as-learned")
    by_score = german.caption_features(german_features, replace(decode, rerank="score"))
    by_consensus = german.caption_features(german_features, replace(decode, rerank="consensus"))
    coords = german.confidence.domain.project(pooled_features(german_features))
    moved = 0
    for row, (scored, agreed) in enumerate(zip(by_score, by_consensus)):
        assert sorted(c.tokens for c in scored) == sorted(c.tokens for c in agreed)
        values = german.confidence.neighbours.consensus([c.tokens for c in agreed],
                                                         np.repeat(coords[row:row + 1], len(agreed), axis=0))
        assert all(a >= b for a, b in zip(values, values[1:])), values
        moved += [c.tokens for c in scored] != [c.tokens for c in agreed]
    assert moved  # on these photos the two rankings differ somewhere, so the test can tell them apart


def test_the_folder_chooses_the_ranking_when_asked_for_auto(german, german_features):
    """German's decoding.json says consensus (chosen on held-out images): "auto" gives exactly the
    consensus captions, and n_best cuts the reordered list, not the beam's."""
    folder_choice = json.loads((german.checkpoint.folder / "decoding.json").read_text())["rerank"]
    assert folder_choice == german.checkpoint.rerank == "consensus"
    decode = german.default_decode(beam_width=3, wording="as-learned")
    auto = german.caption_features(german_features, decode)
    consensus = german.caption_features(german_features, replace(decode, rerank="consensus", n_best=3))
    scored = german.caption_features(german_features, replace(decode, rerank="score"))
    assert [c[0].tokens for c in auto] == [c[0].tokens for c in consensus]
    assert [c[0].tokens for c in auto] != [c[0].tokens for c in scored]  # so "auto" read as "score" would show
    assert all(len(c) == 1 for c in auto)


def test_width_one_is_greedy_whatever_the_ranking(german, german_features):
    """One candidate: nothing to reorder, so consensus at width 1 is exactly greedy."""
    decode = german.default_decode(beam_width=1, wording="as-learned")
    greedy = german.caption_features(german_features, replace(decode, rerank="score"))
    agreed = german.caption_features(german_features, replace(decode, rerank="consensus"))
    assert [c[0].ids for c in greedy] == [c[0].ids for c in agreed]


def test_without_a_neighbour_index_consensus_is_refused_and_auto_keeps_the_score(german, german_features):
    """A folder whose calibration is missing: asking for consensus says how to fit it; "auto" falls back
    to the decoder's order (captioning never stops for a missing calibration)."""
    from captioner.serving.captioner import Captioner

    bare = Captioner(german.encoder, german.checkpoint, None, "confidence.json: missing")
    decode = german.default_decode(beam_width=3, wording="as-learned")
    with pytest.raises(ValueError, match="python -m captioner calibrate --model .*merge-de"):
        bare.caption([ASSETS / PHOTOS[0]], replace(decode, rerank="consensus"))
    assert bare.reranking(decode) == "score"
    assert [c[0].ids for c in bare.caption_features(german_features, decode)] == \
        [c[0].ids for c in german.caption_features(german_features, replace(decode, rerank="score"))]


def test_a_folder_naming_an_unknown_ranking_is_refused(tmp_path):
    from captioner.serving.model_folder import CheckpointError, read_rerank

    (tmp_path / "decoding.json").write_text(json.dumps({"length_alpha": 0.4, "rerank": "auto"}))
    with pytest.raises(CheckpointError, match="rerank must be score or consensus"):
        read_rerank(tmp_path)
    (tmp_path / "decoding.json").write_text(json.dumps({"length_alpha": 0.4}))
    assert read_rerank(tmp_path) == "score"


def test_a_new_length_exponent_drops_a_ranking_chosen_at_another():
    from captioner.pipeline.workflows import keep_rerank

    chosen = {"length_alpha": 0.4, "rerank": "consensus", "rerank_sweep": {"score": {}, "consensus": {}}}
    said = []
    assert keep_rerank(chosen, {"length_alpha": 0.4, "sweep": 1})["rerank"] == "consensus"
    assert "rerank" not in keep_rerank(chosen, {"length_alpha": 0.7, "sweep": 1}, said.append)
    assert "--tune-rerank" in said[0]


def test_a_ranking_the_confidence_was_not_fitted_for_is_never_high(xception_weights):
    """English's confidence is fitted for the best-scoring captions: asked for consensus, a caption the
    neighbours favour keeps its sentence but is never "high" (its consensus reads higher than any the
    calibrator saw for such a caption). Catches the cap missing, and a cap applied to the folder's own
    ranking as well."""
    from captioner.serving.captioner import Captioner

    english = Captioner.load(allow_download=False, precision="float32")
    assert english.fitted_ranking() == "score"
    decode = english.default_decode(beam_width=3, wording="as-learned")
    [own] = english.caption([ASSETS / "dog-field.jpg"], decode)
    [other] = english.caption([ASSETS / "dog-field.jpg"], replace(decode, rerank="consensus"))
    assert own.assessment.band == "high"
    assert other.captions[0].tokens != own.captions[0].tokens
    assert other.assessment.band == "medium" and other.assessment.confidence < english.confidence.calibrator.high
    [greedy] = english.caption([ASSETS / "dog-field.jpg"], replace(decode, beam_width=1, rerank="consensus"))
    [greedy_own] = english.caption([ASSETS / "dog-field.jpg"], replace(decode, beam_width=1))
    assert greedy.assessment == greedy_own.assessment  # one candidate: nothing was reranked
