"""Command line: ``python -m captioner {caption,evaluate,train,weights}``.

Thin wrappers over the package; every expected failure prints one clear line and a non-zero exit
status, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter off the terminal

from .config import DecodeConfig, TrainConfig, field_help  # noqa: E402


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=None, help="checkpoint folder (default: the shipped model)")
    parser.add_argument("--weights", type=Path, default=None, help="Xception weights file (default: cache/download)")


def _add_decode_args(parser: argparse.ArgumentParser) -> None:
    d = DecodeConfig()
    parser.add_argument("--beam-width", type=int, default=d.beam_width, help="1 = greedy (default %(default)s)")
    parser.add_argument("--max-words", type=int, default=d.max_words, help="default %(default)s")
    parser.add_argument("--length-alpha", type=float, default=None,
                        help="beam length normalisation exponent (default: the model's tuned value, "
                             f"else {d.length_alpha})")
    parser.add_argument("--block-ngram", type=int, default=d.block_ngram,
                        help="never repeat one of the caption's own n-grams of this length; 0 = allow "
                             "(default %(default)s)")
    parser.add_argument("--allow-unk", action="store_true",
                        help="let captions contain <unk>, the rare-word token (off by default)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m captioner", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("caption", help="caption image files or whole folders")
    p.add_argument("images", nargs="+", type=Path, help="image files and/or folders (searched recursively)")
    p.add_argument("--out", type=Path, default=None,
                   help="write results to FILE.jsonl or FILE.csv (streamed; a rerun skips images already there)")
    p.add_argument("--batch-size", type=int, default=16, help="images per encoder batch (default %(default)s)")
    _add_model_args(p)
    _add_decode_args(p)
    p.add_argument("--n-best", type=int, default=1, help="captions per image (default %(default)s)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = sub.add_parser("evaluate", help="BLEU/CIDEr/METEOR/ROUGE-L on a split")
    p.add_argument("--data", type=Path, default=None, help="dataset folder (default ../shared/flickr8k)")
    p.add_argument("--split", default="dev", help="dev, test, train, or a file of image names")
    p.add_argument("--images", type=Path, default=None, help="another folder with the same file names")
    _add_model_args(p)
    _add_decode_args(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--report", type=Path, default=None, help="also write an HTML page of examples")

    p = sub.add_parser("train", help="train a decoder on a dataset")
    p.add_argument("--data", type=Path, default=None, help="dataset folder (default ../shared/flickr8k)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    p.add_argument("--weights", type=Path, default=None)
    p.add_argument("--no-eval", action="store_true", help="skip the dev evaluation and model card")
    helps = field_help()
    for f in fields(TrainConfig):
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=type(f.default), default=None,
                       help=helps.get(f.name, "").replace("%", "%%"))

    p = sub.add_parser("finetune", help="self-critical sequence training (CIDEr-D reward) of a trained model")
    p.add_argument("--data", type=Path, default=None, help="dataset folder (default ../shared/flickr8k)")
    p.add_argument("--model", type=Path, required=True, help="the trained checkpoint folder to start from")
    p.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    p.add_argument("--weights", type=Path, default=None)
    p.add_argument("--epochs", type=int, default=5, help="upper bound (default %(default)s)")
    p.add_argument("--learning-rate", type=float, default=2e-5, help="default %(default)s")
    p.add_argument("--baseline", choices=["greedy", "samples"], default="greedy",
                   help="reward baseline: the greedy caption, or the mean of the other samples (default %(default)s)")
    p.add_argument("--no-eval", action="store_true", help="skip the dev evaluation and model card")

    p = sub.add_parser("card", help="re-tune decoding on the held-out images, re-evaluate on dev, rewrite the model card")
    p.add_argument("--data", type=Path, default=None, help="dataset folder (default ../shared/flickr8k)")
    p.add_argument("--model", type=Path, required=True, help="the checkpoint folder")
    p.add_argument("--weights", type=Path, default=None)

    p = sub.add_parser("ensemble", help="combine trained model folders (one vocabulary) into an ensemble folder; "
                       "tune its decoding on their held-out images, evaluate on dev, write its card")
    p.add_argument("members", nargs="+", type=Path, help="two or more trained model folders")
    p.add_argument("--out", type=Path, required=True, help="ensemble folder to write (it stores only references)")
    p.add_argument("--data", type=Path, default=None, help="dataset folder (default ../shared/flickr8k)")
    p.add_argument("--weights", type=Path, default=None)
    p.add_argument("--no-eval", action="store_true", help="only write ensemble.json")

    p = sub.add_parser("weights", help="obtain and verify the Xception ImageNet weights")
    p.add_argument("--weights", type=Path, default=None, help="use this file instead of the cache")
    p.add_argument("--no-download", action="store_true", help="only check the explicit path and the cache")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .checkpoint import CheckpointError
    from .data import DataError
    from .weights import WeightsError

    try:
        return {"caption": cmd_caption, "evaluate": cmd_evaluate, "train": cmd_train,
                "finetune": cmd_finetune, "card": cmd_card, "ensemble": cmd_ensemble,
                "weights": cmd_weights}[args.command](args)
    except (CheckpointError, WeightsError, DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _decode_config(args, n_best: int = 1, default_alpha: float = DecodeConfig.length_alpha) -> DecodeConfig:
    alpha = default_alpha if args.length_alpha is None else args.length_alpha
    cfg = DecodeConfig(beam_width=args.beam_width, n_best=n_best, max_words=args.max_words, length_alpha=alpha,
                       block_ngram=args.block_ngram, allow_unk=args.allow_unk)
    cfg.validate()
    return cfg


def cmd_caption(args) -> int:
    from . import Captioner
    from .batch import caption_to_file, iter_images

    _decode_config(args, args.n_best)  # bad settings are reported before the slow model load
    captioner = Captioner.load(args.model, args.weights)
    decode = _decode_config(args, args.n_best, captioner.checkpoint.length_alpha)
    if args.out:
        summary = caption_to_file(captioner, args.images, args.out, decode, args.batch_size)
        print(f"{summary.captioned} captioned, {summary.failed} failed, {summary.skipped} already in {args.out}",
              file=sys.stderr)
        return 1 if summary.failed else 0
    failed = 0
    chunk: list[Path] = []

    def emit() -> int:
        errors = 0
        results = captioner.caption(chunk, decode.beam_width, decode.n_best, decode.max_words,
                                    length_alpha=decode.length_alpha)
        for path, result in zip(chunk, results):
            errors += _print_result(path, result, args.json, decode.n_best)
        chunk.clear()
        return errors

    for path in iter_images(args.images):
        chunk.append(path)
        if len(chunk) >= args.batch_size:
            failed += emit()
    if chunk:
        failed += emit()
    return 1 if failed else 0


def _print_result(path: Path, result, as_json: bool, n_best: int) -> int:
    """Print one image's result; return 1 if it failed."""
    if not result.ok:
        if as_json:
            print(json.dumps({"image": str(path), "error": result.error}), flush=True)
        else:
            print(f"error: {result.error}", file=sys.stderr, flush=True)
        return 1
    best = result.captions[0]
    if as_json:
        record = {"image": str(path), "caption": best.text, "score": round(best.score, 4)}
        if n_best > 1:
            record["alternatives"] = [{"caption": c.text, "score": round(c.score, 4)} for c in result.captions]
        print(json.dumps(record), flush=True)
    else:
        print(f"{path}: {best.text}", flush=True)
        for c in result.captions[1:]:
            print(f"    alt ({c.score:.3f}): {c.text}", flush=True)
    return 0


