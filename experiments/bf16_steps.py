"""Decoder steps on OpenVINO in bfloat16 against float32: ms per default caption (beam 3 over the
ensemble, one image at a time) and the share of identical captions on dev images, for 1 and 2 threads.

    python experiments/bf16_steps.py [--images 300] [--json FILE]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.report import emit  # noqa: E402


def main() -> int:
    import captioner.serving.decoders.portable as portable
    from captioner import Captioner
    from captioner.pipeline.data import load_dataset
    from captioner.pipeline.features import extract_features
    from captioner.machine import describe_machine

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    captioner = Captioner.load(allow_download=False)
    dataset = load_dataset()
    dev = dataset.split_names("dev")[:args.images]
    feats = extract_features(captioner.encoder, [dataset.image_path(n) for n in dev], progress=False,
                             kind="pooled").features
    decode = captioner.default_decode(beam_width=3)
    runs = {}
    for threads in (1, 2):
        for precision in ("f32", "bf16"):
            portable.OPENVINO_THREADS, portable.OPENVINO_PRECISION = threads, precision
            captioner.stepper = portable.portable_stepper(captioner.checkpoint.folder, vocab_size=len(captioner.vocab))
            captions = [c[0].tokens for c in captioner.caption_features(feats, decode)]
            for _ in range(3):
                captioner.caption_features(feats[:1], decode)
            start = time.perf_counter()
            for i in range(40):
                captioner.caption_features(feats[i:i + 1], decode)
            runs[f"{precision}, {threads} thread(s)"] = ((time.perf_counter() - start) / 40 * 1000, captions)
    base = runs["f32, 1 thread(s)"][1]
    return emit({"split": "dev", "images": len(dev), "decoding": "beam 3", "model": captioner.checkpoint.folder.name,
                 "decode_ms_per_caption": {k: round(ms, 2) for k, (ms, _) in runs.items()},
                 "identical_to_f32": {k: round(float(np.mean([a == b for a, b in zip(c, base)])), 4)
                                      for k, (_, c) in runs.items()},
                 "machine": describe_machine(), "command": "python experiments/bf16_steps.py"}, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
