"""Metrics against independent references: ECE and corpus BLEU against hand-binned and hand-counted
examples, ROUGE-L by hand, CIDEr-D / METEOR / ROUGE-L against pycocoevalcap run here on the same captions,
and evaluate_split / tune_length_alpha on a tiny real (untrained) Keras decoder with the real encoder."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from captioner.pipeline.evaluate import caption_metrics
from captioner.pipeline.calibration_metrics import expected_calibration_error
from conftest import ASSETS

# ------------------------------------------------------------------------------------------------ ECE


def test_ece_of_a_hand_binned_example():
    """Catches an ECE that is always 0, weights bins equally instead of by their share, takes the mean of
    per-sample gaps instead of per-bin gaps, or puts the top bin's edge wrong. Ten equal-width bins:
      bin 1: 0.15 -> 0        gap 0.15
      bin 2: 0.25 -> 1        gap 0.75
      bin 3: 0.35 -> 0        gap 0.35
      bin 8: 0.85 -> 1        gap 0.15
      bin 9: 0.95 -> 1, 0.92 -> 0: mean confidence 0.935, observed 0.5, gap 0.435 (2 of 6 samples)
    ECE = (0.15 + 0.75 + 0.35 + 0.15) / 6 + 2/6 * 0.435 = 2.27 / 6."""
    confidence = np.array([0.15, 0.25, 0.35, 0.85, 0.95, 0.92])
    outcome = np.array([0, 1, 0, 1, 1, 0])
    assert expected_calibration_error(confidence, outcome) == pytest.approx(2.27 / 6, abs=1e-12)
    # one bin: the gap between the mean confidence and the observed rate, 0.578333 - 0.5
    assert expected_calibration_error(confidence, outcome, bins=1) == pytest.approx(confidence.mean() - 0.5)
    # a confidence of exactly 1.0 belongs to the top bin (mean 0.97, observed 2/3), not to an eleventh one
    assert expected_calibration_error(np.array([1.0, 0.95, 0.96]), np.array([0, 1, 1])) == pytest.approx(0.97 - 2 / 3)


def reference_ece(confidence, outcome, bins: int = 10) -> float:
    """ECE written out sample by sample: bin k holds confidences in [k/bins, (k+1)/bins) (1.0 in the top
    bin); each bin adds (its share of samples) * |its mean confidence - its observed rate|."""
    sums: dict[int, list[float]] = {}
    for c, o in zip(confidence, outcome):
        k = min(math.floor(c * bins), bins - 1)
        entry = sums.setdefault(k, [0, 0.0, 0.0])
        entry[0] += 1
        entry[1] += c
        entry[2] += o
    n = len(confidence)
    return sum(count / n * abs(c_sum / count - o_sum / count) for count, c_sum, o_sum in sums.values())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 1.0), st.booleans()), min_size=1, max_size=60), st.sampled_from([1, 5, 10, 15]))
def test_ece_matches_a_reference_implementation(pairs, bins):
    """Catches any departure from the definition on arbitrary data (binning, weighting, bin count)."""
    confidence = np.array([c for c, _ in pairs])
    outcome = np.array([float(o) for _, o in pairs])
    assert expected_calibration_error(confidence, outcome, bins) == pytest.approx(
        reference_ece(confidence, outcome, bins), abs=1e-9)


# ------------------------------------------------------------------------------- BLEU and ROUGE-L by hand

# Three images, two references each. Counts below are done by hand (clipped n-gram matches / n-grams):
#   1-grams: 6/6, 3/4 ("fast" is in no reference), 5/5        -> 14/15
#   2-grams: 5/5, 1/3 ("dog runs"), 4/4                       -> 10/12
#   3-grams: 2/4 ("cat sat on", "on the mat"), 0/2, 3/3       -> 5/9
#   4-grams: 0/3, 0/1, 1/2 ("a man rides a")                  -> 1/6
# Lengths: hypotheses 6 + 4 + 5 = 15; closest references 6 + 5 + 5 = 16 -> brevity penalty exp(1 - 16/15).
# (Every hypothesis has at least 4 words: nltk counts a hypothesis with no 4-grams as 1 in the denominator.)
REFERENCES = {
    "1.jpg": ["the cat is on the mat", "a cat sat on a mat"],
    "2.jpg": ["a dog runs on the grass", "the big dog is running"],
    "3.jpg": ["a man rides a red bike", "a person rides a bike"],
}
PREDICTIONS = {"1.jpg": "the cat sat on the mat", "2.jpg": "the dog runs fast", "3.jpg": "a man rides a bike"}
BP = math.exp(1 - 16 / 15)


def f_beta(precision: float, recall: float, beta: float = 1.2) -> float:
    """ROUGE-L's F-measure, as in Lin (2004) and the COCO caption evaluation (beta 1.2)."""
    return (1 + beta ** 2) * precision * recall / (recall + beta ** 2 * precision)