def cmd_evaluate(args) -> int:
    from . import Captioner
    from .data import load_dataset
    from .evaluate import evaluate_split, format_metrics, write_report

    _decode_config(args)
    dataset = load_dataset(args.data)
    captioner = Captioner.load(args.model, args.weights)
    decode = _decode_config(args, default_alpha=captioner.checkpoint.length_alpha)
    result = evaluate_split(captioner, dataset, args.split, decode, args.images, progress=not args.json)
    if args.report:
        write_report(result, args.images or dataset.image_dir, args.report)
    if args.json:
        print(json.dumps({**result.settings, **result.metrics, "notes": result.notes}))
    else:
        for note in result.notes:
            print(f"note: {note}")
        print("settings: " + ", ".join(f"{k}={v}" for k, v in result.settings.items()))
        print(f"n_images {result.settings['n_images']}")
        print(format_metrics(result.metrics))
        if args.report:
            print(f"report written to {args.report}")
    return 0


def cmd_train(args) -> int:
    from .distributed import cluster_spec, distribution_strategy
    from .data import load_dataset

    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None}
    cfg = TrainConfig(**overrides)
    cfg.validate()
    worker, n_workers = cluster_spec()
    strategy = distribution_strategy()  # before any other TensorFlow work (a tf.distribute rule)
    dataset = load_dataset(args.data)
    print(f"dataset: {dataset.summary()}")
    for note in dataset.problems:
        print(f"note: {note}")
    from .encoder import XceptionEncoder
    from .train import train

    encoder = XceptionEncoder.load(args.weights)
    names = dataset.split_names("train") + dataset.split_names("dev")
    kind = "spatial" if cfg.decoder == "attention" else "pooled"
    features = _sharded_features(encoder, [dataset.image_path(n) for n in names], worker, n_workers, kind)
    augmented = None
    if cfg.augment:  # the augmented copies of the training images (not the held-out ones, not dev)
        from .features import extract_features
        from .train import hold_out

        train_names, _ = hold_out([n for n in dataset.split_names("train") if n in features], cfg.tune_images,
                                  cfg.seed)
        copies = extract_features(encoder, [dataset.image_path(n) for n in train_names], augment_seed=cfg.seed)
        augmented = dict(zip(copies.names, copies.features))
        print(f"augmented copies: {len(augmented)} training images")
    out = args.out if worker == 0 else args.out.parent / f".{args.out.name}.worker{worker}"
    summary = train(dataset, features, cfg, out, strategy=strategy, augmented_by_name=augmented)
    if worker != 0:
        return 0  # only the chief keeps a checkpoint; the others' copies are identical
    if not args.no_eval:
        evaluate_and_card(args.out, dataset, encoder, cfg, summary)
    print(f"checkpoint written to {args.out}")
    return 0


