"""Calibrated confidence, bands said in words, and their JSON: from fakes with known signals, plus the
shipped calibration files."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from captioner.pipeline.calibration_metrics import expected_calibration_error
from captioner.serving.assessment import Assessment, ConfidenceError, Signals
from captioner.serving.calibrator import Calibrator
from captioner.serving.cider import CiderD
from captioner.serving.confidence import ConfidenceModel, compute_signals
from captioner.serving.domain import DomainCheck, domain_digest
from captioner.serving.model_folder import CONFIDENCE_FILE
from captioner.serving.neighbours import REBUILD_NEIGHBOURS, HashedReferences, NeighbourIndex, gram_hash
from captioner.serving.sentence import BANDS, finish, hedge, out_of_domain_warning, sentence
from conftest import ROOT


@dataclass
class FakeCaption:
    text: str
    score: float


def score_only(high=0.6, low=0.3) -> Calibrator:
    """confidence = sigmoid(score): known confidences for known scores."""
    return Calibrator(["score"], ["identity"], [0.0], [1.0], [1.0], 0.0, high, low)


def tiny_domain() -> DomainCheck:
    """4-d features; photos live in the plane of the first two axes (unit vectors after scaling)."""
    mean = np.zeros(4, np.float32)
    components = np.eye(4, dtype=np.float32)[:2]
    return DomainCheck(mean, components, threshold=0.5)


def tiny_model(calibrator: Calibrator | None = None) -> ConfidenceModel:
    index = NeighbourIndex.from_captions(np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]),
                                         [["a dog runs on the grass", "a brown dog runs"], ["a dog runs in a field"],
                                          ["a man rides a bike", "a cyclist on a road"]], k=2)
    return ConfidenceModel(calibrator or Calibrator(["score", "consensus"], ["identity", "log1p"], [0.0, 0.0],
                                                    [1.0, 1.0], [1.0, 2.0], -1.0, 0.6, 0.3), tiny_domain(), index)


# ------------------------------------------------------------------------------------------ wording

@pytest.mark.parametrize("score, band, spoken", [
    (2.0, "high", "A dog runs on the grass."),  # sigmoid(2) = 0.88
    (0.0, "medium", "Probably a dog runs on the grass."),  # 0.5
    (-2.0, "low", "Maybe a dog runs on the grass."),  # 0.12
])
def test_band_wording_from_known_scores(score, band, spoken):
    calibrator = score_only()
    assessment = calibrator.assess(Signals(score=score, consensus=0.0))
    assert assessment.confidence == pytest.approx(1 / (1 + np.exp(-score)))
    assert assessment.band == band and assessment.in_domain and assessment.reason is None
    assert sentence("a dog runs on the grass", "en", assessment.band, assessment.in_domain) == spoken
    assert finish(hedge("a dog runs on the grass", band)) == spoken


def test_band_edges_and_unknown_band():
    calibrator = score_only(high=0.6, low=0.3)
    assert calibrator.band(0.6) == "high" and calibrator.band(0.5999) == "medium"
    assert calibrator.band(0.3) == "medium" and calibrator.band(0.2999) == "low"
    assert calibrator.band(0.99, in_domain=False) == "low"
    with pytest.raises(ValueError, match="band must be one of"):
        hedge("a dog", "certain")
    assert hedge("", "low") == ""
    assert hedge("a dog", "medium") == "Probably a dog"  # English unless the caption's language is given
    with pytest.raises(ValueError, match="no captions in language 'xx'"):
        hedge("a dog", "medium", lang="xx")


def test_out_of_domain_is_low_and_warned():
    model = tiny_model(score_only())
    captions = [FakeCaption("a dog runs", 3.0), FakeCaption("a dog runs", 3.0)]
    features = np.array([[1.0, 0.2, 0.0, 0.0],  # in the photo plane
                         [0.1, 0.0, 1.0, 0.5]], np.float32)  # mostly off it: flagged
    photo, text_page = model.assess(features, captions)
    assert photo.in_domain and photo.band == "high" and photo.reason is None
    assert not text_page.in_domain and text_page.band == "low"
    assert text_page.confidence <= model.calibrator.low < photo.confidence
    assert "unlike the photos the model learned from" in text_page.reason
    spoken = sentence("a dog runs", "en", text_page.band, text_page.in_domain)
    assert spoken.startswith(out_of_domain_warning()) and spoken.endswith("Maybe a dog runs.")
    assert "doesn't look like the photos I learned from" in spoken


def test_signals_need_no_calibrator():
    """``compute_signals`` takes features, captions, the domain check and the neighbour index; a model's
    ``signals`` are the same numbers, whatever its calibrator."""
    model = tiny_model()
    captions = [FakeCaption("a dog runs on the grass", -0.4), FakeCaption("a man rides a bike", -1.5),
                FakeCaption("a dog runs", -0.9)]
    features = np.array([[1.0, 0.05, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]], np.float32)
    signals = compute_signals(features, captions, model.domain, model.neighbours)
    assert signals == model.signals(features, captions) == tiny_model(score_only()).signals(features, captions)
    assert [s.score for s in signals] == [-0.4, -1.5, -0.9] and [s.in_domain for s in signals] == [True, True, False]
    assert signals[0].consensus > 1.0 and signals[1].consensus > 1.0  # each matches its neighbours' references
    expected = model.neighbours.consensus([c.text for c in captions], model.domain.project(features))
    assert [s.consensus for s in signals] == expected.tolist()
    assert [s.consensus for s in compute_signals(features, captions, model.domain)] == [0.0] * 3  # no index


def test_json_fields():
    model = tiny_model()
    features = np.array([[1.0, 0.05, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]], np.float32)
    out = [a.to_json() for a in model.assess(features, [FakeCaption("a dog runs", -0.5)] * 2)]
    text = json.dumps(out)  # plain JSON types only
    for entry in json.loads(text):
        assert set(entry) == {"confidence", "band", "in_domain", "reason"}
        assert isinstance(entry["confidence"], float) and 0 <= entry["confidence"] <= 1
        assert entry["band"] in BANDS and isinstance(entry["in_domain"], bool)
    assert out[0]["in_domain"] and out[0]["reason"] is None
    assert not out[1]["in_domain"] and isinstance(out[1]["reason"], str) and out[1]["band"] == "low"


def test_consensus_rewards_captions_that_agree_with_the_neighbours():
    model = tiny_model()
    dog_photo = np.array([[1.0, 0.05, 0.0, 0.0]], np.float32)
    [agrees] = model.signals(dog_photo, [FakeCaption("a dog runs on the grass", -1.0)])
    [disagrees] = model.signals(dog_photo, [FakeCaption("a man rides a bike", -1.0)])
    assert agrees.consensus > disagrees.consensus >= 0
    assert model.calibrator.confidence(agrees) > model.calibrator.confidence(disagrees)
    assert list(model.neighbours.nearest(model.domain.project(dog_photo))[0]) == [0, 1]


# ------------------------------------------------------------------------------------- properties

calibrators = st.builds(
    lambda coef, consensus_coef, intercept, center, scale, log: Calibrator(
        ["score", "consensus"], ["identity", "log1p" if log else "identity"], [center, 0.3], [scale, 0.7],
        [coef, consensus_coef], intercept, 0.6, 0.3),
    st.floats(0.01, 5), st.floats(0.01, 5), st.floats(-5, 5), st.floats(-3, 0), st.floats(0.05, 3), st.booleans())


@settings(max_examples=200, deadline=None)
@given(calibrators, st.floats(-30, 5), st.floats(-30, 5), st.floats(0, 10), st.booleans())
def test_confidence_is_a_probability_and_rises_with_the_score(calibrator, a, b, consensus, in_domain):
    low, high = sorted((a, b))
    c_low = calibrator.confidence(Signals(low, consensus, in_domain=in_domain))
    c_high = calibrator.confidence(Signals(high, consensus, in_domain=in_domain))
    assert 0.0 <= c_low <= 1.0 and 0.0 <= c_high <= 1.0
    assert c_low <= c_high
    assert BANDS.index(calibrator.band(c_low, in_domain)) >= BANDS.index(calibrator.band(c_high, in_domain))


@given(st.lists(st.floats(0, 1), min_size=1, max_size=50), st.data())
def test_ece_is_zero_for_matching_outcomes_and_bounded(confidences, data):
    outcomes = data.draw(st.lists(st.booleans(), min_size=len(confidences), max_size=len(confidences)))
    assert 0.0 <= expected_calibration_error(np.array(confidences), np.array(outcomes)) <= 1.0
    exact = np.array([0.0, 0.0, 1.0, 1.0])
    assert expected_calibration_error(exact, exact) == 0.0



def test_reliability_table_bins_like_the_ece():
    from captioner.pipeline.calibration_metrics import confidence_bins, reliability

    conf, good = np.array([0.05, 0.15, 0.15, 0.95, 1.0]), np.array([0.0, 1.0, 0.0, 1.0, 1.0])
    assert confidence_bins(conf).tolist() == [0, 1, 1, 9, 9]  # 1.0 is in the last bin
    rows = reliability(conf, good)
    assert [r["n"] for r in rows] == [1, 2, 0, 0, 0, 0, 0, 0, 0, 2] and rows[2]["predicted"] is None
    assert rows[1] == {"bin": "0.1-0.2", "n": 2, "predicted": 0.15, "observed": 0.5}
    expected = (1 * 0.05 + 2 * abs(0.15 - 0.5) + 2 * abs(0.975 - 1.0)) / 5
    assert expected_calibration_error(conf, good) == pytest.approx(expected)


# ---------------------------------------------------------------------------------------- storage

def test_files_round_trip_and_bad_ones_are_refused(tmp_path):
    model = tiny_model()
    model.calibrator.save(tmp_path / "c.json")
    model.domain.save(tmp_path / "d.json")
    model.neighbours.save(tmp_path / "n.json")
    again = Calibrator.load(tmp_path / "c.json")
    signals = Signals(-0.7, 0.4)
    assert again.confidence(signals) == pytest.approx(model.calibrator.confidence(signals), abs=1e-5)
    index = NeighbourIndex.load(tmp_path / "n.json")
    for name in ("shared_keys", "shared_df", "local_keys", "references_per_photo", "grams_per_reference", "entries",
                 "counts"):
        np.testing.assert_array_equal(getattr(index.references, name), getattr(model.neighbours.references, name))
    np.testing.assert_allclose(index.coords, model.neighbours.coords, atol=1e-3)
    assert DomainCheck.load(tmp_path / "d.json").threshold == pytest.approx(0.5)

    data = json.loads((tmp_path / "c.json").read_text())
    data["coef"][0] = -0.1  # confidence would fall as the score rises
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ConfidenceError, match="positive"):
        Calibrator.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    with pytest.raises(ConfidenceError, match="not a captioner calibration file"):
        Calibrator.load(tmp_path / "other.json")
    with pytest.raises(ConfidenceError, match="missing"):
        ConfidenceModel.load(tmp_path)


def test_model_folder_loads_its_files_through_relative_paths(tmp_path):
    model = tiny_model()
    folder = tmp_path / "models" / "m"
    folder.mkdir(parents=True)
    model.domain.save(tmp_path / "models" / "domain.json")
    model.neighbours.save(tmp_path / "models" / "neighbours.json")
    model.calibrator.info = {"domain_digest": domain_digest(model.domain)}
    model.calibrator.save(folder / CONFIDENCE_FILE)
    loaded = ConfidenceModel.load(folder)
    assert loaded.domain.threshold == model.domain.threshold
    model.calibrator.info = {"domain_digest": "0" * 64}  # fitted against another domain check
    model.calibrator.save(folder / CONFIDENCE_FILE)
    with pytest.raises(ConfidenceError, match="different domain.json"):
        ConfidenceModel.load(folder)


def test_a_neighbour_index_built_for_another_domain_check_is_refused(tmp_path):
    """The index records the digest of the domain check whose space its coordinates live in; a model folder
    whose shared domain.json was refitted since is refused with the rebuild command, not used silently.
    An index without the field (written before it was recorded) still loads."""
    model = tiny_model()
    root = tmp_path / "models"
    (root / "m").mkdir(parents=True)
    model.domain.save(root / "domain.json")
    model.calibrator.save(root / "m" / CONFIDENCE_FILE)
    for recorded, fails in ((domain_digest(model.domain), False), (None, False), ("f" * 64, True)):
        model.neighbours.info = {} if recorded is None else {"domain_digest": recorded}
        model.neighbours.save(root / "neighbours.json")
        if fails:
            with pytest.raises(ConfidenceError, match=r"built for another domain.json(.|\n)*" + re.escape(REBUILD_NEIGHBOURS)):
                ConfidenceModel.load(root / "m")
        else:
            assert ConfidenceModel.load(root / "m").neighbours.info == model.neighbours.info


def test_refitting_a_shared_domain_check_for_one_folder_is_refused(tmp_path):
    """Calibrating one folder with --refit-domain would rewrite the domain.json its neighbours depend on."""
    from captioner.pipeline.calibrate import CalibrationError, check_shared_refit, domain_dependents

    model = tiny_model()
    root = tmp_path / "models"
    root.mkdir()
    model.domain.save(root / "domain.json")
    for name in ("merge-a", "merge-b", "merge-c"):
        (root / name).mkdir()
        model.calibrator.save(root / name / CONFIDENCE_FILE)
    (root / "own").mkdir()  # a folder with its own domain check is not a dependent
    model.calibrator.domain_file = "domain.json"
    model.calibrator.save(root / "own" / CONFIDENCE_FILE)
    assert [f.name for f in domain_dependents(root / "domain.json")] == ["merge-a", "merge-b", "merge-c"]
    with pytest.raises(CalibrationError, match=r"shared.*merge-b, merge-c.*--all --refit-domain"):
        check_shared_refit(root / "domain.json", [root / "merge-a"])
    check_shared_refit(root / "domain.json", [root / n for n in ("merge-a", "merge-b", "merge-c")])


def test_the_calibrate_command_refuses_before_writing(tmp_path, monkeypatch):
    """``calibrate --model one --refit-domain`` stops before anything is loaded or written."""
    from types import SimpleNamespace

    from captioner.pipeline import calibrate
    from captioner.serving import encoder

    model = tiny_model()
    root = tmp_path / "models"
    root.mkdir()
    model.domain.save(root / "domain.json")
    for name in ("merge-a", "merge-b"):
        (root / name).mkdir()
        model.calibrator.save(root / name / CONFIDENCE_FILE)
        (root / name / "config.json").write_text("{}")
    before = (root / "domain.json").read_bytes()
    def too_soon(*args, **kwargs):
        raise AssertionError("the encoder was loaded before the refusal")

    monkeypatch.setattr(encoder.XceptionEncoder, "load", too_soon)
    monkeypatch.setattr("captioner.serving.model_folder.model_language", lambda folder: "en")
    args = SimpleNamespace(model=[str(root / "merge-a")], all=False, refit_domain=True, refit_neighbours=False,
                           report_only=False, no_report=True, out=str(tmp_path / "out"), data=tmp_path)
    with pytest.raises(calibrate.CalibrationError, match="merge-b"):
        calibrate.run(args)
    assert (root / "domain.json").read_bytes() == before and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------- fitting

def test_bounded_logistic_fit_matches_scikit_learn_and_keeps_coefficients_positive():
    from sklearn.linear_model import LogisticRegression

    from captioner.pipeline.calibrate import fit_calibrator, logistic_fit

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    y = rng.random(400) < 1 / (1 + np.exp(-(0.8 * x[:, 0] - 0.6 * x[:, 1])))
    reference = LogisticRegression(C=1.0).fit(x, y)
    coef, intercept = logistic_fit(x, y, min_coef=-np.inf)
    np.testing.assert_allclose(coef, reference.coef_[0], atol=1e-3)
    assert intercept == pytest.approx(reference.intercept_[0], abs=1e-3)
    bounded, _ = logistic_fit(x, y, min_coef=0.05)
    assert bounded[0] > 0.5 and bounded[1] == pytest.approx(0.05)

    score = rng.normal(-1, 0.3, 300)
    consensus = np.exp(rng.normal(-1, 0.8, 300))
    good = rng.random(300) < 1 / (1 + np.exp(-(2 * (score + 1) + np.log1p(consensus) * 3 - 1)))
    calibrator = fit_calibrator([Signals(s, c) for s, c in zip(score, consensus)], good)
    assert all(c > 0 for c in calibrator.coef) and 0 < calibrator.low < calibrator.high < 1
    bands = [calibrator.band(c) for c in calibrator.confidence([Signals(s, c) for s, c in zip(score, consensus)])]
    assert 0.25 < bands.count("high") / len(bands) < 0.35 and 0.25 < bands.count("low") / len(bands) < 0.35


def test_threshold_rule_caps_the_photos_flagged():
    from captioner.pipeline.calibrate import choose_threshold

    rng = np.random.default_rng(1)
    photos, nonphotos = rng.normal(0.5, 0.05, 2000), rng.normal(0.9, 0.1, 300)
    t = choose_threshold(photos, nonphotos, max_photo=0.025)
    assert np.mean(photos > t) <= 0.025 and np.mean(nonphotos > t) > 0.95



def test_fitting_builds_its_design_from_the_serving_transform():
    """The calibrator fitted on signals applies exactly the standardisation it was fitted with: its
    centre and scale are the mean and spread of the serving-side transformed signals."""
    from captioner.pipeline.calibrate import fit_calibrator
    from captioner.serving.calibrator import signal_matrix, transform_signals

    rng = np.random.default_rng(2)
    signals = [Signals(float(s), float(c)) for s, c in zip(rng.normal(-1.5, 0.5, 200), rng.gamma(1.0, 1.0, 200))]
    good = np.array([s.score + 0.5 * np.log1p(s.consensus) > -1.2 for s in signals])
    calibrator = fit_calibrator(signals, good)
    x = transform_signals(signal_matrix(signals, ["score", "consensus"]), ["identity", "log1p"])
    np.testing.assert_allclose(calibrator.center, x.mean(axis=0))
    np.testing.assert_allclose(calibrator.scale, x.std(axis=0))
    np.testing.assert_allclose(x[:, 1], np.log1p([s.consensus for s in signals]))


def test_calibration_problems_are_exceptions_the_command_line_reports(monkeypatch, capsys):
    """Library code raises CalibrationError and logs its progress; only the command line prints and exits."""
    from types import SimpleNamespace

    from captioner.cli import main
    from captioner.pipeline import calibrate

    check = DomainCheck(np.zeros(3, np.float32), np.eye(3, dtype=np.float32), 0.5, encoder="other-weights")
    with pytest.raises(calibrate.CalibrationError, match="--refit-domain"):
        calibrate.refit_neighbours(SimpleNamespace(cache_key="these-weights"), None, check, [])

    def failing(args, report=None):
        calibrate.log("neighbours: 10 training photos (2 held out)")
        report("## a report")
        raise calibrate.CalibrationError("models/m: no tune_images.txt; the calibration needs training images")

    monkeypatch.setattr(calibrate, "run", failing)
    assert main(["calibrate", "--model", "models/m"]) == 2
    out, err = capsys.readouterr()
    assert out == "## a report\n\n"
    assert err.splitlines() == ["neighbours: 10 training photos (2 held out)",
                                "error: models/m: no tune_images.txt; the calibration needs training images"]


# ---------------------------------------------------------------------------------- shipped files

def _shipped():
    from captioner.serving.model_folder import available_models

    return available_models(ROOT / "models")


@pytest.mark.parametrize("folder", _shipped(), ids=lambda p: p.name)
def test_every_shipped_model_has_a_calibration(folder):
    model = ConfidenceModel.load(folder)
    calibrator = model.calibrator
    assert calibrator.features[0] == "score" and all(c > 0 for c in calibrator.coef)
    assert 0 < calibrator.low < calibrator.high < 1
    assert calibrator.good["threshold"] == 0.4
    assert (ROOT / "models" / "domain.json").stat().st_size < 2_000_000
    assert (ROOT / "models" / "neighbours.json").stat().st_size < 6_000_000
    a = calibrator.assess(Signals(score=-0.3, consensus=2.0))
    assert isinstance(a, Assessment) and a.band in BANDS


_CALIBRATORS = [Calibrator.load(f / CONFIDENCE_FILE) for f in _shipped() if (f / CONFIDENCE_FILE).is_file()]


@pytest.mark.skipif(not _CALIBRATORS, reason="no shipped confidence.json yet")
@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_CALIBRATORS or [score_only()]), st.floats(-20, 1), st.floats(-20, 1), st.floats(0, 10),
       st.booleans())
def test_shipped_confidence_is_a_probability_and_monotone_in_the_score(calibrator, a, b, consensus, in_domain):
    low, high = sorted((a, b))
    c_low, c_high = (calibrator.confidence(Signals(s, consensus, in_domain=in_domain)) for s in (low, high))
    assert 0.0 <= c_low <= c_high <= 1.0


# ------------------------------------------------------------------------ neighbour index: hashed references

PHOTOS = [  # synthetic references: shared and one-photo n-grams, repeats within a caption and across captions
    ["a black dog runs through the snow", "a dog is running in the snow", "the black dog plays in snow"],
    ["a brown dog runs on the beach", "a dog runs along the beach", "dog dog dog on the beach"],
    ["a man rides a bicycle down a hill", "a cyclist rides down a dirt hill"],
    ["two children splash in a swimming pool", "kids swimming in a pool", "two children in the pool"],
    ["a skateboarder jumps over a railing", "a boy on a skateboard does a trick", "skateboarder performing trick"],
    ["a woman in a red jacket climbs a rock", "a climber scales a rock face"],
]
COORDS = np.array([[1.0, 0.1, 0.0], [0.9, 0.3, 0.0], [0.0, 1.0, 0.2], [0.1, 0.2, 1.0], [0.0, 0.9, 0.4],
                   [0.2, 0.8, 0.1]])
CANDIDATES = ["a black dog runs in the snow", "a dog runs on the beach", "a man rides a skateboard down a hill",
              "two kids in a swimming pool", "zebra quartet harmonica", "", "dog dog dog dog",
              "a climber in a red jacket", "the the the the the"]


def plain_text_consensus(references, coords, k, captions, query):
    """The consensus as plain text CIDEr-D computes it: document frequencies over every photo's captions,
    the caption against the pooled captions of the k photos nearest to the query."""
    cider = CiderD(references)
    unit = coords / np.linalg.norm(coords, axis=1, keepdims=True)
    out = []
    for caption, q in zip(captions, query):
        sims = unit @ (q / np.linalg.norm(q))
        nearest = np.argsort(-sims, kind="stable")[:k]
        pooled = [r for j in nearest for r in references[j]]
        out.append(cider.score(caption, cider.prepare(pooled)) if caption.strip() else 0.0)
    return np.array(out)


def test_gram_hash_is_blake2b_of_the_words():
    import hashlib

    digest = hashlib.blake2b(b"a black dog", digest_size=8).digest()
    assert gram_hash(("a", "black", "dog")) == int.from_bytes(digest, "little") < 2 ** 64
    assert gram_hash(["dog"]) != gram_hash(["dogs"])


@pytest.mark.parametrize("local_bits", [32, 6])  # 6 bits: many one-photo n-grams clash and are listed as shared
def test_hashed_consensus_equals_plain_text_cider_d(tmp_path, local_bits):
    rng = np.random.default_rng(0)
    query = np.r_[COORDS, rng.normal(size=(len(CANDIDATES) - len(COORDS), 3))]
    index = NeighbourIndex(COORDS, HashedReferences.from_captions(PHOTOS, local_bits=local_bits), k=3)
    # with 6 bits only the n-grams of the references are safe from look-alikes: score references themselves
    captions = CANDIDATES if local_bits == 32 else [refs[0] for refs in PHOTOS] + ["", PHOTOS[4][2], PHOTOS[1][2]]
    expected = plain_text_consensus(PHOTOS, index.coords, 3, captions, query)
    assert expected.max() > 1.0 and (expected == 0).any()
    assert np.array_equal(index.consensus(captions, query), expected)  # the same float arithmetic: exactly equal
    index.save(tmp_path / "n.json")
    again = NeighbourIndex.load(tmp_path / "n.json")
    np.testing.assert_allclose(again.consensus(captions, query), expected, rtol=1e-6)  # float16 coordinates
    if local_bits == 6:
        assert index.references.stats["local_bits_clashes_listed_as_shared"] > 0
    # the scorer keyed by hashes gives the text scorer's numbers
    hashed, plain = CiderD(PHOTOS, key=gram_hash), CiderD(PHOTOS)
    for caption in CANDIDATES[:5]:
        assert hashed.score(caption, hashed.prepare(PHOTOS[0])) == plain.score(caption, plain.prepare(PHOTOS[0]))


def _strings(value):
    """Every key and string value of a JSON document."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def test_the_calibration_writer_saves_no_caption_text(tmp_path):
    """``pipeline/calibrate.neighbour_index`` (what writes models/neighbours.json) stores hashed n-gram counts."""
    from captioner.pipeline.calibrate import neighbour_index

    domain = DomainCheck(np.zeros(3, np.float32), np.eye(3, dtype=np.float32), threshold=0.5)
    names = [f"photo{i}.jpg" for i in range(len(PHOTOS))]
    captions = dict(zip(names, PHOTOS)) | {"held.jpg": ["a held out photo of a lighthouse"]}
    index = neighbour_index(domain, names, COORDS.astype(np.float32), captions, ["held.jpg"])
    index.save(tmp_path / "neighbours.json")
    text = (tmp_path / "neighbours.json").read_text()
    data = json.loads(text)
    assert data["version"] == 2 and data["references"]["form"].startswith("hashed n-gram counts")
    words = {w for refs in captions.values() for r in refs for w in r.split()}
    assert not words & set(_strings(data))  # no key or value is a caption word
    for long_word in (w for w in words if len(w) >= 8):  # nor does a distinctive word appear anywhere
        assert long_word not in text
    assert data["info"]["held_out"] == ["held.jpg"] and data["info"]["photos"] == len(PHOTOS)
    loaded = NeighbourIndex.load(tmp_path / "neighbours.json")
    query = COORDS[:3] + 0.05
    np.testing.assert_allclose(loaded.consensus(CANDIDATES[:3], query),
                               plain_text_consensus(PHOTOS, loaded.coords, 25, CANDIDATES[:3], query), rtol=1e-12)


