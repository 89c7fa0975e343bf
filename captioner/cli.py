"""Command line: ``python -m captioner {caption,evaluate,train,finetune,card,ensemble,calibrate,serve,write,weights,info}``.

Argument parsing only: each command builds its settings (one DecodeConfig for every decoding flag,
one TrainConfig for every training flag) and calls one library function. Every expected failure
prints one clear line and a non-zero exit status, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import fields
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter off the terminal

from .config import RERANKINGS, DecodeConfig, TrainConfig, field_help  # noqa: E402
from .serving.languages import LANGUAGES  # noqa: E402


DATA_HELP = "dataset folder (default: $CAPTIONER_DATA, else ../shared/flickr8k beside the project)"


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the default model in $CAPTIONER_MODELS or the shipped models)")
    parser.add_argument("--weights", type=Path, default=None, help="Xception weights file (default: cache/download)")
    parser.add_argument("--precision", default=None, choices=["auto", "float32", "bfloat16", "int8"],
                        help="encoder precision (default $CAPTIONER_PRECISION, else auto: the fastest one that keeps "
                             "the captions on this CPU, found by a short self-check on first use and cached; "
                             "float32 gives bit-stable features; int8 needs `python -m captioner quantize` once)")
    parser.add_argument("--lang", default=None, choices=list(LANGUAGES),
                        help="caption language: its default model folder (merge-<lang>) when --model is not given; "
                             "default: the model's own language (English for the default model)")


def _add_decode_args(parser: argparse.ArgumentParser) -> None:
    d = DecodeConfig()
    parser.add_argument("--beam-width", type=int, default=d.beam_width, help="1 = greedy (default %(default)s)")
    parser.add_argument("--max-words", type=int, default=d.max_words, help="default %(default)s")
    parser.add_argument("--length-alpha", type=float, default=None,
                        help="beam length normalisation exponent (default: the model's tuned value, "
                             f"else {d.length_alpha})")
    parser.add_argument("--block-ngram", type=int, default=d.block_ngram,
                        help="never repeat one of the caption's own n-grams of this length (at least 2); "
                             "0 = allow (default %(default)s)")
    parser.add_argument("--allow-unk", action="store_true",
                        help="let captions contain <unk>, the rare-word token (off by default)")
    parser.add_argument("--rerank", choices=RERANKINGS, default=d.rerank,
                        help="order the beam's captions by the decoder's score, or by consensus with what people said "
                             "about the most similar training photos; auto: the model's choice (default %(default)s)")


def _add_writeback_flags(parser: argparse.ArgumentParser, dry_run: bool) -> None:
    parser.add_argument("--force", action="store_true",
                        help="replace a description or alt text a person wrote (never done without it)")
    parser.add_argument("--no-backup", action="store_true", help="exif: keep no photo.jpg.bak of the original")
    parser.add_argument("--follow-links", action="store_true",
                        help="write through symbolic links that stay inside the folder given (links out of it "
                             "are never followed)")
    if dry_run:
        parser.add_argument("--dry-run", action="store_true", help="list what would change and write nothing")


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
    p.add_argument("--wording", default=DecodeConfig.wording, choices=["neutral", "as-learned"],
                   help="neutral: person words without gender (a person, a child, their) instead of the model's "
                        "guesses (a man, a girl, his), which are often wrong; as-learned: the model's own words "
                        "(default %(default)s)")
    p.add_argument("--n-best", type=int, default=1, help="captions per image (default %(default)s)")
    p.add_argument("--read-text", default="auto", choices=["auto", "on", "off"],
                   help="read the text in each picture (signs, labels, letters, screens) and say it after the "
                        "caption: auto = when a quick look finds text, on = always, off = never (default %(default)s)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="with --out: caption in this process (local, the default) or on a Ray cluster (ray; "
                        "needs `pip install -r requirements-ray.txt`)")
    p.add_argument("--address", default=None,
                   help="--engine ray: an existing cluster (auto, HOST:6379 or ray://HOST:10001; default: a "
                        "private Ray instance on this machine)")
    p.add_argument("--workers", type=int, default=2,
                   help="--engine ray: captioning actors, one model and one CPU each (default %(default)s)")
    p.add_argument("--write", choices=["xmp", "exif"], default=None,
                   help="also write each caption where other software reads it: xmp (a photo.jpg.xmp sidecar) or "
                        "exif (inside the JPEG/PNG, pixels untouched, backup kept); see `write --help`")
    _add_writeback_flags(p, dry_run=False)

    p = sub.add_parser("evaluate", help="BLEU/CIDEr/METEOR/ROUGE-L on a split")
    p.add_argument("--data", type=Path, default=None, help=DATA_HELP)
    p.add_argument("--split", default="dev", help="dev, test, train, or a file of image names")
    p.add_argument("--images", type=Path, default=None, help="another folder with the same file names")
    _add_model_args(p)
    _add_decode_args(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--report", type=Path, default=None, help="also write an HTML page of examples")

    p = sub.add_parser("train", help="train a decoder on a dataset")
    p.add_argument("--data", type=Path, default=None, help=DATA_HELP)
    p.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    p.add_argument("--weights", type=Path, default=None)
    p.add_argument("--no-eval", action="store_true", help="skip the dev evaluation and model card")
    helps = field_help()
    for f in fields(TrainConfig):
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=type(f.default), default=None,
                       help=helps.get(f.name, "").replace("%", "%%"))

    p = sub.add_parser("finetune", help="self-critical sequence training (CIDEr-D reward) of a trained model")
    p.add_argument("--data", type=Path, default=None, help=DATA_HELP)
    p.add_argument("--model", type=Path, required=True, help="the trained checkpoint folder to start from")
    p.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    p.add_argument("--weights", type=Path, default=None)
    p.add_argument("--epochs", type=int, default=5, help="upper bound (default %(default)s)")
    p.add_argument("--learning-rate", type=float, default=2e-5, help="default %(default)s")
    p.add_argument("--baseline", choices=["greedy", "samples"], default="greedy",
                   help="reward baseline: the greedy caption, or the mean of the other samples (default %(default)s)")
    p.add_argument("--no-eval", action="store_true", help="skip the dev evaluation and model card")

    p = sub.add_parser("card", help="re-tune decoding on the held-out images, re-evaluate on dev, rewrite the model card")
    p.add_argument("--data", type=Path, default=None, help=DATA_HELP)
    p.add_argument("--model", type=Path, required=True, help="the checkpoint folder")
    p.add_argument("--weights", type=Path, default=None)
    p.add_argument("--no-eval", action="store_true",
                   help="rewrite the card from the folder's stored metrics.json and training.json only")

    p = sub.add_parser("ensemble", help="combine trained model folders (one vocabulary) into an ensemble folder; "
                       "tune its decoding on their held-out images, evaluate on dev, write its card")
    p.add_argument("members", nargs="+", type=Path, help="two or more trained model folders")
    p.add_argument("--out", type=Path, required=True, help="ensemble folder to write (it stores only references)")
    p.add_argument("--data", type=Path, default=None, help=DATA_HELP)
    p.add_argument("--weights", type=Path, default=None)
    p.add_argument("--no-eval", action="store_true", help="only write ensemble.json")

    p = sub.add_parser("calibrate", help="fit and measure each model's confidence, bands and out-of-domain check "
                                         "(training images only; the report is on dev)")
    from .pipeline.calibrate import add_arguments as add_calibrate_arguments

    add_calibrate_arguments(p)

    p = sub.add_parser("serve", help="a local HTTP API: captions, speech, models (FastAPI; docs at /docs)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="default %(default)s")
    _add_model_args(p)
    p.add_argument("--max-batch", type=int, default=16,
                   help="images per encoder batch when concurrent requests are gathered; 1 = one request per "
                        "model call (default %(default)s)")
    p.add_argument("--max-languages", type=int, default=3,
                   help="caption languages kept loaded at once: --lang's (the default) and the most recently "
                        "asked for with ?lang= (default %(default)s)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a name clients may use for this server in the Host header, besides localhost, "
                        "127.0.0.1 and [::1] (repeatable; '*.example.org' allows its subdomains)")
    p.add_argument("--token", default=None,
                   help="require 'Authorization: Bearer TOKEN' on every route but /healthz (default: the "
                        "CAPTIONER_API_TOKEN environment variable; none: no token)")
    p.add_argument("--body-timeout", type=float, default=30.0,
                   help="seconds a client may pause while sending its upload before it is dropped (default %(default)s)")
    p.add_argument("--limit-concurrency", type=int, default=64,
                   help="open connections at most; more are answered 503 (default %(default)s)")

    p = sub.add_parser("write", help="write captions from a captions file into XMP sidecars, the photos' "
                                     "EXIF/XMP, or the alt text of HTML/Markdown pages")
    p.add_argument("target", choices=["xmp", "exif", "alt"],
                   help="xmp: a photo.jpg.xmp sidecar (safest); exif: inside the JPEG/PNG (a backup is kept); "
                        "alt: missing/empty alt text of local images in HTML and Markdown pages")
    p.add_argument("paths", nargs="*", type=Path,
                   help="xmp/exif: images or folders (default: every image in --captions); alt: the pages or "
                        "folders of pages")
    p.add_argument("--captions", type=Path, required=True,
                   help="a `caption --out` file (.jsonl or .csv); its image paths are relative to where caption ran")
    _add_writeback_flags(p, dry_run=True)

    p = sub.add_parser("weights", help="obtain and verify the Xception ImageNet weights")
    p.add_argument("--weights", type=Path, default=None, help="use this file instead of the cache")
    p.add_argument("--no-download", action="store_true", help="only check the explicit path and the cache")

    p = sub.add_parser("quantize", help="build the int8 encoder (NNCF post-training quantisation on training images; "
                                        "then --precision int8)")
    p.add_argument("--data", type=Path, default=None, help=DATA_HELP)
    p.add_argument("--images", type=int, default=300, help="training images to calibrate on (default %(default)s)")
    p.add_argument("--weights", type=Path, default=None)

    p = sub.add_parser("info", help="what captions run on here: encoder backend, precision, CPU, versions, model")
    _add_model_args(p)
    p.add_argument("--backend", choices=["auto", "openvino", "tensorflow"], default=None,
                   help="the encoder backend to try (default: $CAPTIONER_BACKEND, else the built-in default)")
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes (tests and callers may swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass  # always the current sys.stderr


def show_library_logs() -> None:
    """The library's log lines (progress, fallbacks, downloads) as plain lines on stderr, as the command
    line shows its own messages; other libraries' logging is left as it is."""
    logger = logging.getLogger("captioner")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "write" and not any(e.startswith("-") for e in extra):
        args.paths += [Path(e) for e in extra]  # `write xmp --captions F a.jpg`: argparse leaves the paths over
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from .pipeline.data import DataError
    from .serving.model_folder import CheckpointError
    from .serving.openvino_encoder import OpenVINOUnavailable
    from .serving.weights import WeightsError

    if getattr(args, "precision", None):
        os.environ["CAPTIONER_PRECISION"] = args.precision  # every encoder this command loads
    if args.command != "serve":  # the API server sets up its own logging (levels, names)
        show_library_logs()
    try:
        _model_for_language(args)
        return {"caption": cmd_caption, "evaluate": cmd_evaluate, "train": cmd_train,
                "finetune": cmd_finetune, "card": cmd_card, "ensemble": cmd_ensemble,
                "calibrate": cmd_calibrate, "weights": cmd_weights, "quantize": cmd_quantize, "write": cmd_write, "serve": cmd_serve,
                "info": cmd_info}[args.command](args)
    except (CheckpointError, WeightsError, DataError, ValueError, OpenVINOUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _model_for_language(args) -> None:
    """``--lang`` without ``--model``: that language's default folder; with both, they must agree."""
    lang = getattr(args, "lang", None) if args.command != "train" else None
    if not lang:
        return
    from .serving.model_folder import default_model_dir, is_model_folder, model_language

    if args.model is None:
        args.model = default_model_dir(lang)
    elif is_model_folder(args.model) and model_language(args.model) != lang:  # an ensemble: its members' language
        raise ValueError(f"{args.model} captions in {model_language(args.model)!r}, not {lang!r}: "
                         f"drop --model to use the {lang!r} default, or drop --lang")


def decode_config(args, length_alpha: float = DecodeConfig.length_alpha) -> DecodeConfig:
    """Every decoding flag in one DecodeConfig (``--length-alpha`` absent: the model's tuned exponent)."""
    cfg = DecodeConfig(beam_width=args.beam_width, n_best=getattr(args, "n_best", 1), max_words=args.max_words,
                       length_alpha=length_alpha if args.length_alpha is None else args.length_alpha,
                       block_ngram=args.block_ngram, allow_unk=args.allow_unk,
                       wording=getattr(args, "wording", DecodeConfig.wording),
                       read_text=getattr(args, "read_text", DecodeConfig.read_text),
                       rerank=getattr(args, "rerank", DecodeConfig.rerank))
    cfg.validate()
    return cfg


def cmd_caption(args) -> int:
    from . import Captioner
    from .serving.batch import caption_paths, caption_to_file, result_record
    from .serving.writeback import write_back

    decode_config(args)  # bad settings are reported before the slow model load
    if args.engine == "ray":
        status = _caption_on_ray(args)
        return status if status == 2 else max(status, _write_from_file(args))
    if args.address is not None:
        raise ValueError("--address only applies to --engine ray")
    captioner = Captioner.load(args.model, args.weights)
    decode = decode_config(args, captioner.checkpoint.length_alpha)
    if args.out:
        summary = caption_to_file(captioner, args.images, args.out, decode, args.batch_size)
        print(f"{summary.captioned} captioned, {summary.failed} failed, {summary.skipped} already in {args.out}",
              file=sys.stderr)
        return max(1 if summary.failed else 0, _write_from_file(args))
    failed = 0
    for paths, results in caption_paths(captioner, args.images, decode, args.batch_size):
        if args.write:
            failed += _report_writes(write_back([result_record(p, r) for p, r in zip(paths, results)], args.write,
                                                _write_options(args)), sys.stderr)
        for path, result in zip(paths, results):
            failed += not result.ok
            if args.json:
                print(json.dumps(result_record(path, result), ensure_ascii=False), flush=True)
            elif not result.ok:
                print(f"error: {result.error}", file=sys.stderr, flush=True)
            else:
                sure = result.assessment
                print(f"{path}: {result.sentence}" + (f"  [{sure.band} confidence, {sure.confidence:.2f}]" if sure else ""),
                      flush=True)
                for c in result.captions[1:]:
                    print(f"    alt ({c.score:.3f}): {c.text}", flush=True)
    return 1 if failed else 0


def _write_options(args):
    from .serving.writeback import WriteOptions

    return WriteOptions(force=args.force, dry_run=getattr(args, "dry_run", False), backup=not args.no_backup,
                        follow_links=args.follow_links)


def _report_writes(results, stream) -> int:
    """Print one line per file and a summary; the number of files that failed."""
    counts: dict[str, int] = {}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
        print(result, file=stream, flush=True)
    print(", ".join(f"{n} {status}" for status, n in counts.items()) or "nothing to write", file=stream)
    return counts.get("failed", 0)


def _write_from_file(args) -> int:
    """``caption --out FILE --write TARGET``: write the captions of the images just captioned."""
    if not args.write:
        return 0
    from .serving.writeback import load_captions, write

    return 1 if _report_writes(write(args.write, load_captions(args.out), args.images, _write_options(args)),
                               sys.stderr) else 0


def cmd_write(args) -> int:
    from .serving.writeback import load_captions, write

    if not args.captions.is_file():
        raise ValueError(f"{args.captions}: no such captions file")
    return 1 if _report_writes(write(args.target, load_captions(args.captions), args.paths, _write_options(args)),
                               sys.stdout) else 0


def _caption_on_ray(args) -> int:
    """``caption --out FILE --engine ray``: the same file as the local engine, captioned by Ray actors."""
    from .serving.model_folder import read_length_alpha, resolve_model_dir
    from .serving.ray_batch import RayUnavailable, caption_to_file_ray, import_ray

    if not args.out:
        raise ValueError("--engine ray writes a file: add --out FILE.jsonl (or .csv)")
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, not {args.workers}")
    try:
        import_ray()  # before anything slow
    except RayUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    folder = resolve_model_dir(args.model)
    decode = decode_config(args, read_length_alpha(folder))
    summary = caption_to_file_ray(folder, args.images, args.out, decode, args.batch_size, args.workers,
                                  args.address, weights=args.weights)
    print(f"{summary.captioned} captioned, {summary.failed} failed, {summary.skipped} already in {args.out}",
          file=sys.stderr)
    return 1 if summary.failed else 0


def cmd_evaluate(args) -> int:
    from . import Captioner
    from .pipeline.data import load_dataset
    from .pipeline.evaluate import evaluate_split, format_metrics, write_report

    decode_config(args)
    # scores are reported per model, not per CPU: float32 unless a precision is asked for
    captioner = Captioner.load(args.model, args.weights, precision=os.environ.get("CAPTIONER_PRECISION") or "float32")
    dataset = load_dataset(args.data, captioner.lang)  # references in the model's language
    decode = decode_config(args, captioner.checkpoint.length_alpha)
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
    from .pipeline.workflows import train_folder

    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None}
    folder = train_folder(TrainConfig(**overrides), args.data, args.out, args.weights, evaluate=not args.no_eval)
    print(f"checkpoint written to {folder}")
    return 0