def cmd_card(args) -> int:
    from .checkpoint import load_checkpoint
    from .data import load_dataset
    from .encoder import XceptionEncoder

    checkpoint = load_checkpoint(args.model)  # a bad folder fails fast, before the encoder loads
    dataset = load_dataset(args.data)
    encoder = XceptionEncoder.load(args.weights)
    if checkpoint.is_ensemble:
        from .modelcard import write_ensemble_card

        write_ensemble_card(args.model, checkpoint, tune_and_evaluate(args.model, dataset, encoder))
    else:
        evaluate_and_card(args.model, dataset, encoder, checkpoint.config, _card_summary(args.model))
    print(f"model card written to {Path(args.model) / 'MODEL_CARD.md'}")
    return 0


def _card_summary(folder: Path) -> dict:
    """training.json of a model folder, plus scst.json when it was fine-tuned."""
    summary_file = Path(folder) / "training.json"
    if not summary_file.is_file():
        raise ValueError(f"{summary_file}: missing; the model card needs the training summary")
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    scst_file = Path(folder) / "scst.json"
    if scst_file.is_file():
        summary["scst"] = json.loads(scst_file.read_text(encoding="utf-8"))
    return summary


def cmd_finetune(args) -> int:
    from .data import load_dataset
    from .encoder import XceptionEncoder
    from .scst import finetune_folder

    dataset = load_dataset(args.data)
    encoder = XceptionEncoder.load(args.weights)
    finetune_folder(args.model, args.out, dataset, encoder, args.epochs, args.learning_rate, args.baseline)
    if not args.no_eval:
        from .checkpoint import load_checkpoint

        evaluate_and_card(args.out, dataset, encoder, load_checkpoint(args.out).config, _card_summary(args.out))
    print(f"checkpoint written to {args.out}")
    return 0


def _sharded_features(encoder, paths: list[Path], worker: int, n_workers: int, kind: str = "pooled") -> dict:
    """Encode this worker's shard into the (shared) cache, wait for the others, then read them all."""
    import hashlib

    from .distributed import shard, wait_for
    from .features import FeatureCache, extract_features

    mine = extract_features(encoder, shard(paths, worker, n_workers), kind=kind)
    for err in mine.errors.values():
        print(f"note: skipped {err}")
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


