"""Whole workflows behind the command line: train a folder, tune and evaluate it, write its card, build
an ensemble, fine-tune with SCST. Each is a plain function, so programs and tests call them directly
and ``cli.py`` only parses arguments.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from ..config import DecodeConfig, TrainConfig
from ..serving import model_folder as mf

# Dev rows written into every model card: (label, decoding). The length exponent is the folder's own.
CARD_DECODES = (("dev, greedy", DecodeConfig(beam_width=1)), ("dev, beam 3", DecodeConfig(beam_width=3)),
                ("dev, beam 5", DecodeConfig(beam_width=5)))
ORIGINALS_DECODE = DecodeConfig(beam_width=3)  # the full-resolution originals row


def sharded_features(encoder, paths: list[Path], worker: int, n_workers: int, kind: str = "pooled",
                     log=print) -> dict:
    """Encode this worker's shard into the (shared) cache, wait for the others, then read them all."""
    from .distributed import shard, wait_for
    from .features import FeatureCache, extract_features

    mine = extract_features(encoder, shard(paths, worker, n_workers), kind=kind)
    for err in mine.errors.values():
        log(f"note: skipped {err}")
    if n_workers == 1:
        return dict(zip(mine.names, mine.features))
    # Each worker leaves a marker when its shard is in the cache; all markers = all features there.
    run = hashlib.sha1("\n".join(map(str, paths)).encode()).hexdigest()[:12]
    markers = FeatureCache(encoder.cache_key).folder.parent / "shards"
    markers.mkdir(parents=True, exist_ok=True)
    (markers / f"{run}-{worker}-of-{n_workers}.done").write_text(json.dumps(mine.errors))
    wait_for(lambda: all((markers / f"{run}-{i}-of-{n_workers}.done").is_file() for i in range(n_workers)),
             f"the other {n_workers - 1} worker(s) to finish their feature shards")
    extracted = extract_features(encoder, paths, progress=False, kind=kind)
    return dict(zip(extracted.names, extracted.features))


def train_folder(cfg: TrainConfig, data: Path | None, out: Path, weights: Path | None = None,
                 evaluate: bool = True, log=print) -> Path:
    """Train a decoder into ``out`` (with ``TF_CONFIG``: this worker's part of a multi-worker run), then,
    on the chief, tune decoding on the held-out images, evaluate on dev and write the card."""
    from .data import load_dataset
    from .distributed import cluster_spec, distribution_strategy

    cfg.validate()
    worker, n_workers = cluster_spec()
    strategy = distribution_strategy()  # before any other TensorFlow work (a tf.distribute rule)
    dataset = load_dataset(data, cfg.lang)
    log(f"dataset ({dataset.lang}): {dataset.summary()}")
    for note in dataset.problems:
        log(f"note: {note}")
    from ..serving.decoders import family
    from ..serving.encoder import XceptionEncoder
    from .train import split_training_images, train

    encoder = XceptionEncoder.load(weights)
    names = dataset.split_names("train") + dataset.split_names("dev")
    features = sharded_features(encoder, [dataset.image_path(n) for n in names], worker, n_workers,
                                family(cfg.decoder).feature_kind, log)
    augmented = None
    if cfg.augment:  # the augmented copies of the training images (not the held-out ones, not dev)
        from .features import extract_features

        train_names, _ = split_training_images([n for n in dataset.split_names("train") if n in features], cfg)
        copies = extract_features(encoder, [dataset.image_path(n) for n in train_names], augment_seed=cfg.seed)
        augmented = dict(zip(copies.names, copies.features))
        log(f"augmented copies: {len(augmented)} training images")
    folder = Path(out) if worker == 0 else Path(out).parent / f".{Path(out).name}.worker{worker}"
    train(dataset, features, cfg, folder, strategy=strategy, augmented_by_name=augmented)
    if worker == 0 and evaluate:
        evaluate_and_card(folder, dataset, encoder, log=log)
    return folder


def finetune_folder_and_card(model: Path, out: Path, data: Path | None, weights: Path | None, epochs: int,
                             learning_rate: float, baseline: str, evaluate: bool = True, log=print) -> None:
    """Self-critical fine-tuning of ``model`` into ``out``, then (optionally) its dev evaluation and card."""
    from ..serving.encoder import XceptionEncoder
    from .data import load_dataset
    from .scst import finetune_folder

    dataset = load_dataset(data, mf.read_config(model).lang)
    encoder = XceptionEncoder.load(weights)
    finetune_folder(model, out, dataset, encoder, epochs, learning_rate, baseline)
    if evaluate:
        evaluate_and_card(out, dataset, encoder, log=log)