def cmd_finetune(args) -> int:
    from .pipeline.workflows import finetune_folder_and_card

    finetune_folder_and_card(args.model, args.out, args.data, args.weights, args.epochs, args.learning_rate,
                             args.baseline, evaluate=not args.no_eval)
    print(f"checkpoint written to {args.out}")
    return 0


def cmd_card(args) -> int:
    from .pipeline.workflows import card

    card(args.model, args.data, args.weights, evaluate=not args.no_eval)
    return 0


def cmd_ensemble(args) -> int:
    from .pipeline.workflows import build_ensemble

    build_ensemble(args.members, args.out, args.data, args.weights, evaluate=not args.no_eval)
    return 0


def cmd_calibrate(args) -> int:
    from .pipeline.calibrate import run

    return run(args, report=lambda text: print(text + "\n", flush=True))


def cmd_serve(args) -> int:
    from .serving.api import serve

    if args.max_languages < 1:
        raise ValueError(f"--max-languages must be at least 1 (the default language's model), not {args.max_languages}")
    from .serving.api.app import TOKEN_ENV, is_loopback

    if args.body_timeout <= 0 or args.limit_concurrency < 1:
        raise ValueError("--body-timeout must be above 0 and --limit-concurrency at least 1")
    if not is_loopback(args.host) and not (args.token or os.environ.get(TOKEN_ENV)):
        print(f"warning: serving on {args.host} without a token: anyone who can reach port {args.port} can use "
              f"the API (set --token or {TOKEN_ENV})", file=sys.stderr, flush=True)
    serve(args.host, args.port, args.model, args.weights, max_batch=args.max_batch, max_languages=args.max_languages,
          allowed_hosts=args.allowed_host, token=args.token, body_timeout=args.body_timeout,
          limit_concurrency=args.limit_concurrency)
    return 0


def cmd_weights(args) -> int:
    from .serving.weights import ensure_weights

    path, digest = ensure_weights(args.weights, allow_download=not args.no_download)
    print(f"{path}\nsha256 {digest}")
    return 0


def cmd_quantize(args) -> int:
    from .pipeline.workflows import quantize_encoder

    path = quantize_encoder(args.data, args.images, args.weights)
    print(f"int8 encoder written to {path}; use it with --precision int8 or CAPTIONER_PRECISION=int8")
    return 0


def cmd_info(args) -> int:
    from .serving.info import runtime_info

    for key, value in runtime_info(args.model, args.weights, args.backend).items():
        if value:
            print(f"{key}: {value}")
    return 0
