"""Fit and measure the honest-caption parts: calibrated confidence, bands and the out-of-domain check.

    python -m captioner calibrate --model models/merge-ensemble [--data DIR] [--out DIR]
    python -m captioner calibrate --all            # every model folder of the models root
    python -m captioner calibrate --all --report-only
    python -m captioner calibrate --all --refit-neighbours   # rebuild neighbours.json only
    python -m captioner calibrate --model models/merge-de --tune-rerank   # choose the ranking, then fit

**Ranking**: a folder whose decoding.json says ``"rerank": "consensus"`` orders its beam's captions by the
neighbour consensus (``serving/rerank.py``), so every caption calibrated and measured here is ranked with
this root's neighbour index. ``--tune-rerank`` first chooses that ranking on the held-out images
(``evaluate.tune_rerank``: score or consensus, by the balanced rule) and stores it in decoding.json.

**What "good" means** (fixed before anything was measured on dev): a caption is *good* when its
per-image CIDEr-D against the image's five references is at least ``GOOD_CIDER`` = 0.4, with CIDEr-D as
pycocoevalcap computes it but with document frequencies from the training references
(``serving.cider.CiderD``, the SCST reward too), so an image's score does not
depend on which other images are scored with it (pycocoevalcap's own per-image CIDEr takes its document
frequencies from the evaluated set, so its scale changes with the set's size). Why 0.4: reading the held-out training images' captions ranked by this
score, from about 0.4 up the caption names the main subject and what it is doing as the references do
("a man in a wetsuit is surfing in the ocean" for a boy jumping off a body board into the ocean);
between 0.2 and 0.4 it is half right (the right subject doing the wrong thing, or only a vague "a man on
a motorcycle"), and below 0.2 mostly wrong or generic ("a group of people sit on a bench" for three
people in massage chairs). Each model's share of good held-out captions
is in its card and in docs/CONFIDENCE.md.

**Fitting** uses only training images: the domain check and the neighbour index on the training photos
(minus the held-out ones; the index stores their reference captions as hashed n-gram counts, no caption
text: ``serving.neighbours.HashedReferences``), the threshold on the held-out photos plus out-of-fold
training photos against generated non-photos (``nonphotos.THRESHOLD_SEED``), and the calibrator and band
thresholds on the model folder's ``tune_images.txt`` (300 training images held out from the decoder's
training), decoded with the folder's default settings (beam 3, its tuned length exponent).

* Domain check (``serving/domain.py``): PCA (scikit-learn) with ``N_COMPONENTS`` directions on the
  unit-length pooled features of the training photos; distance = residual. Threshold: among the
  thresholds that flag at most ``MAX_PHOTO_FLAGGED`` of held-out photos, the one that maximises (share of
  threshold-set non-photos flagged) minus (share of held-out photos flagged).
* Signals: the caption's length-normalised log-probability ("score") and the nearest-neighbour
  consensus (CIDEr-D against the references of the ``NEIGHBOURS`` nearest training photos). Measured on
  the held-out images and not kept: agreement among the beam's 3-best (no information: its 3-best differ
  by a word or two), the agreement with the caption of a mirrored copy (no gain, and it doubles the
  encoder's cost), caption length, the domain distance (no gain on photos; it rules the band instead),
  per-word minimum probability and entropy, and the agreement with 10 sampled captions (a small gain
  over score + consensus, within the noise of 300 images, for ten decodes per picture).
* Calibrator: L2-penalised logistic regression (scikit-learn's objective with C=1; fitted with scipy's
  L-BFGS-B so that every coefficient can be bounded below by ``MIN_COEF``) on the standardised score and
  log(1 + consensus). The bound keeps the confidence rising with the score for a fixed consensus: given
  the consensus the score adds little, and an unconstrained fit could give it a small negative weight.
* Bands: "high" from the confidence above which ``BAND_SHARE`` of the held-out images lie, "low" below
  the one under which ``BAND_SHARE`` lie (two decimals); out-of-domain pictures are always "low".

**Reporting** (dev, never used for fitting): a reliability table over 10 equal-width bins, expected
calibration error, each band's share of images and mean per-image CIDEr-D (both the fixed-document-
frequency score that defines "good" and pycocoevalcap's per-image CIDEr over the dev set), and for the
domain check the share flagged among dev photos and among held-back generated non-photos
(``nonphotos.REPORT_SEED``) with the ROC AUC between them. Written as markdown (stdout), a JSON summary
and a reliability plot under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..serving.assessment import Signals
from ..serving.calibrator import Calibrator, signal_matrix, transform_signals
from ..serving.cider import CiderD
from ..serving.confidence import ConfidenceModel, compute_signals
from ..serving.domain import DomainCheck, domain_digest, unit_rows
from ..serving.model_folder import CONFIDENCE_FILE, DOMAIN_FILE, NEIGHBOURS_FILE
from ..serving.neighbours import NeighbourIndex
from ..serving.rerank import ConsensusRanker
from .calibration_metrics import expected_calibration_error, reliability
from .nonphotos import REPORT_SEED, THRESHOLD_SEED

GOOD_CIDER = 0.4
GOOD = {"metric": "per-image CIDEr-D, document frequencies from the training references "
                  "(captioner.serving.cider.CiderD)",
        "threshold": GOOD_CIDER,
        "rule": "good when per-image CIDEr-D >= 0.4",
        "why": "from about 0.4 up a held-out caption names the main subject and its activity as the references "
               "do; 0.2-0.4 is half right, below 0.2 mostly wrong or generic (fixed before looking at dev)"}
N_COMPONENTS = 128
NEIGHBOURS = 25
NONPHOTOS = 240  # per set: 20 of each of the 12 kinds
MAX_PHOTO_FLAGGED = 0.025
BAND_SHARE = 0.30
FEATURES, TRANSFORMS = ("score", "consensus"), ("identity", "log1p")
MIN_COEF = 0.05  # on standardised signals: confidence always rises with the score, if only a little
FOLDS = 5
SEED = 0

log = logging.getLogger(__name__).info  # progress lines (the command line shows them on stderr)


class CalibrationError(ValueError):
    """Calibration cannot run as asked (missing held-out images or shared files, mismatched encoder);
    the message says which file and how to fix it."""


# ------------------------------------------------------------------------------------------ features

def pooled_for(encoder, dataset, names: list[str]) -> tuple[list[str], np.ndarray]:
    from .features import extract_features

    ex = extract_features(encoder, [dataset.image_path(n) for n in names], kind="pooled")
    return ex.names, ex.features.astype(np.float32)


def nonphoto_features(encoder, seed: int, n: int = NONPHOTOS) -> tuple[list[str], np.ndarray]:
    """Generated non-photos (written once under the cache folder, never into the repository) and their
    pooled features (cached by content like any picture)."""
    from ..serving.weights import cache_dir
    from .features import extract_features
    from .nonphotos import write_set

    written = write_set(cache_dir() / "nonphotos" / str(seed), n, seed)
    ex = extract_features(encoder, [p for _, p in written], kind="pooled", progress=False)
    kinds = {p.name: k for k, p in written}
    return [kinds[name] for name in ex.names], ex.features.astype(np.float32)


# ------------------------------------------------------------------------------------- domain check

def fit_subspace(features: np.ndarray, n_components: int = N_COMPONENTS) -> DomainCheck:
    """PCA of the unit-length features (threshold left at 1 until chosen)."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=n_components, svd_solver="full").fit(unit_rows(features).astype(np.float64))
    return DomainCheck(pca.mean_.astype(np.float32), pca.components_.astype(np.float32), 1.0)