def card(folder: Path, data: Path | None, weights: Path | None, evaluate: bool = True, log=print) -> None:
    """Re-tune decoding on the held-out images, re-evaluate on dev and rewrite the card of a single or
    ensemble folder; without ``evaluate``, rewrite the card from the folder's stored results only."""
    from ..serving.encoder import XceptionEncoder
    from .data import load_dataset
    from .modelcard import write_model_card_from_files

    lang = mf.load_checkpoint(folder).config.lang  # a bad folder fails fast, before the encoder loads
    if not evaluate:
        log(f"model card written to {write_model_card_from_files(folder, load_dataset(data, lang) if data else None)}")
        return
    evaluate_and_card(folder, load_dataset(data, lang), XceptionEncoder.load(weights), log=log)


def build_ensemble(members: list[Path], out: Path, data: Path | None = None, weights: Path | None = None,
                   evaluate: bool = True, log=print):
    """An ensemble folder naming ``members`` (which must share a vocabulary and held-out images); with
    ``evaluate``, its decoding tuned on those images, its dev evaluation and card."""
    out = Path(out)
    held_out = {tuple(mf.read_tune_images(m)) for m in members}
    if len(held_out) != 1 or not held_out.pop():
        raise mf.CheckpointError("the members were not trained with the same held-out training images "
                                 f"({mf.TUNE_FILE}), so the ensemble's decoding cannot be tuned without touching dev")
    out.mkdir(parents=True, exist_ok=True)
    mf.write_ensemble(out, members)
    try:
        checkpoint = mf.load_checkpoint(out)  # checks the members can vote together
    except mf.CheckpointError:
        (out / mf.ENSEMBLE_FILE).unlink()  # no half-made ensemble left for the app's model picker to list
        raise
    mf.write_tune_images(out, mf.read_tune_images(members[0]))
    log(f"ensemble of {', '.join(m.folder.name for m in checkpoint.members)} written to {out}")
    if evaluate:
        from ..serving.encoder import XceptionEncoder
        from .data import load_dataset

        evaluate_and_card(out, load_dataset(data, checkpoint.config.lang), XceptionEncoder.load(weights), log=log)
    return checkpoint


def evaluate_and_card(folder: Path, dataset, encoder, log=print) -> list[dict]:
    """``tune_and_evaluate``, then metrics.json and MODEL_CARD.md (single or ensemble folder)."""
    from .modelcard import write_ensemble_card, write_model_card

    evaluations, results = tune_and_evaluate(folder, dataset, encoder, log)
    checkpoint = mf.load_checkpoint(folder)
    extra = {}
    if checkpoint.config.lang != "en":
        extra["language"] = language_facts(checkpoint, dataset, results[LANGUAGE_ROW], log)
    if checkpoint.is_ensemble:
        write_ensemble_card(folder, checkpoint, evaluations, dataset=dataset, **extra)
    else:
        write_model_card(folder, checkpoint.config, mf.read_training(folder), evaluations, dataset=dataset, **extra)
    log(f"model card written to {Path(folder) / mf.CARD_FILE}")
    return evaluations


def quantize_encoder(data: Path | None, n_images: int = 300, weights: Path | None = None, seed: int = 0,
                     log=print) -> Path:
    """Build the int8 Xception IR from ``n_images`` training images (a seeded choice, leaving out every
    shipped folder's held-out images and all of dev). Returns the IR's path."""
    import time

    import numpy as np

    from ..serving.encoder import XceptionEncoder
    from ..serving.images import load_image, preprocess_image
    from ..serving.openvino_encoder import quantize_ir
    from .data import load_dataset

    dataset = load_dataset(data)
    held_out = {n for folder in mf.available_models() if (folder / mf.TUNE_FILE).is_file()
                for n in mf.read_tune_images(folder)}
    names = sorted(n for n in dataset.split_names("train") if n not in held_out)
    if not names:
        raise ValueError("no training images to calibrate the int8 encoder on")
    chosen = sorted(np.random.default_rng(seed).choice(names, size=min(n_images, len(names)), replace=False))
    encoder = XceptionEncoder.load(weights, allow_download=False, backend="openvino")
    pixels = [preprocess_image(load_image(dataset.image_path(n)))[None] for n in chosen]
    start = time.perf_counter()
    path = quantize_ir(lambda: encoder.model, encoder.weights_digest, pixels)
    log(f"quantised on {len(pixels)} training images in {time.perf_counter() - start:.0f} s")
    return path


LANGUAGE_ROW = "dev, beam 3"  # the CARD_DECODES row the language targets are stated on