# Longest common subsequences, by hand. ROUGE-L takes the best precision and the best recall over the
# references: image 1: "the cat on the mat" with the first (5 of 6 / 6); image 2: "dog runs" with the first
# (2 of 4 / 6) and "the dog" with the second (2 of 4 / 5); image 3: "a man rides a bike" with the first (5 of 5 / 6).
ROUGE_L = (f_beta(5 / 6, 5 / 6) + f_beta(2 / 4, 2 / 5) + f_beta(1.0, 5 / 6)) / 3


def test_corpus_bleu_and_rouge_l_against_hand_counts():
    """Catches BLEU computed per sentence and averaged, unclipped counts, a wrong brevity penalty (longest
    or shortest reference instead of the closest), wrong n-gram weights, smoothing that inflates BLEU-4,
    and a ROUGE-L with another beta or averaged over references."""
    metrics, _ = caption_metrics(REFERENCES, PREDICTIONS, meteor=False)
    p1, p2, p3, p4 = 14 / 15, 10 / 12, 5 / 9, 1 / 6
    assert metrics["BLEU-1"] == pytest.approx(BP * p1, abs=1e-9)
    assert metrics["BLEU-2"] == pytest.approx(BP * (p1 * p2) ** (1 / 2), abs=1e-9)
    assert metrics["BLEU-3"] == pytest.approx(BP * (p1 * p2 * p3) ** (1 / 3), abs=1e-9)
    assert metrics["BLEU-4"] == pytest.approx(BP * (p1 * p2 * p3 * p4) ** (1 / 4), abs=1e-9)
    assert metrics["ROUGE-L"] == pytest.approx(ROUGE_L, abs=1e-9)


def _coco(references, predictions, meteor: bool = True):
    """pycocoevalcap's own scorers, called here directly: (CIDEr-D, per-image CIDEr-D, ROUGE-L, METEOR)."""
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge

    keys = sorted(predictions)
    gts = {k: list(references[k]) for k in keys}
    res = {k: [predictions[k] or "<empty>"] for k in keys}  # an empty caption: one token that matches nothing
    cider, each = Cider().compute_score(gts, res)
    rouge = Rouge().compute_score(gts, res)[0]
    if not meteor:
        return float(cider), dict(zip(keys, map(float, each))), float(rouge), None
    scorer = Meteor()
    try:
        meteor = scorer.compute_score(gts, res)[0]
    finally:
        scorer.meteor_p.kill()
    return float(cider), dict(zip(keys, map(float, each))), float(rouge), float(meteor)


def test_cider_meteor_rouge_match_pycocoevalcap():
    """Catches references and predictions swapped, predictions paired with another image's references,
    per-image CIDEr filed under the wrong image, and METEOR silently missing (it needs Java here)."""
    notes: list[str] = []
    metrics, per_image = caption_metrics(REFERENCES, PREDICTIONS, notes)
    cider, each, rouge, meteor = _coco(REFERENCES, PREDICTIONS)
    assert notes == [] and metrics["METEOR"] is not None
    assert metrics["CIDEr"] == pytest.approx(cider, abs=1e-9)
    assert metrics["ROUGE-L"] == pytest.approx(rouge, abs=1e-9)
    assert metrics["METEOR"] == pytest.approx(meteor, abs=1e-9)
    assert per_image == pytest.approx(each, abs=1e-9)
    assert len(set(each.values())) == 3  # the images score differently, so a mix-up shows
    swapped = {"1.jpg": PREDICTIONS["2.jpg"], "2.jpg": PREDICTIONS["1.jpg"], "3.jpg": PREDICTIONS["3.jpg"]}
    assert _coco(REFERENCES, swapped)[0] != pytest.approx(cider, abs=1e-3)  # the check can tell pairs apart


# ----------------------------------------------------- evaluate_split and tune_length_alpha, really run

