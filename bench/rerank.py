"""What consensus reranking costs: beam-3 captions of the same dev pictures ranked by the decoder's
score and by consensus with the nearest training photos (``serving/rerank.py``), timed in one run.

    python bench/rerank.py [--lang de] [--images 256] [--repeats 3]

Features are computed once and not timed; the figure is decoding plus ranking per picture, the best of
``--repeats`` runs. A measurement, not a test: nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    from captioner.machine import describe_machine, format_machine
    from captioner.pipeline.data import load_dataset
    from captioner.pipeline.features import extract_features
    from captioner.serving.captioner import Captioner

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lang", default="de")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", default=None)
    args = parser.parse_args()
    captioner = Captioner.load(lang=args.lang, allow_download=False, precision="float32")
    dataset = load_dataset(args.data, args.lang)
    names = dataset.split_names("dev")[:args.images]
    features = extract_features(captioner.encoder, [dataset.image_dir / n for n in names], progress=False,
                                kind=captioner.feature_kind).features
    decode = captioner.default_decode(beam_width=3)
    best = {}
    for _ in range(args.repeats):
        for ranking in ("score", "consensus"):
            start = time.perf_counter()
            for i in range(0, len(features), 16):  # the page and the API caption a few pictures at a time
                captioner.caption_features(features[i:i + 16], replace(decode, rerank=ranking))
            ms = 1000 * (time.perf_counter() - start) / len(features)
            best[ranking] = min(best.get(ranking, ms), ms)
    print(f"{captioner.checkpoint.folder.name}, {len(features)} dev pictures, beam 3, batches of 16, "
          f"{format_machine(describe_machine())}")
    for ranking, ms in best.items():
        print(f"  {ranking:9s} {ms:6.2f} ms per picture  ({ms / best['score']:.2f}x the score ranking)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