def stored(check: DomainCheck) -> DomainCheck:
    """The check as it will be read back from JSON (float16 directions), so thresholds match serving."""
    return DomainCheck.from_json(json.loads(json.dumps(check.to_json())))


def choose_threshold(photo: np.ndarray, nonphoto: np.ndarray, max_photo: float = MAX_PHOTO_FLAGGED) -> float:
    """Among thresholds flagging at most ``max_photo`` of the photos, the one maximising
    (non-photos flagged) - (photos flagged); midway between neighbouring distances."""
    values = np.unique(np.r_[photo, nonphoto])
    candidates = (values[:-1] + values[1:]) / 2
    best, best_j = float(values[-1]), -1.0
    for t in candidates:
        fp = np.mean(photo > t)
        if fp > max_photo:
            continue
        j = np.mean(nonphoto > t) - fp
        if j > best_j + 1e-12:
            best, best_j = float(t), j
    return best


def fit_domain(encoder, dataset, held_out: list[str], folds: int = FOLDS) -> tuple[DomainCheck, NeighbourIndex]:
    """The domain check and the neighbour index, from the training photos minus ``held_out``."""
    from sklearn.model_selection import KFold

    held = set(held_out)
    train_names, train = pooled_for(encoder, dataset, [n for n in dataset.split_names("train") if n not in held])
    tune_names, tune = pooled_for(encoder, dataset, [n for n in held_out if n in dataset.captions])
    log(f"domain: fitting on {len(train)} training photos ({len(tune)} held out)")
    out_of_fold = np.zeros(len(train), np.float32)
    for fit_rows, test_rows in KFold(folds, shuffle=True, random_state=SEED).split(train):
        out_of_fold[test_rows] = stored(fit_subspace(train[fit_rows])).distance(train[test_rows])
    check = stored(fit_subspace(train))
    kinds, nonphotos = nonphoto_features(encoder, THRESHOLD_SEED)
    photo = np.r_[out_of_fold, check.distance(tune)]
    nonphoto = check.distance(nonphotos)
    check.threshold = choose_threshold(photo, nonphoto)
    check.encoder = encoder.cache_key
    check.info = {
        "fitted_on": f"{len(train)} Flickr8k training photos (the {len(tune)} held-out images excluded)",
        "components": int(check.components.shape[0]),
        "threshold_rule": f"max (non-photos flagged - photos flagged) with at most {MAX_PHOTO_FLAGGED:.1%} of "
                          "held-out photos flagged",
        "threshold_photos": f"{len(out_of_fold)} training photos out-of-fold ({folds}-fold) + {len(tune)} held-out",
        "threshold_nonphotos": f"{len(nonphotos)} generated non-photos, seed {THRESHOLD_SEED}",
        "photos_flagged": round(float(np.mean(photo > check.threshold)), 4),
        "held_out_photos_flagged": round(float(np.mean(check.distance(tune) > check.threshold)), 4),
        "nonphotos_flagged": round(float(np.mean(nonphoto > check.threshold)), 4),
        "photo_distance_percentiles": {str(q): round(float(np.percentile(photo, q)), 4) for q in (50, 90, 95, 99)},
    }
    return check, neighbour_index(check, train_names, train, dataset.captions, tune_names)


