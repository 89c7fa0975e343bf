"""Store a model folder's decoder weights as float16 on disk, after measuring that the captions stay the
same: dev captions (beam 3, the folder's tuned length exponent) from the float32 file and from a float16
copy are compared image by image, with dev BLEU-4 and CIDEr-D of both.

    python tools/float16_storage.py models/merge-de [--data ../shared/flickr8k] [--apply]

Without ``--apply`` nothing is changed; with it the folder is rewritten (``config.json`` then says
``"storage": "float16"``) when at least ``--min-identical`` of the captions are identical.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from captioner.config import DecodeConfig
    from captioner.pipeline.data import load_dataset
    from captioner.pipeline.evaluate import evaluate_split
    from captioner.machine import describe_machine
    from captioner.serving import model_folder as mf
    from captioner.serving.captioner import Captioner
    from captioner.serving.encoder import XceptionEncoder

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--apply", action="store_true", help="rewrite the folder when the captions hold")
    parser.add_argument("--min-identical", type=float, default=0.99)
    args = parser.parse_args()
    checkpoint = mf.load_checkpoint(args.folder)
    dataset = load_dataset(args.data, checkpoint.config.lang)
    encoder = XceptionEncoder.load(allow_download=False)
    decode = replace(DecodeConfig(beam_width=3), length_alpha=checkpoint.length_alpha)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / args.folder.name
        shutil.copytree(args.folder, copy)
        saved = mf.store_float16(copy)
        runs = {name: evaluate_split(Captioner(encoder, mf.load_checkpoint(folder)), dataset, "dev", decode, progress=False)
                for name, folder in (("float32", args.folder), ("float16", copy))}
        sizes = {"float32": (args.folder / mf.DECODER_FILE).stat().st_size, "float16": (copy / mf.DECODER_FILE).stat().st_size}
    a, b = runs["float32"].predictions, runs["float16"].predictions
    identical = sum(a[n] == b[n] for n in a) / len(a)
    report = {"folder": str(args.folder), "split": "dev", "decoding": "beam 3", "images": len(a),
              "identical_captions": round(identical, 4),
              "metrics": {k: {m: round(r.metrics[m], 4) for m in ("BLEU-4", "CIDEr")} for k, r in runs.items()},
              "decoder_mb": {k: round(v / 2**20, 2) for k, v in sizes.items()}, "saved_mb": round(saved / 2**20, 2),
              "machine": describe_machine(), "command": f"python tools/float16_storage.py {args.folder}"}
    print(json.dumps(report, indent=2, ensure_ascii=False))
    if args.apply:
        if identical < args.min_identical:
            print(f"not applied: {identical:.1%} identical < {args.min_identical:.0%}", file=sys.stderr)
            return 1
        mf.store_float16(args.folder)
        print(f"{args.folder}: decoder stored as float16", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