# Four bundled photos with references written for them; the tiny decoder's vocabulary is these words.
PHOTO_REFERENCES = {
    "dog-field.jpg": ["a dog runs on the grass", "a brown dog runs through a field"],
    "cat.jpg": ["a cat sits on a sofa", "a cat looks at the camera"],
    "cameraman.jpg": ["a man holds a camera", "a man stands behind a camera on a tripod"],
    "astronaut.jpg": ["a woman in a suit smiles", "a woman poses in front of a flag"],
}


def _tiny_captioner(folder, lang: str, seed: int):
    """The real Xception encoder with a tiny, untrained merge decoder captioning in ``lang`` (built and saved
    as other tests do): its captions are nonsense, but they differ from photo to photo and with the length
    exponent. ``seed`` sets the random weights: with seed 2 the four photos get four different greedy
    captions in English; with seed 5 the German decoder's beam captions change with the exponent."""
    import keras

    from captioner.config import TrainConfig
    from captioner.serving.captioner import Captioner
    from captioner.serving.decoders import build_model
    from captioner.serving.encoder import XceptionEncoder
    from captioner.serving.model_folder import load_checkpoint, save_checkpoint
    from captioner.serving.vocab import Vocabulary

    keras.utils.set_random_seed(seed)
    vocab = Vocabulary.fit((c for refs in PHOTO_REFERENCES.values() for c in refs), min_count=1)
    cfg = TrainConfig(lang=lang, decoder="merge", units=16, embedding_dim=8)
    save_checkpoint(build_model(len(vocab), cfg), vocab, cfg, folder)
    return Captioner(XceptionEncoder.load(allow_download=False), load_checkpoint(folder))


@pytest.fixture(scope="module")
def tiny_captioner(tmp_path_factory, xception_weights):
    """English: evaluation includes METEOR (its Java scorer)."""
    return _tiny_captioner(tmp_path_factory.mktemp("tiny-en"), "en", seed=2)


@pytest.fixture(scope="module")
def tiny_german_captioner(tmp_path_factory, xception_weights):
    """Another language: no METEOR (English stemmer and synonyms), so a sweep of five settings needs no
    five Java start-ups; the balanced rule then weighs three metrics."""
    return _tiny_captioner(tmp_path_factory.mktemp("tiny-de"), "de", seed=5)


@pytest.fixture
def photo_dataset(tmp_path, monkeypatch):
    """The four photos as a dataset (dev split) over assets/; features cached under tmp_path, not the user's."""
    from captioner.pipeline.data import CaptionDataset

    monkeypatch.setenv("CAPTIONER_CACHE_DIR", str(tmp_path / "cache"))
    names = sorted(PHOTO_REFERENCES)
    return CaptionDataset(ASSETS, {n: list(r) for n, r in PHOTO_REFERENCES.items()}, {"train": names, "dev": names})


def _reference_metrics(references, predictions, meteor: bool = True):
    """BLEU-1..4 with nltk's corpus_bleu and the pycocoevalcap scorers, called here (not caption_metrics)."""
    from nltk.translate.bleu_score import corpus_bleu

    keys = sorted(predictions)
    out = {f"BLEU-{n}": corpus_bleu([[r.split() for r in references[k]] for k in keys],
                                    [predictions[k].split() for k in keys], weights=(1 / n,) * n)
           for n in range(1, 5)}
    out["CIDEr"], each, out["ROUGE-L"], out["METEOR"] = _coco(references, predictions, meteor)
    return out, each


def test_evaluate_split_scores_each_photo_against_its_own_references(tiny_captioner, photo_dataset):
    """A real run of evaluate_split (the CLI test replaces it with a fake). Catches predictions filed under
    the wrong photo (batches, reordering), the written form scored instead of the decoder's tokens,
    references taken from another photo, and metrics that are not those of the predictions: the
    reference is Captioner.caption on each file and the metric tools called here."""
    import warnings

    from captioner.config import DecodeConfig
    from captioner.pipeline.evaluate import evaluate_split

    decode = DecodeConfig(beam_width=1, max_words=6)
    result = evaluate_split(tiny_captioner, photo_dataset, "dev", decode, progress=False, batch_size=3)
    names = sorted(PHOTO_REFERENCES)
    library = tiny_captioner.caption([ASSETS / n for n in names], decode)
    expected = {n: r.captions[0].tokens for n, r in zip(names, library)}
    assert len(set(expected.values())) == 4  # every photo gets its own caption, so a mix-up shows
    assert result.predictions == expected
    assert result.references == PHOTO_REFERENCES
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nltk warns about zero n-gram counts of nonsense captions
        reference, each = _reference_metrics(PHOTO_REFERENCES, expected)
    assert result.metrics == pytest.approx(reference, abs=1e-9)
    assert result.per_image_cider == pytest.approx(each, abs=1e-9)
    assert result.settings["n_images"] == 4 and result.settings["decoding"] == "greedy"