def neighbour_index(check: DomainCheck, names: list[str], features: np.ndarray, captions: dict[str, list[str]],
                    held_out: list[str]) -> NeighbourIndex:
    """The neighbour index of the training photos ``names``: their pooled ``features`` projected on the
    domain check's subspace, and their reference captions (from ``captions``) as hashed n-gram counts."""
    coords = check.project(features)
    return NeighbourIndex.from_captions(
        coords, [captions[n] for n in names], NEIGHBOURS,
        {"photos": len(names), "held_out": sorted(held_out), "domain_digest": domain_digest(check),
         "space": f"unit pooled features projected on the domain check's {coords.shape[1]} directions; "
                  "cosine similarity"})


def refit_neighbours(encoder, dataset, check: DomainCheck, held_out: list[str]) -> NeighbourIndex:
    """The neighbour index for a stored domain check, from the same photos as ``fit_domain`` (the
    training photos minus ``held_out``); nothing else is refitted, so the calibrations stay valid."""
    if check.encoder and check.encoder != encoder.cache_key:
        raise CalibrationError(f"the domain check was fitted on features of encoder {check.encoder}, not "
                               f"{encoder.cache_key}; refit everything with --refit-domain")
    held = set(held_out)
    train_names, train = pooled_for(encoder, dataset, [n for n in dataset.split_names("train") if n not in held])
    tune_names, _ = pooled_for(encoder, dataset, [n for n in held_out if n in dataset.captions])
    log(f"neighbours: {len(train_names)} training photos ({len(tune_names)} held out)")
    return neighbour_index(check, train_names, train, dataset.captions, tune_names)


# ----------------------------------------------------------------------------------------- decoding

def decode(captioner, dataset, names: list[str], batch: int = 64):
    """Each image's best caption (the folder's default decoding) and its pooled features."""
    from .features import extract_features

    ex = extract_features(captioner.encoder, [dataset.image_path(n) for n in names], kind=captioner.feature_kind)
    decode_config = captioner.default_decode()
    captions = []
    for i in range(0, len(ex.names), batch):
        chunk = ex.features[i:i + batch].astype(np.float32)
        captions += [c[0] for c in captioner.caption_features(chunk, decode_config)]
    pooled_names, pooled = pooled_for(captioner.encoder, dataset, ex.names)
    assert pooled_names == ex.names
    return ex.names, captions, pooled


def cider_scores(dataset, names: list[str], texts: list[str], scorer=None) -> np.ndarray:
    """Per-image CIDEr-D with training-reference document frequencies (the definition of "good")."""
    scorer = scorer or CiderD([dataset.captions[n] for n in dataset.split_names("train")])
    return np.array([scorer.score(t, scorer.prepare(dataset.captions[n])) for n, t in zip(names, texts)])


def coco_cider(dataset, names: list[str], texts: list[str]) -> np.ndarray:
    """pycocoevalcap's per-image CIDEr-D over this set (document frequencies from the set's references)."""
    from pycocoevalcap.cider.cider import Cider

    gts = {n: dataset.captions[n] for n in names}
    res = {n: [t or "<empty>"] for n, t in zip(names, texts)}
    _, each = Cider().compute_score(gts, res)  # scores in the dicts' key order
    by_name = dict(zip(gts, map(float, each)))
    return np.array([by_name[n] for n in names])


# --------------------------------------------------------------------------------------- calibrator

