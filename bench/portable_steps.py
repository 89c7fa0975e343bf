"""Decoding speed without TensorFlow: the default ensemble's TensorFlow stepper against the NumPy and
OpenVINO steppers of ``captioner/serving/decoders/portable.py``, on the same features and settings.

    python bench/portable_steps.py [--model models/merge-ensemble] [--rounds 7] [--blas-unlimited] [--busy]

Features are the encoder's, of the pictures in assets/ (8 of them). Each case (greedy at batch 1, beam 3
at batch 1 and at batch 8) decodes all of them; engines take turns within every round, so a busy
machine slows them alike, and the median round counts. Ratios are against TensorFlow in the same run.
"openvino" is what ``portable_stepper`` returns by default (``OPENVINO_THREADS`` threads); "openvino,
1 thread" the same step on one. ``--blas-unlimited`` adds NumPy with OpenBLAS left at all cores (what
the NumPy stepper avoids); ``--busy`` keeps one core busy with a spinning process throughout (a
training, another request), to see which engines degrade.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
CASES = (("greedy, batch 1", 1, 1), ("beam 3, batch 1", 3, 1), ("beam 3, batch 8", 3, 8))


def cpu_description() -> str:
    """The CPU model, core count and the vector flags that matter for these kernels (from /proc/cpuinfo)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    has = [f for f in FLAGS if f in flags]
    amx = "AMX: yes" if any(f.startswith("amx") for f in flags) else "AMX: no"
    return f"{model}, {os.cpu_count()} CPUs; flags: {' '.join(has) or 'unknown'}; {amx}"


def load_features() -> np.ndarray:
    from captioner.serving.encoder import XceptionEncoder
    from captioner.serving.images import load_image, preprocess_image

    paths = sorted(p for p in (ROOT / "assets").iterdir() if p.suffix.lower() in (".jpg", ".png"))
    encoder = XceptionEncoder.load(allow_download=False)
    return encoder.encode(np.stack([preprocess_image(load_image(p)) for p in paths]))


def decode_all(stepper, features, vocab, decode, batch: int) -> list[list[int]]:
    from captioner.serving.decoding import decode_with

    ids = []
    for start in range(0, len(features), batch):
        ids += [h[0].ids for h in decode_with(stepper, features[start:start + batch], vocab, decode)]
    return ids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "merge-ensemble")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--blas-unlimited", action="store_true")
    parser.add_argument("--busy", action="store_true", help="keep one core busy during the run")
    args = parser.parse_args()
    if args.busy:
        import atexit
        import subprocess

        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        atexit.register(spinner.kill)

    from captioner.serving.decoders import checkpoint_stepper
    from captioner.serving.decoders.portable import OPENVINO_THREADS, NumPyStepper, portable_stepper
    from captioner.serving.model_folder import load_checkpoint

    print(f"CPU: {cpu_description()}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average (1 min) before the run: {load:.2f}")
    features = load_features()
    checkpoint = load_checkpoint(args.model)
    timings = {}
    t = time.perf_counter()
    engines = {"tensorflow": checkpoint_stepper(checkpoint)}
    timings["tensorflow"] = time.perf_counter() - t
    for name in ("numpy", "openvino"):
        t = time.perf_counter()
        engines[name] = portable_stepper(args.model, engine=name)
        timings[name] = time.perf_counter() - t
    if OPENVINO_THREADS != 1:
        engines["openvino, 1 thread"] = portable_stepper(args.model, engine="openvino", threads=1)
    if args.blas_unlimited:
        unlimited = portable_stepper(args.model, engine="numpy")
        unlimited.blas_threads = None
        engines["numpy, BLAS unlimited"] = unlimited
    print("stepper set-up, s: " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items())
          + " (TensorFlow's after load_checkpoint; the portable ones read decoder.keras themselves)")
    print(f"model: {args.model}; {len(features)} pictures from assets/; {args.rounds} rounds, median\n")

    header = f"{'case':<17}" + "".join(f"{name:>22}" for name in engines)
    print(header + "   (ms per caption; x = speed-up over TensorFlow)")
    for label, width, batch in CASES:
        decode = checkpoint.default_decode(beam_width=width)
        reference = decode_all(engines["tensorflow"], features, checkpoint.vocab, decode, batch)  # also a warm-up
        same = {}
        for name, stepper in engines.items():
            same[name] = decode_all(stepper, features, checkpoint.vocab, decode, batch) == reference
        rounds = {name: [] for name in engines}
        for _ in range(args.rounds):
            for name, stepper in engines.items():
                t = time.perf_counter()
                decode_all(stepper, features, checkpoint.vocab, decode, batch)
                rounds[name].append((time.perf_counter() - t) * 1000 / len(features))
        ms = {name: statistics.median(values) for name, values in rounds.items()}
        base = ms["tensorflow"]
        cells = "".join(f"{v:.2f} ({base / v:.2f}x){'' if same[n] else ' DIFF'}".rjust(22) for n, v in ms.items())
        print(f"{label:<17}{cells}")
    print("\nDIFF would mark captions that differ from TensorFlow's. "
          f"NumPy steps with OpenBLAS limited to {NumPyStepper.blas_threads} thread(s); OpenVINO steps on "
          f"{OPENVINO_THREADS}" + ("; one core kept busy throughout." if args.busy else "."))
    return 0


if __name__ == "__main__":
    sys.exit(main())
