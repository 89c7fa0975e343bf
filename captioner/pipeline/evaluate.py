"""Caption-quality metrics and split evaluation.

BLEU-1..4 come from nltk's ``corpus_bleu`` over all references; CIDEr (CIDEr-D), METEOR and ROUGE-L
from pycocoevalcap (METEOR runs its Java jar). Tokens are the cleaned words, without start/end markers.
"""
from __future__ import annotations

import base64
import html
import io
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path


from ..config import DecodeConfig
from .data import CaptionDataset, DataError


@dataclass
class EvalResult:
    metrics: dict[str, float | None]
    per_image_cider: dict[str, float]
    predictions: dict[str, str]
    references: dict[str, list[str]]
    settings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def caption_metrics(references: dict[str, list[str]], predictions: dict[str, str],
                    notes: list[str] | None = None, meteor: bool = True) -> tuple[dict[str, float | None], dict[str, float]]:
    """-> (corpus metrics, per-image CIDEr). ``references`` and ``predictions`` share keys; texts are
    space-separated tokens. ``meteor=False`` leaves METEOR out (its stemmer and synonyms are English)."""
    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu

    keys = sorted(predictions)
    if not keys:
        raise ValueError("nothing to evaluate: no predictions")
    refs_tok = [[r.split() for r in references[k]] for k in keys]
    hyps_tok = [predictions[k].split() for k in keys]
    metrics: dict[str, float | None] = {}
    smooth = SmoothingFunction().method0
    for n in range(1, 5):
        weights = tuple([1.0 / n] * n)
        metrics[f"BLEU-{n}"] = float(corpus_bleu(refs_tok, hyps_tok, weights=weights, smoothing_function=smooth))
    gts = {k: references[k] for k in keys}
    res = {k: [predictions[k] or "<empty>"] for k in keys}
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    cider, cider_each = Cider().compute_score(gts, res)
    metrics["CIDEr"] = float(cider)
    metrics["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    if not meteor:
        return metrics, {k: float(s) for k, s in zip(keys, cider_each)}
    try:
        from pycocoevalcap.meteor.meteor import Meteor

        scorer = Meteor()
        try:
            metrics["METEOR"] = float(scorer.compute_score(gts, res)[0])
        finally:
            scorer.meteor_p.kill()
    except Exception as err:  # most often: no Java on this machine
        metrics["METEOR"] = None
        if notes is not None:
            notes.append(f"METEOR not computed ({type(err).__name__}: {err}); it needs Java on PATH")
    return metrics, {k: float(s) for k, s in zip(keys, cider_each)}


def constant_baseline(dataset: CaptionDataset, references: dict[str, list[str]]) -> tuple[str, dict]:
    """The dataset's most frequent training caption (tokens), and its metrics (no METEOR) when it is
    given to every image of ``references``: the floor a captioner has to clear."""
    from collections import Counter

    constant = Counter(c for n in dataset.split_names("train") for c in dataset.captions[n]).most_common(1)[0][0]
    metrics, _ = caption_metrics(references, {n: constant for n in references}, meteor=False)
    return constant, metrics


def read_split_names(dataset: CaptionDataset, split: str | list[str]) -> list[str]:
    """A split name (train/dev/test), a file listing image names one a line, or the names themselves."""
    if isinstance(split, list):
        return [n for n in split if n in dataset.captions]
    if split in ("train", "dev", "test"):
        return dataset.split_names(split)
    path = Path(split)
    if not path.is_file():
        raise DataError(f"{split}: not a split name (train, dev, test) nor a file of image names")
    names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return [n for n in names if n in dataset.captions]


def evaluate_split(captioner, dataset: CaptionDataset, split: str | list[str], decode: DecodeConfig,
                   images_dir: Path | None = None, progress: bool = True, batch_size: int = 64) -> EvalResult:
    """Caption every image of ``split`` (found in ``images_dir`` if given) and score against its references."""
    from .features import extract_features

    names = read_split_names(dataset, split)
    notes: list[str] = []
    folder = Path(images_dir) if images_dir else dataset.image_dir
    if images_dir:
        if not folder.is_dir():
            raise DataError(f"{folder}: images folder not found")
        present = [n for n in names if (folder / n).is_file()]
        notes.append(f"evaluating the {len(present)} of {len(names)} {split} images found in {folder}")
        names = present
    if not names:
        raise DataError(f"no images of split {split!r} found in {folder}")
    extracted = extract_features(captioner.encoder, [folder / n for n in names], progress=progress,
                                 kind=captioner.feature_kind)
    for name, err in extracted.errors.items():
        notes.append(f"skipped {err}")
    start = time.perf_counter()
    predictions: dict[str, str] = {}
    for i in range(0, len(extracted.names), batch_size):
        chunk = extracted.names[i:i + batch_size]
        for name, caps in zip(chunk, captioner.caption_features(extracted.features[i:i + batch_size], decode)):
            predictions[name] = caps[0].tokens  # the references' tokenisation, not the written form
    decode_seconds = time.perf_counter() - start
    references = {n: dataset.captions[n] for n in predictions}
    lang = captioner.checkpoint.language
    metrics, per_image = caption_metrics(references, predictions, notes, meteor=lang.code == "en")
    label = split if isinstance(split, str) else f"{len(names)} listed images"
    settings = {"split": label, "lang": lang.code, "tokens": lang.tokenisation,
                "n_images": len(predictions), "beam_width": decode.beam_width,
                "decoding": "greedy" if decode.beam_width == 1 else f"beam {decode.beam_width}",
                "length_alpha": decode.length_alpha, "max_words": decode.max_words, "block_ngram": decode.block_ngram,
                "allow_unk": decode.allow_unk, "rerank": captioner.reranking(decode),
                "images": str(folder), "checkpoint": str(captioner.checkpoint.folder),
                "decode_ms_per_image": round(1000 * decode_seconds / max(len(predictions), 1), 2),
                "metric_tools": ("BLEU: nltk corpus_bleu; CIDEr-D, METEOR 1.5, ROUGE-L: pycocoevalcap" if lang.code == "en"
                                 else "BLEU: nltk corpus_bleu; CIDEr-D, ROUGE-L: pycocoevalcap (no METEOR: its "
                                      "stemmer and paraphrase tables are English)")}
    return EvalResult(metrics, per_image, predictions, references, settings, notes)


ALPHA_GRID = (0.0, 0.4, 0.7, 1.0, 1.3)
TUNING_DECODE = DecodeConfig(beam_width=3, rerank="score")  # the serving defaults; the exponent is swept first
BALANCED_METRICS = ("BLEU-1", "BLEU-4", "METEOR", "CIDEr")


def balanced_scores(sweep: dict[str, dict[str, float]]) -> dict[str, float]:
    """Each setting's mean share of the best value of BLEU-1, BLEU-4, METEOR and CIDEr in ``sweep``.

    Selecting on CIDEr alone favours long captions (CIDEr rewards every matched n-gram) and gives
    up BLEU-1 precision; this rule asks a setting to be near the best on all four metrics at once
    (on three where METEOR is not measured: captions in languages other than English).
    """
    used = [m for m in BALANCED_METRICS if all(m in scores for scores in sweep.values())]  # METEOR: English only
    best = {m: max(scores[m] for scores in sweep.values()) or 1.0 for m in used}
    return {key: round(sum(scores[m] / best[m] for m in used) / len(used), 4) for key, scores in sweep.items()}


def tune_length_alpha(captioner, dataset: CaptionDataset, names: list[str],
                      decode: DecodeConfig = TUNING_DECODE) -> dict | None:
    """Choose beam search's length-normalisation exponent on held-out *training* images ``names``
    (a model folder's tune_images.txt), never on dev, by the balanced rule of ``balanced_scores``.
    Returns the choice and the sweep (every metric per exponent), or None when there are no names."""
    if not names:
        return None
    sweep = {}
    for alpha in ALPHA_GRID:
        result = evaluate_split(captioner, dataset, list(names), replace(decode, length_alpha=alpha), progress=False)
        sweep[str(alpha)] = {m: round(result.metrics[m], 4) for m in BALANCED_METRICS
                             if result.metrics.get(m) is not None}
    balanced = balanced_scores(sweep)
    best = max(ALPHA_GRID, key=lambda a: balanced[str(a)])
    return {"length_alpha": best, "rule": "balanced: mean share of the sweep's best BLEU-1, BLEU-4, METEOR, CIDEr",
            "balanced_score": balanced, "sweep": sweep, "beam_width": decode.beam_width,
            "selected_on": f"{result.settings['n_images']} training images held out from training"}


def tune_rerank(captioner, dataset: CaptionDataset, names: list[str], decode: DecodeConfig | None = None) -> dict:
    """Choose how the beam's captions are ordered ("score" or "consensus", ``serving/rerank.py``) on held-out
    *training* images ``names``, at the folder's tuned length exponent, by the balanced rule. The captioner
    needs its neighbour index (``captioner.ranker``), built without these images.
    -> the decoding.json fields: the choice, each ranking's metrics and balanced score."""
    decode = decode or replace(TUNING_DECODE, length_alpha=captioner.checkpoint.length_alpha)
    sweep = {}
    for choice in ("score", "consensus"):
        result = evaluate_split(captioner, dataset, list(names), replace(decode, rerank=choice), progress=False)
        sweep[choice] = {m: round(result.metrics[m], 4) for m in BALANCED_METRICS if result.metrics.get(m) is not None}
    balanced = balanced_scores(sweep)
    return {"rerank": max(sweep, key=lambda c: (balanced[c], c == "score")),  # a tie keeps the decoder's order
            "rerank_sweep": sweep, "rerank_balanced_score": balanced,
            "rerank_selected_on": f"{result.settings['n_images']} training images held out from training, "
                                  f"beam {decode.beam_width}, length exponent {decode.length_alpha}"}


def _thumbnail_data_uri(path: Path, side: int = 224) -> str:
    from ..serving.images import ImageError, load_image

    try:
        img = load_image(path)
    except ImageError:
        return ""
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def write_report(result: EvalResult, image_folder: Path, path: Path, per_group: int = 8, seed: int = 0) -> None:
    """An HTML page: metrics, then the best, worst and random images by per-image CIDEr."""
    ranked = sorted(result.per_image_cider, key=result.per_image_cider.get)
    rng = random.Random(seed)
    groups = [("Best (highest per-image CIDEr)", ranked[::-1][:per_group]),
              ("Worst (lowest per-image CIDEr)", ranked[:per_group]),
              ("Random", rng.sample(ranked, min(per_group, len(ranked))))]
    metric_cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{'n/a' if v is None else f'{v:.4f}'}</td></tr>"
                           for k, v in result.metrics.items())
    setting_cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                            for k, v in result.settings.items())
    parts = [f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>captioner evaluation</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem}} table{{border-collapse:collapse}}
th,td{{text-align:left;padding:.2rem .8rem;border-bottom:1px solid #ddd}} .card{{display:flex;gap:1rem;margin:1rem 0}}
.pred{{font-size:1.2rem;font-weight:600}} img{{border-radius:4px}}</style></head><body>
<h1>captioner evaluation</h1><h2>Metrics</h2><table>{metric_cells}</table><h2>Settings</h2><table>{setting_cells}</table>"""]
    for title, names in groups:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        for name in names:
            refs = "".join(f"<li>{html.escape(r)}</li>" for r in result.references[name])
            caption = html.escape(result.predictions[name])
            parts.append(f"""<div class="card"><img src="{_thumbnail_data_uri(Path(image_folder) / name)}" alt="{caption}"
width="224"><div><div>{html.escape(name)} — CIDEr {result.per_image_cider[name]:.3f}</div>
<div class="pred">{caption}</div><div>References:</div><ul>{refs}</ul></div></div>""")
    parts.append("</body></html>")
    Path(path).write_text("\n".join(parts), encoding="utf-8")


def format_metrics(metrics: dict[str, float | None]) -> str:
    return "  ".join(f"{k} {'n/a' if v is None else f'{v:.4f}'}" for k, v in metrics.items())


