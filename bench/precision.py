"""Each encoder precision side by side in one run, on held-out Flickr8k training images (never dev):

* the default caption (beam 3, one image at a time, in process: the marginal cost per image of the CLI)
  at float32, bfloat16, int8 (when its IR is built) and at whatever ``--precision auto`` picks, against
  the plain TensorFlow float32 Xception forward pass (bench/run.py figure i's yardstick);
* the encoder's ms per image at batch 1, 4, 8 and 16 per precision (how ``MAX_BATCH_BY_PRECISION`` is set);
* photo-library throughput, ``caption DIR --out`` as the CLI runs it (``batch.caption_to_file``), images
  per second and per core;
* the CLI's cold start (``caption --json``) with the self-check cached, and the first run without it.

Stacks take turns round by round, so load from other work on a shared machine falls on all alike; each
figure is the best round's median image.

    python bench/precision.py [--images 16] [--rounds 3] --json docs/precision-bench.json
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.report import emit  # noqa: E402


def per_image_ms(fn, pixels) -> float:
    """Median ms per image of ``fn(one_image_batch)`` over ``pixels``."""
    each = []
    for p in pixels:
        start = time.perf_counter()
        fn(p[None])
        each.append(1000 * (time.perf_counter() - start))
    return float(np.median(each))


def cold_start(env: dict) -> float:
    """Wall seconds of ``python -m captioner caption --json assets/cat.jpg`` in a new process."""
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "captioner", "caption", "--json", str(ROOT / "assets" / "cat.jpg")],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env}, timeout=900)
    seconds = time.perf_counter() - start
    if run.returncode:
        raise RuntimeError(run.stderr[-2000:])
    return seconds


def main() -> int:
    from captioner import Captioner
    from captioner.pipeline.data import load_dataset
    from captioner.machine import describe_machine
    from captioner.serving.batch import caption_to_file
    from captioner.serving.encoder import XceptionEncoder
    from captioner.serving.images import load_and_preprocess
    from captioner.serving.model_folder import default_model_dir, read_tune_images
    from captioner.serving.openvino_encoder import OpenVINOXception
    from captioner.serving.precision import cache_folder
    from captioner.serving.weights import ensure_weights

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--library-images", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    dataset = load_dataset(args.data)
    held_out = read_tune_images(default_model_dir())
    paths = [dataset.image_path(n) for n in held_out[:max(args.images, args.library_images)]]
    pixels = np.stack([load_and_preprocess(p) for p in paths[:args.images]])
    weights, digest = ensure_weights(allow_download=False)
    out: dict = {"split": "train (held-out images of models/merge-ensemble/tune_images.txt)", "images": len(pixels),
                 "rounds": args.rounds, "machine": describe_machine(), "cpus_used": os.cpu_count(),
                 "load_average_at_start": round(os.getloadavg()[0], 1)}  # other work on a shared machine

    # cold start: first without a cached self-check (its file moved aside), then with it
    folder = cache_folder()
    aside = tempfile.mkdtemp()
    for f in folder.glob("*.json") if folder.is_dir() else []:
        f.rename(Path(aside) / f.name)
    out["cli_first_run_s"] = round(cold_start({}), 2)
    out["cli_cold_start_cached_s"] = round(min(cold_start({}) for _ in range(3)), 2)
    out["cli_cold_start_float32_s"] = round(min(cold_start({"CAPTIONER_PRECISION": "float32"}) for _ in range(3)), 2)

    auto = Captioner.load(allow_download=False)
    out["auto"] = {"precision": auto.encoder.precision, "note": auto.encoder.precision_note}
    stacks = {"float32": Captioner.load(allow_download=False, precision="float32")}
    for name in ("bfloat16", "int8"):
        try:
            stacks[name] = Captioner.load(allow_download=False, precision=name)
        except Exception as err:  # noqa: BLE001 - int8 not built here
            out[f"{name}_skipped"] = f"{type(err).__name__}: {err}"
    tf_enc = XceptionEncoder(weights, digest, backend="tensorflow")
    decode = auto.default_decode(beam_width=3)

    def caption_one(cap):
        return lambda x: cap.caption_features(cap.encode(x), decode)

    runs = {"tensorflow_xception": lambda x: tf_enc.encode(x), **{k: caption_one(c) for k, c in stacks.items()}}
    for fn in runs.values():
        fn(pixels[:1])  # warm
    best = {k: float("inf") for k in runs}
    for _ in range(args.rounds):
        for k, fn in runs.items():
            best[k] = min(best[k], per_image_ms(fn, pixels))
    texts = {k: [c.caption_features(c.encode(p[None]), decode)[0][0].tokens for p in pixels] for k, c in stacks.items()}
    out["caption_ms"] = {k: round(v, 1) for k, v in best.items()}
    out["vs_tensorflow_xception"] = {k: round(best[k] / best["tensorflow_xception"], 3) for k in stacks}
    out["identical_to_float32"] = {k: float(np.mean([a == b for a, b in zip(texts[k], texts["float32"])]))
                                   for k in stacks}

    # encoder batch sizes per precision
    encoders = {k: OpenVINOXception(None, digest, precision=k) for k in stacks}
    batch_ms = {k: {} for k in encoders}
    for _ in range(args.rounds):
        for batch in (1, 4, 8, 16):
            for k, enc in encoders.items():
                enc.max_batch = batch
                start = time.perf_counter()
                for i in range(0, len(pixels), batch):
                    enc.run(pixels[i:i + batch])
                ms = 1000 * (time.perf_counter() - start) / len(pixels)
                batch_ms[k][batch] = round(min(batch_ms[k].get(batch, float("inf")), ms), 1)
    out["encoder_ms_per_image_by_batch"] = batch_ms

    # photo-library throughput: caption DIR --out, as the CLI does it
    library = paths[:args.library_images]
    throughput = {}
    for k, cap in stacks.items():
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            caption_to_file(cap, library, Path(tmp) / "out.jsonl", cap.default_decode(), 16, progress=False)
            seconds = time.perf_counter() - start
        throughput[k] = {"images_per_s": round(len(library) / seconds, 2),
                         "images_per_s_per_core": round(len(library) / seconds / (os.cpu_count() or 1), 2)}
    out["library_throughput"] = {"images": len(library), "batch": 16, **throughput}
    out["load_average_at_end"] = round(os.getloadavg()[0], 1)
    out["command"] = "python bench/precision.py --json docs/precision-bench.json"
    return emit(out, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