def cmd_ensemble(args) -> int:
    import os
    import shutil

    from .checkpoint import ENSEMBLE_FILE, CheckpointError, load_checkpoint
    from .config import save_json
    from .train import TUNE_FILE

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    held_out = {(Path(m) / TUNE_FILE).read_text() if (Path(m) / TUNE_FILE).is_file() else "" for m in args.members}
    if len(held_out) != 1 or not held_out.pop().strip():
        raise CheckpointError("the members were not trained with the same held-out training images "
                              f"({TUNE_FILE}), so the ensemble's decoding cannot be tuned without touching dev")
    save_json({"members": [os.path.relpath(Path(m).resolve(), out.resolve()) for m in args.members]},
              out / ENSEMBLE_FILE)
    try:
        checkpoint = load_checkpoint(out)  # checks the members can vote together
    except CheckpointError:
        (out / ENSEMBLE_FILE).unlink()  # no half-made ensemble left for the app's model picker to list
        raise
    shutil.copy(Path(args.members[0]) / TUNE_FILE, out / TUNE_FILE)
    print(f"ensemble of {', '.join(m.folder.name for m in checkpoint.members)} written to {out}")
    if not args.no_eval:
        from .data import load_dataset
        from .encoder import XceptionEncoder
        from .modelcard import write_ensemble_card

        dataset = load_dataset(args.data)
        write_ensemble_card(out, checkpoint, tune_and_evaluate(out, dataset, XceptionEncoder.load(args.weights)))
        print(f"model card written to {out / 'MODEL_CARD.md'}")
    return 0


def evaluate_and_card(folder: Path, dataset, encoder, cfg: TrainConfig, summary: dict) -> list[dict]:
    """``tune_and_evaluate``, then metrics.json and MODEL_CARD.md."""
    from .modelcard import write_model_card

    evaluations = tune_and_evaluate(folder, dataset, encoder)
    write_model_card(folder, cfg, summary, evaluations)
    return evaluations


def tune_and_evaluate(folder: Path, dataset, encoder) -> list[dict]:
    """Choose the length exponent on the held-out training images (``decoding.json``), then dev metrics
    for greedy, beam 3 and beam 5 (plus full-resolution originals when the dataset has them)."""
    from . import Captioner
    from .checkpoint import DECODING_FILE, load_checkpoint
    from .config import save_json
    from .evaluate import evaluate_split, format_metrics, tune_length_alpha
    from .train import TUNE_FILE

    tuned = tune_length_alpha(Captioner(encoder, load_checkpoint(folder)), dataset, Path(folder) / TUNE_FILE)
    if tuned:
        save_json(tuned, Path(folder) / DECODING_FILE)
        print(f"length_alpha {tuned['length_alpha']} chosen on held-out training images "
              f"(balanced score by alpha: {tuned['balanced_score']})")
    captioner = Captioner(encoder, load_checkpoint(folder))
    runs = [("dev, greedy", 1, None), ("dev, beam 3", 3, None), ("dev, beam 5", 5, None)]
    originals = dataset.image_dir.parent / "originals"
    if originals.is_dir():
        runs += [("dev originals (full resolution), beam 3", 3, originals)]
    evaluations = []
    for label, width, images in runs:
        decode = DecodeConfig(beam_width=width, length_alpha=captioner.checkpoint.length_alpha)
        result = evaluate_split(captioner, dataset, "dev", decode, images)
        print(f"{label}: {format_metrics(result.metrics)}")
        evaluations.append({"label": label, "metrics": result.metrics, "settings": result.settings})
        if images is not None:  # the same images at the squashed 224x224 size, for comparison
            same = evaluate_split(captioner, dataset, list(result.predictions), decode)
            same.settings["split"] = "dev (the same images, squashed 224x224 copies)"
            print(f"  same images squashed: {format_metrics(same.metrics)}")
            evaluations.append({"label": "same dev images, squashed 224x224 copies, beam 3",
                                "metrics": same.metrics, "settings": same.settings})
    return evaluations


def cmd_weights(args) -> int:
    from .weights import ensure_weights

    path, digest = ensure_weights(args.weights, allow_download=not args.no_download)
    print(f"{path}\nsha256 {digest}")
    return 0