def logistic_fit(x: np.ndarray, y: np.ndarray, min_coef: float = MIN_COEF, c: float = 1.0) -> tuple[np.ndarray, float]:
    """L2-penalised logistic regression (scikit-learn's objective, ``C * sum(log loss) + |w|^2 / 2``, the
    intercept unpenalised) with every coefficient bounded below by ``min_coef``: scipy's L-BFGS-B. Without
    a binding bound it gives scikit-learn's LogisticRegression(C=c) solution (checked in the tests)."""
    from scipy.optimize import minimize
    from scipy.special import expit, log_expit

    y = y.astype(np.float64)

    def objective(params):
        w, b = params[:-1], params[-1]
        logit = x @ w + b
        loss = -(y * log_expit(logit) + (1 - y) * log_expit(-logit)).sum()
        p = expit(logit)
        grad = np.r_[c * (x.T @ (p - y)) + w, c * (p - y).sum()]
        return c * loss + 0.5 * w @ w, grad

    start = np.r_[np.full(x.shape[1], max(min_coef, 0.5)), 0.0]
    bounds = [(min_coef, None)] * x.shape[1] + [(None, None)]
    result = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds,
                      options={"maxiter": 1000, "gtol": 1e-9})
    return result.x[:-1], float(result.x[-1])


def fit_calibrator(signals: list[Signals], good: np.ndarray, features=FEATURES, transforms=TRANSFORMS,
                   band_share: float = BAND_SHARE) -> Calibrator:
    """Logistic regression on the standardised (transformed) signals, coefficients at least ``MIN_COEF``
    (so confidence rises with every signal), then band thresholds from the held-out confidences."""
    features, transforms = list(features), list(transforms)
    raw = signal_matrix(signals, features)
    x = transform_signals(raw, transforms)
    center, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    coef, intercept = logistic_fit((x - center) / scale, np.asarray(good))
    calibrator = Calibrator(features, transforms, center.tolist(), scale.tolist(), coef.tolist(), intercept,
                            1.0, 0.0, dict(GOOD))
    conf = calibrator.confidence_from_matrix(raw)
    calibrator.high = round(float(np.quantile(conf, 1 - band_share)), 2)
    calibrator.low = round(float(np.quantile(conf, band_share)), 2)
    return calibrator


def cross_validated(signals: list[Signals], good: np.ndarray, folds: int = FOLDS, repeats: int = 5) -> np.ndarray:
    """Out-of-fold confidences on the held-out images (averaged over repeats): honest in-sample figures."""
    from sklearn.model_selection import StratifiedKFold

    out = np.zeros(len(signals))
    for r in range(repeats):
        for fit_rows, test_rows in StratifiedKFold(folds, shuffle=True, random_state=r).split(np.zeros(len(good)),
                                                                                            good):
            cal = fit_calibrator([signals[i] for i in fit_rows], good[fit_rows])
            out[test_rows] += cal.confidence_from_matrix(cal.matrix([signals[i] for i in test_rows]))
    return out / repeats


# ---------------------------------------------------------------------------------------- reporting

def band_table(bands: list[str], cider: np.ndarray, coco: np.ndarray | None, good: np.ndarray) -> dict:
    bands = np.array(bands)
    table = {}
    for band in ("high", "medium", "low"):
        mask = bands == band
        table[band] = {"share": round(float(mask.mean()), 4), "n": int(mask.sum()),
                       "mean_cider_d": round(float(cider[mask].mean()), 4) if mask.any() else None,
                       "mean_coco_cider": round(float(coco[mask].mean()), 4) if mask.any() and coco is not None
                       else None,
                       "good_share": round(float(good[mask].mean()), 4) if mask.any() else None}
    for key in ("mean_cider_d", "mean_coco_cider"):
        hi, lo = table["high"][key], table["low"][key]
        table[f"high_over_low_{key}"] = round(hi / lo, 3) if hi is not None and lo else None
    return table


def assess_split(model: ConfidenceModel, dataset, names, captions, pooled, scorer) -> dict:
    texts = [c.tokens for c in captions]
    signals = model.signals(pooled, captions)
    conf = model.calibrator.confidence(signals)
    bands = [model.calibrator.band(c, s.in_domain) for c, s in zip(conf, signals)]
    cider = cider_scores(dataset, names, texts, scorer)
    good = (cider >= model.calibrator.good.get("threshold", GOOD_CIDER)).astype(float)
    return {"names": names, "texts": texts, "signals": signals, "confidence": conf, "bands": bands,
            "cider": cider, "good": good}