def test_old_or_broken_neighbour_files_are_refused_with_the_rebuild_command(tmp_path):
    from captioner.serving.domain import encode_array

    old = {"format": "captioner-neighbours", "version": 1, "k": 25, "info": {},
           "coords": encode_array(COORDS, "float16"), "references": PHOTOS}
    (tmp_path / "neighbours.json").write_text(json.dumps(old))
    with pytest.raises(ConfidenceError) as err:
        NeighbourIndex.load(tmp_path / "neighbours.json")
    message = str(err.value)
    assert str(tmp_path / "neighbours.json") in message and "version 1" in message and "caption" in message
    assert REBUILD_NEIGHBOURS in message and "--refit-neighbours" in message

    index = NeighbourIndex.from_captions(COORDS, PHOTOS, k=3)
    data = index.to_json()
    data["references"]["entries"]["shape"] = [3]  # a truncated stream
    (tmp_path / "broken.json").write_text(json.dumps(data))
    with pytest.raises(ConfidenceError, match="unreadable"):
        NeighbourIndex.load(tmp_path / "broken.json")
    data = index.to_json()
    data["references"]["local_keys"] = data["references"]["counts"]  # arrays that do not agree
    (tmp_path / "mismatch.json").write_text(json.dumps(data))
    with pytest.raises(ConfidenceError, match="unreadable"):
        NeighbourIndex.load(tmp_path / "mismatch.json")


def _texts(value, path=()):
    """(path, string) for every string value that contains a space (text rather than a name or base64)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _texts(v, path + (k,))
    elif isinstance(value, list):
        for v in value:
            yield from _texts(v, path + ("[]",))
    elif isinstance(value, str) and " " in value:
        yield path, value


def test_shipped_neighbour_index_holds_no_caption_text():
    data = json.loads((ROOT / "models" / "neighbours.json").read_text())
    assert data["version"] == 2 and isinstance(data["references"], dict)
    assert data["references"]["stats"]["full_key_collisions"] == 0
    # the only text is the format's own description (a caption would be a string with spaces elsewhere)
    assert {path for path, _ in _texts(data)} == {("info", "space"), ("references", "form"), ("references", "hash"),
                                                  ("references", "entry_layout")}