def test_tune_length_alpha_picks_the_balanced_best_of_a_real_sweep(tiny_german_captioner, photo_dataset):
    """A real sweep. Catches a sweep whose exponent never reaches the decoder (every setting scores the
    same), metrics filed under the wrong exponent, and a choice other than the balanced rule's: each
    exponent is re-scored here from Captioner.caption and the metric tools, and the rule is written out."""
    import warnings
    from dataclasses import replace

    from captioner.pipeline.evaluate import ALPHA_GRID, TUNING_DECODE, tune_length_alpha

    captioner, names = tiny_german_captioner, sorted(PHOTO_REFERENCES)
    decode = replace(TUNING_DECODE, max_words=6)
    tuned = tune_length_alpha(captioner, photo_dataset, names, decode)
    assert set(tuned["sweep"]) == {str(a) for a in ALPHA_GRID}
    used = ("BLEU-1", "BLEU-4", "CIDEr")  # METEOR is English only
    expected = {}
    for alpha in ALPHA_GRID:
        results = captioner.caption([ASSETS / n for n in names], replace(decode, length_alpha=alpha))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nltk warns about zero n-gram counts of nonsense captions
            metrics, _ = _reference_metrics(PHOTO_REFERENCES, {n: r.captions[0].tokens for n, r in zip(names, results)},
                                            meteor=False)
        expected[str(alpha)] = {m: metrics[m] for m in used}
    for alpha in expected:
        assert tuned["sweep"][alpha] == pytest.approx(expected[alpha], abs=1e-4)  # the sweep rounds to 4 places
    assert len({tuple(v.values()) for v in expected.values()}) > 1  # the exponent changes the captions here
    best = {m: max(v[m] for v in expected.values()) for m in used}
    balanced = {a: sum(expected[str(a)][m] / (best[m] or 1.0) for m in used) / len(used) for a in ALPHA_GRID}
    top = max(balanced.values())
    assert tuned["length_alpha"] == next(a for a in ALPHA_GRID if balanced[a] > top - 1e-3)  # first of any tie
    assert tuned["selected_on"].startswith("4 training images")


def test_tune_rerank_chooses_by_the_balanced_rule_of_both_rankings(tiny_captioner, photo_dataset):
    """A real choice between the decoder's order and the neighbour consensus, with the shipped English
    neighbour index. Catches a ranking that never reaches the decoder (the two rows are re-scored here with
    each ranking) and a choice other than the balanced rule's."""
    import warnings
    from dataclasses import replace
    from pathlib import Path

    from captioner.pipeline.evaluate import BALANCED_METRICS, TUNING_DECODE, balanced_scores, tune_rerank
    from captioner.serving.domain import DomainCheck
    from captioner.serving.neighbours import NeighbourIndex
    from captioner.serving.rerank import ConsensusRanker

    models = Path(__file__).resolve().parents[1] / "models"
    tiny_captioner.ranker = ConsensusRanker(DomainCheck.load(models / "domain.json"),
                                            NeighbourIndex.load(models / "neighbours.json"))
    names = sorted(PHOTO_REFERENCES)
    decode = replace(TUNING_DECODE, beam_width=4, max_words=6)
    try:
        chosen = tune_rerank(tiny_captioner, photo_dataset, names, decode)
        rows = {}
        for choice in ("score", "consensus"):
            results = tiny_captioner.caption([ASSETS / n for n in names], replace(decode, rerank=choice))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # nltk warns about zero n-gram counts of nonsense captions
                metrics, _ = _reference_metrics(PHOTO_REFERENCES, {n: r.captions[0].tokens
                                                                   for n, r in zip(names, results)})
            rows[choice] = {m: metrics[m] for m in BALANCED_METRICS}
    finally:
        tiny_captioner.ranker = None
    for choice in rows:
        assert chosen["rerank_sweep"][choice] == pytest.approx(rows[choice], abs=1e-4)
    balanced = balanced_scores(rows)
    assert chosen["rerank"] == max(rows, key=lambda c: (balanced[c], c == "score"))
    assert "4 training images held out" in chosen["rerank_selected_on"]