def plot_reliability(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=110)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    pts = [(r["predicted"], r["observed"], r["n"]) for r in rows if r["n"]]
    ax.plot([p for p, _, _ in pts], [o for _, o, _ in pts], marker="o", label="dev")
    for p, o, n in pts:
        ax.annotate(str(n), (p, o), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted chance of a good caption")
    ax.set_ylabel("observed share of good captions")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def markdown(summary: dict) -> str:
    d, dom = summary["dev"], summary["domain"]
    lines = [f"## {summary['model']}: confidence on dev ({d['n']} photos)", "",
             f"Good = {summary['good']['rule']}; {d['good_share']:.1%} of dev captions are good. "
             f"ECE {d['ece']:.4f} (10 bins; held-out, cross-validated: {summary['held_out']['ece_cv']:.4f}).", "",
             "| confidence | images | predicted | observed good |", "|---|---:|---:|---:|"]
    for r in d["reliability"]:
        pred = "" if r["predicted"] is None else f"{r['predicted']:.3f}"
        obs = "" if r["observed"] is None else f"{r['observed']:.3f}"
        lines.append(f"| {r['bin']} | {r['n']} | {pred} | {obs} |")
    b = d["bands"]
    lines += ["", f"Bands (high >= {summary['bands']['high']}, low < {summary['bands']['low']}):", "",
              "| band | share | good | mean CIDEr-D (train df) | mean CIDEr-D (pycocoevalcap, dev) |",
              "|---|---:|---:|---:|---:|"]
    for band in ("high", "medium", "low"):
        r = b[band]
        fmt = (lambda v: "" if v is None else f"{v:.3f}")
        lines.append(f"| {band} | {r['share']:.1%} | {fmt(r['good_share'])} | {fmt(r['mean_cider_d'])} | "
                     f"{fmt(r['mean_coco_cider'])} |")
    lines += ["", f"high / low mean CIDEr-D: {b['high_over_low_mean_cider_d']}x (train df), "
                  f"{b['high_over_low_mean_coco_cider']}x (pycocoevalcap); raw-score terciles on dev: "
                  f"{d['score_terciles_ratio']}x", "",
              f"## Out-of-domain check (threshold {dom['threshold']:.4f})", "",
              "| set | pictures | flagged |", "|---|---:|---:|",
              f"| dev photos | {dom['dev_photos']} | {dom['dev_flagged']:.1%} |",
              f"| held-back generated non-photos (seed {dom['report_seed']}) | {dom['nonphotos']} | "
              f"{dom['nonphotos_flagged']:.1%} |"]
    if dom.get("originals") is not None:
        lines.append(f"| dev originals at full resolution | {dom['originals']} | {dom['originals_flagged']:.1%} |")
    lines += ["", f"ROC AUC (dev photos vs held-back non-photos): {dom['roc_auc']:.4f}", "",
              "| non-photo kind | flagged |", "|---|---:|"]
    lines += [f"| {k} | {v:.0%} |" for k, v in dom["nonphotos_flagged_by_kind"].items()]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- main

def calibrate_folder(captioner, dataset, domain: DomainCheck, index: NeighbourIndex, scorer) -> tuple[Calibrator,
                                                                                                       dict]:
    from ..serving.model_folder import read_tune_images

    folder = Path(captioner.checkpoint.folder)
    tune = [n for n in read_tune_images(folder) if n in dataset.captions]
    if not tune:
        raise CalibrationError(f"{folder}: no tune_images.txt; the calibration needs training images held out from "
                               "training")
    leaked = set(tune) - set(index.info.get("held_out", []))
    if leaked:
        raise CalibrationError(f"{folder}: {len(leaked)} of its held-out images are in the neighbour index; refit "
                               "the shared files with --refit-domain")
    names, captions, pooled = decode(captioner, dataset, tune)
    signals = compute_signals(pooled, captions, domain, index)
    cider = cider_scores(dataset, names, [c.tokens for c in captions], scorer)
    good = cider >= GOOD_CIDER
    calibrator = fit_calibrator(signals, good)
    cv = cross_validated(signals, good)
    conf = calibrator.confidence(signals)
    bands = [calibrator.band(c, s.in_domain) for c, s in zip(conf, signals)]
    score = np.array([s.score for s in signals])
    terciles = np.quantile(score, [1 / 3, 2 / 3])
    held_out = {"n": len(names), "good_share": round(float(good.mean()), 4),
                "ece_in_sample": round(expected_calibration_error(conf, good), 4),
                "ece_cv": round(expected_calibration_error(cv, good), 4),
                "bands": band_table(bands, cider, None, good.astype(float)),
                "score_terciles_ratio": round(float(cider[score >= terciles[1]].mean() / cider[score < terciles[0]]
                                                    .mean()), 3)}
    default = captioner.default_decode()  # how the held-out captions above were decoded
    calibrator.info = {"fitted_on": f"{len(names)} training images held out from training ({folder.name}/"
                                    "tune_images.txt)",
                       "decoding": {"beam_width": default.beam_width, "length_alpha": default.length_alpha,
                                    "rerank": captioner.reranking(default)},
                       "band_rule": f"high/low: the {BAND_SHARE:.0%} most/least confident held-out images",
                       "held_out": {k: v for k, v in held_out.items() if k != "bands"},
                       "domain_digest": domain_digest(domain),
                       "tool": f"L2 logistic regression (C=1, scipy L-BFGS-B), coefficients >= {MIN_COEF}"}
    return calibrator, held_out


def report_folder(captioner, dataset, model: ConfidenceModel, scorer, encoder, report_nonphotos) -> dict:
    from sklearn.metrics import roc_auc_score

    names, captions, pooled = decode(captioner, dataset, dataset.split_names("dev"))
    dev = assess_split(model, dataset, names, captions, pooled, scorer)
    coco = coco_cider(dataset, names, dev["texts"])
    score = np.array([s.score for s in dev["signals"]])
    terciles = np.quantile(score, [1 / 3, 2 / 3])
    kinds, nonphoto = report_nonphotos
    photo_d, nonphoto_d = model.domain.distance(pooled), model.domain.distance(nonphoto)
    flagged = nonphoto_d > model.domain.threshold
    by_kind = {k: float(np.mean(flagged[np.array(kinds) == k])) for k in dict.fromkeys(kinds)}
    originals = dataset.image_dir.parent / "originals"
    orig_flagged = orig_n = None
    if originals.is_dir():
        from .features import extract_features

        ex = extract_features(encoder, sorted(originals.glob("*.jpg")), kind="pooled", progress=False)
        orig_n = len(ex.names)
        orig_flagged = float(np.mean(model.domain.distance(ex.features) > model.domain.threshold)) if orig_n else None
    return {
        "dev": {"n": len(names), "good_share": round(float(dev["good"].mean()), 4),
                "ece": round(expected_calibration_error(dev["confidence"], dev["good"]), 4),
                "reliability": reliability(dev["confidence"], dev["good"]),
                "bands": band_table(dev["bands"], dev["cider"], coco, dev["good"]),
                "mean_confidence": round(float(np.mean(dev["confidence"])), 4),
                "score_terciles_ratio": round(float(coco[score >= terciles[1]].mean() / coco[score < terciles[0]]
                                                    .mean()), 3)},
        "domain": {"threshold": model.domain.threshold, "dev_photos": len(names),
                   "dev_flagged": float(np.mean(photo_d > model.domain.threshold)),
                   "nonphotos": len(nonphoto), "nonphotos_flagged": float(flagged.mean()),
                   "report_seed": REPORT_SEED, "nonphotos_flagged_by_kind": by_kind,
                   "roc_auc": float(roc_auc_score(np.r_[np.zeros(len(photo_d)), np.ones(len(nonphoto_d))],
                                                  np.r_[photo_d, nonphoto_d])),
                   "originals": orig_n, "originals_flagged": orig_flagged},
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The calibration command's flags (also ``python -m captioner calibrate``)."""
    parser.add_argument("--model", action="append", default=[], help="model folder (repeatable)")
    parser.add_argument("--all", action="store_true", help="every model folder of the models root")
    parser.add_argument("--data", default=None, help="dataset folder (default: CAPTIONER_DATA or ../shared/flickr8k)")
    parser.add_argument("--out", default="runs/calibration", help="where the reports go (JSON, PNG, markdown)")
    parser.add_argument("--refit-domain", action="store_true",
                        help=f"refit the shared {DOMAIN_FILE} and {NEIGHBOURS_FILE} even when present")
    parser.add_argument("--refit-neighbours", action="store_true",
                        help=f"rebuild only the shared {NEIGHBOURS_FILE} (for the stored {DOMAIN_FILE}); refit and "
                             "measure nothing else")
    parser.add_argument("--report-only", action="store_true", help="measure the stored files on dev; fit nothing")
    parser.add_argument("--no-report", action="store_true", help="fit only; do not measure on dev")
    parser.add_argument("--tune-rerank", action="store_true",
                        help="first choose how the beam's captions are ordered (score or consensus with the training "
                             "photos nearest each picture) on the held-out images, by the balanced rule; stored in "
                             "decoding.json")


def command_flags(args: argparse.Namespace) -> list[str]:
    """The flags that reproduce ``args`` (for the report's "command" field)."""
    flags = [f"--model {m}" for m in args.model] + ["--all"] * args.all
    if args.data:
        flags.append(f"--data {args.data}")
    flags.append(f"--out {args.out}")
    for name in ("refit_domain", "refit_neighbours", "report_only", "no_report", "tune_rerank"):
        if getattr(args, name):
            flags.append("--" + name.replace("_", "-"))
    return flags


def run(args: argparse.Namespace, report: Callable[[str], None] | None = None) -> int:
    """Fit (unless --report-only) and measure the folders ``args`` names (``add_arguments``'s flags); each
    folder's markdown report goes to ``report`` (the command line prints it) as well as under ``--out``.
    ValueError for bad combinations, CalibrationError when a needed file is missing or does not match."""

    from ..serving.captioner import Captioner
    from ..serving.encoder import XceptionEncoder
    from ..serving.model_folder import available_models, load_checkpoint
    from .data import load_dataset

    folders = [Path(m) for m in args.model] + (available_models() if args.all else [])
    if not folders:
        raise ValueError("give --model DIR (repeatable) or --all")
    folders = list(dict.fromkeys(f.resolve() for f in folders))
    if args.refit_neighbours and (args.refit_domain or args.report_only):
        raise ValueError("--refit-neighbours rebuilds the neighbour index alone: not with --refit-domain or --report-only")
    tune_rerank = getattr(args, "tune_rerank", False)  # absent from Namespaces built by hand
    if tune_rerank and (args.refit_neighbours or args.report_only):
        raise ValueError("--tune-rerank chooses a ranking before fitting: not with --refit-neighbours or --report-only")
    from ..serving.model_folder import model_language, neighbours_file_for, read_tune_images

    datasets: dict = {}  # caption language -> its dataset (references in that language)
    scorers: dict = {}

    def dataset_for(lang: str):
        if lang not in datasets:
            datasets[lang] = load_dataset(args.data, lang)
        return datasets[lang]

    def scorer_for(lang: str):
        if lang not in scorers:
            scorers[lang] = CiderD([dataset_for(lang).captions[n] for n in dataset_for(lang).split_names("train")])
        return scorers[lang]

    def held_out_of(root: Path, lang: str) -> list[str]:
        """The held-out images of the named folders of ``root`` that caption in ``lang``."""
        return sorted({n for f in folders if f.parent == root and model_language(f) == lang for n in read_tune_images(f)})

    if args.refit_domain and not args.report_only:  # before anything slow is loaded
        for root in dict.fromkeys(f.parent for f in folders):
            if (root / DOMAIN_FILE).is_file():
                check_shared_refit(root / DOMAIN_FILE, folders)
    encoder = XceptionEncoder.load(allow_download=False)
    if args.refit_neighbours:
        for root, lang in dict.fromkeys((f.parent, model_language(f)) for f in folders):
            domain_path, index_path = root / DOMAIN_FILE, root / neighbours_file_for(lang)
            if not domain_path.is_file():
                raise CalibrationError(f"{domain_path}: missing; fit it (and everything that depends on it) with "
                                       "--refit-domain")
            index = refit_neighbours(encoder, dataset_for(lang), DomainCheck.load(domain_path), held_out_of(root, lang))
            index.save(index_path)
            log(f"wrote {index_path} ({index_path.stat().st_size / 1e6:.2f} MB): {index.references.stats}")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shared: dict[Path, DomainCheck] = {}  # one domain check per models root, whatever the language
    indexes: dict[tuple[Path, str], NeighbourIndex] = {}  # one neighbour index per root and language
    report_nonphotos = None
    for folder in folders:
        start = time.perf_counter()
        captioner = Captioner(encoder, load_checkpoint(folder))
        lang = captioner.lang
        dataset, scorer = dataset_for(lang), scorer_for(lang)
        root = folder.parent
        domain_path, index_path = root / DOMAIN_FILE, root / neighbours_file_for(lang)
        if root not in shared:
            if args.report_only or (domain_path.is_file() and not args.refit_domain):
                shared[root] = DomainCheck.load(domain_path)
            else:  # the domain check is fitted with the English index (the same training photos)
                english = dataset_for("en")
                shared[root], index = fit_domain(encoder, english, held_out_of(root, "en"))
                shared[root].save(domain_path)
                index.save(root / NEIGHBOURS_FILE)
                indexes[(root, "en")] = index
                log(f"wrote {domain_path} ({domain_path.stat().st_size / 1e6:.2f} MB), {root / NEIGHBOURS_FILE} "
                    f"({(root / NEIGHBOURS_FILE).stat().st_size / 1e6:.2f} MB); {shared[root].info}")
        if (root, lang) not in indexes:
            if args.report_only or (index_path.is_file() and not args.refit_domain):
                indexes[(root, lang)] = NeighbourIndex.load(index_path)
            else:
                indexes[(root, lang)] = refit_neighbours(encoder, dataset, shared[root], held_out_of(root, lang))
                indexes[(root, lang)].save(index_path)
                log(f"wrote {index_path} ({index_path.stat().st_size / 1e6:.2f} MB)")
        domain, index = shared[root], indexes[(root, lang)]
        captioner.ranker = ConsensusRanker(domain, index)  # the folder's captions ranked as when serving
        if tune_rerank:
            choose_rerank(captioner, dataset)
        held_out = None
        if args.report_only:
            model = ConfidenceModel.load(folder)
        else:
            calibrator, held_out = calibrate_folder(captioner, dataset, domain, index, scorer)
            calibrator.neighbours_file = f"../{neighbours_file_for(lang)}"
            calibrator.save(folder / CONFIDENCE_FILE)
            model = ConfidenceModel.load(folder)
            log(f"wrote {folder / CONFIDENCE_FILE}: bands high >= {calibrator.high}, low < {calibrator.low}; "
                f"held-out {json.dumps(held_out)}")
        if args.no_report:
            continue
        if report_nonphotos is None:
            report_nonphotos = nonphoto_features(encoder, REPORT_SEED)
        summary = {"model": folder.name, "good": model.calibrator.good,
                   "bands": {"high": model.calibrator.high, "low": model.calibrator.low},
                   "held_out": held_out or model.calibrator.info.get("held_out", {}),
                   **report_folder(captioner, dataset, model, scorer, encoder, report_nonphotos),
                   "seconds": round(time.perf_counter() - start, 1),
                   "command": "python -m captioner calibrate " + " ".join(command_flags(args))}
        (out / f"{folder.name}.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        plot_reliability(summary["dev"]["reliability"], out / f"{folder.name}-reliability.png",
                         f"{folder.name}: dev reliability (ECE {summary['dev']['ece']:.3f})")
        text = markdown(summary)
        (out / f"{folder.name}.md").write_text(text + "\n", encoding="utf-8")
        if report is not None:
            report(text)
        record_dev_report(folder, model.calibrator, summary)
    return 0


def choose_rerank(captioner, dataset) -> str:
    """Choose the folder's ranking on its held-out images (``evaluate.tune_rerank``), store it in its
    decoding.json and use it from now on. -> the choice."""
    from ..serving import model_folder as mf
    from .evaluate import tune_rerank

    folder = captioner.checkpoint.folder
    names = mf.read_tune_images(folder)
    if not names:
        raise CalibrationError(f"{folder}: no held-out images (tune_images.txt) to choose the ranking on")
    decoding = mf.read_decoding(folder)
    if not decoding:
        raise CalibrationError(f"{folder}: no decoding.json; choose the length exponent first "
                               f"(`python -m captioner card --model {folder}`)")
    chosen = tune_rerank(captioner, dataset, names)
    mf.write_decoding(folder, {k: v for k, v in decoding.items() if not k.startswith("rerank")} | chosen)
    captioner.checkpoint.rerank = chosen["rerank"]
    log(f"ranking {chosen['rerank']} chosen on held-out images (balanced score {chosen['rerank_balanced_score']}; "
        f"{chosen['rerank_sweep']})")
    return chosen["rerank"]


def domain_dependents(domain_path: Path) -> list[Path]:
    """The model folders beside ``domain_path`` whose confidence.json uses it (read as plain JSON: a folder
    whose file cannot be read is counted, since it may still depend on it)."""
    domain_path = Path(domain_path).resolve()
    found = []
    for folder in sorted(p for p in domain_path.parent.iterdir() if (p / CONFIDENCE_FILE).is_file()):
        try:
            named = json.loads((folder / CONFIDENCE_FILE).read_text(encoding="utf-8")).get("domain_file")
        except (OSError, ValueError, AttributeError):
            named = None
        if named is None or (folder / named).resolve() == domain_path:
            found.append(folder.resolve())
    return found


def check_shared_refit(domain_path: Path, folders: list[Path]) -> None:
    """CalibrationError unless every folder that uses ``domain_path`` is refitted with it: a new domain check
    changes the space the other folders' calibrations and neighbour indexes were fitted in, and their
    confidence would stop loading (it is checked by digest)."""
    chosen = {Path(f).resolve() for f in folders}
    left = [f for f in domain_dependents(domain_path) if f not in chosen]
    if left:
        raise CalibrationError(f"{domain_path} is shared: refitting it would disable the confidence of "
                               f"{', '.join(f.name for f in left)}; refit them all together with "
                               "`python -m captioner calibrate --all --refit-domain` (or name every folder "
                               "with --model)")


def record_dev_report(folder: Path, calibrator: Calibrator, summary: dict) -> None:
    """Keep the dev figures beside the calibrator they measure (``confidence.json``'s ``info.dev``), so the
    model card can state them; the machine is recorded for completeness (the figures do not depend on it)."""
    from ..machine import describe_machine

    dev, domain = summary["dev"], summary["domain"]
    calibrator.info["dev"] = {
        "images": dev["n"], "good_share": dev["good_share"], "ece": dev["ece"],
        "bands": {band: {k: dev["bands"][band][k] for k in ("share", "mean_coco_cider", "good_share")}
                  for band in ("high", "medium", "low")},
        "high_over_low_coco_cider": dev["bands"]["high_over_low_mean_coco_cider"],
        "score_terciles_ratio": dev["score_terciles_ratio"],
        "photos_flagged": round(domain["dev_flagged"], 4), "nonphotos": domain["nonphotos"],
        "nonphotos_flagged": round(domain["nonphotos_flagged"], 4), "roc_auc": round(domain["roc_auc"], 4),
        "command": summary["command"], "machine": describe_machine()}
    calibrator.save(folder / CONFIDENCE_FILE)
