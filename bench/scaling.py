"""How training time and the feature cache grow with data (1k, 2k, 4k, 7k Flickr8k images), and what
that implies for Flickr30k (31k images) and COCO (123k images).

    python bench/scaling.py [--sizes 1000,2000,4000,7091] [--json out.json]

Features come from the cache (run `python -m captioner train` once first); each size trains the default
decoder for one epoch and times it. Encoding time per image is measured on a batch of 32.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

POOLED_BYTES = 2048 * 4 + 128  # one float32 .npy of pooled features, header included
SPATIAL_FP16_BYTES = 10 * 10 * 2048 * 2  # 10x10x2048 attention features at float16
CAPTIONS_PER_IMAGE = 5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,2000,4000,7091")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from captioner.config import TrainConfig
    from captioner.pipeline.data import load_dataset
    from captioner.serving.decoders import build_model
    from captioner.serving.encoder import XceptionEncoder
    from captioner.pipeline.features import extract_features
    from captioner.serving.images import load_and_preprocess
    from captioner.pipeline.engine import Batches
    from captioner.pipeline.train import encode_captions, make_dataset, teacher_forcing_steps
    from captioner.serving.vocab import Vocabulary

    dataset = load_dataset()
    encoder = XceptionEncoder.load(allow_download=False)
    names = dataset.split_names("train") + dataset.split_names("dev")
    pixels = np.stack([load_and_preprocess(dataset.image_path(n)) for n in names[:32]])
    encoder.encode(pixels[:2])
    start = time.perf_counter()
    encoder.encode(pixels)
    encode_s = (time.perf_counter() - start) / len(pixels)
    extracted = extract_features(encoder, [dataset.image_path(n) for n in names], progress=False)
    features = dict(zip(extracted.names, extracted.features))
    cfg = TrainConfig()
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        subset = names[:size]
        vocab = Vocabulary.fit((c for n in subset for c in dataset.captions[n]), cfg.min_word_count)
        idx, seqs = encode_captions(dataset, subset, vocab, cfg.max_caption_words)
        feats = np.stack([features[n] for n in subset])
        model = build_model(len(vocab), cfg)
        steps = teacher_forcing_steps(model, cfg)  # the training loop's own compiled steps
        ds = make_dataset(feats, idx, seqs, cfg.batch_size, True, 0)
        steps.train_epoch(Batches(ds.take(20)))  # trace outside the timing (several batch widths: one general trace)
        start = time.perf_counter()
        steps.train_epoch(Batches(ds))
        epoch_s = time.perf_counter() - start
        rows.append({"images": size, "captions": len(seqs), "epoch_s": round(epoch_s, 1),
                     "pooled_cache_mb": round(size * POOLED_BYTES / 2**20, 1),
                     "spatial_fp16_cache_mb": round(size * SPATIAL_FP16_BYTES / 2**20, 1)})
        print(json.dumps(rows[-1]), flush=True)
    per_caption = np.polyfit([r["captions"] for r in rows], [r["epoch_s"] for r in rows], 1)
    projections = {}
    for name, n_images in (("Flickr30k", 31_783), ("COCO", 123_287)):
        epoch_s = float(np.polyval(per_caption, n_images * CAPTIONS_PER_IMAGE))
        projections[name] = {"images": n_images, "encode_hours_1_machine": round(n_images * encode_s / 3600, 2),
                             "epoch_minutes_1_machine": round(epoch_s / 60, 1),
                             "pooled_cache_gb": round(n_images * POOLED_BYTES / 2**30, 2),
                             "spatial_fp16_cache_gb": round(n_images * SPATIAL_FP16_BYTES / 2**30, 1)}
        print(name, json.dumps(projections[name]), flush=True)
    from captioner.machine import describe_machine

    summary = {"machine": describe_machine(), "encode_s_per_image": encode_s, "sizes": rows, "seconds_per_caption_epoch": per_caption.tolist(),
               "projections": projections}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