def language_facts(checkpoint, dataset, result, log=print, examples: int = 6) -> dict:
    """For a folder captioning in a language other than English: its dev figures (``result``: the beam-3
    ``EvalResult`` of its card) beside a constant baseline (the language's most frequent training caption
    given to every image), how many distinct captions it writes, and a few dev examples with their
    English references (for readers of English)."""
    from .data import load_dataset
    from .evaluate import constant_baseline

    constant, baseline = constant_baseline(dataset, result.references)
    try:
        english = load_dataset(dataset.image_dir.parent).captions
    except Exception:  # the English captions are only for the examples
        english = {}
    chosen = sorted(result.predictions)[::max(1, len(result.predictions) // examples)][:examples]
    facts = {
        "lang": dataset.lang, "tokens": checkpoint.language.tokenisation,
        "decoding": result.settings["decoding"], "dev_images": len(result.predictions),
        "model": {m: result.metrics[m] for m in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr")},
        "constant_caption": checkpoint.write(constant),
        "baseline": {m: baseline[m] for m in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr")},
        "distinct_captions": len(set(result.predictions.values())),
        "examples": [{"image": n, "caption": checkpoint.write(result.predictions[n]),
                      "references": [checkpoint.write(r) for r in result.references[n][:2]],
                      "english_references": english.get(n, [])[:2]} for n in chosen]}
    for m in ("BLEU-4", "CIDEr"):
        facts[f"{m}_over_baseline"] = round(facts["model"][m] / max(facts["baseline"][m], 1e-9), 2)
    log(f"language {dataset.lang}: BLEU-4 {facts['model']['BLEU-4']:.4f} vs constant {facts['baseline']['BLEU-4']:.4f}, "
        f"CIDEr {facts['model']['CIDEr']:.4f} vs {facts['baseline']['CIDEr']:.4f}; {facts['distinct_captions']} distinct")
    return facts


def keep_rerank(before: dict, tuned: dict, log=print) -> dict:
    """``tuned`` (a new length-exponent sweep) with the ranking chosen before (``calibrate --tune-rerank``)
    when it was chosen at the same exponent; otherwise without it, and a line saying how to choose again."""
    fields = {k: v for k, v in before.items() if k.startswith("rerank")}
    if not fields or before.get("length_alpha") == tuned["length_alpha"]:
        return tuned | fields
    log(f"the ranking ({fields.get('rerank')}) was chosen at length exponent {before.get('length_alpha')}, not "
        f"{tuned['length_alpha']}: choose it again with `python -m captioner calibrate --tune-rerank --model FOLDER`")
    return tuned


def tune_and_evaluate(folder: Path, dataset, encoder, log=print) -> tuple[list[dict], dict]:
    """Choose the length exponent on the held-out training images (``decoding.json``), then dev metrics
    for each of ``CARD_DECODES`` (plus full-resolution originals when the dataset has them).
    -> (the card's rows: label, metrics, settings; each row's ``EvalResult`` by label)."""
    from ..serving.captioner import Captioner, load_confidence
    from .evaluate import evaluate_split, format_metrics, tune_length_alpha

    tuned = tune_length_alpha(Captioner(encoder, mf.load_checkpoint(folder)), dataset, mf.read_tune_images(folder))
    if tuned:
        mf.write_decoding(folder, keep_rerank(mf.read_decoding(folder), tuned, log))
        log(f"length_alpha {tuned['length_alpha']} chosen on held-out training images "
            f"(balanced score by alpha: {tuned['balanced_score']})")
    captioner = Captioner(encoder, mf.load_checkpoint(folder), *load_confidence(folder))  # its ranker too
    alpha = captioner.checkpoint.length_alpha
    runs = [(label, replace(decode, length_alpha=alpha), None) for label, decode in CARD_DECODES]
    originals = dataset.image_dir.parent / "originals"
    if originals.is_dir():
        runs.append(("dev originals (full resolution), beam 3", replace(ORIGINALS_DECODE, length_alpha=alpha),
                     originals))
    evaluations, results = [], {}
    for label, decode, images in runs:
        result = results[label] = evaluate_split(captioner, dataset, "dev", decode, images)
        log(f"{label}: {format_metrics(result.metrics)}")
        evaluations.append({"label": label, "metrics": result.metrics, "settings": result.settings})
        if images is not None:  # the same images at the squashed 224x224 size, for comparison
            same = evaluate_split(captioner, dataset, list(result.predictions), decode)
            same.settings["split"] = "dev (the same images, squashed 224x224 copies)"
            log(f"  same images squashed: {format_metrics(same.metrics)}")
            evaluations.append({"label": "same dev images, squashed 224x224 copies, beam 3",
                                "metrics": same.metrics, "settings": same.settings})
    return evaluations, results

