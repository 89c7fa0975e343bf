"""Batch captioning throughput: the single-process path (`caption --out`) against Ray Data with 1 and 2
workers, on real Flickr8k dev images, and what that projects to for several machines.

    python bench/ray_batch.py [--images 64] [--batch-size 16] [--json docs/ray-batch.json]

Each configuration writes the same JSONL file from scratch (the default model, its own decoding) in a fresh
process. "wall_s" runs from the call to the last line written, everything included (end to end:
"overall_images_per_s"); "startup_s" is the part before captioning starts (model load, Ray start, actor
start); "images_per_s" is the steady rate after it. For Ray the actors log when each batch starts and ends,
so "overhead_per_batch_s" is the mean idle gap an actor waits between two batches (Ray's scheduling and
transfer cost) and "compute_per_batch_s" the mean captioning time of one batch.
"local-1thread" is the single-process path with TensorFlow (and OpenMP) held to one thread: one Ray
actor's work without Ray. The projection for M machines of C CPUs (one worker per CPU) is
M * C * per-worker rate (batch / (compute + overhead) of one worker) * the 1->2 worker efficiency measured
here, plus the startup once.
The whole run stops itself after --timeout seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _timed_writes(module):
    """Wrap ``module.append_records`` so each written batch is timestamped; returns the list of stamps."""
    stamps: list[tuple[float, int]] = []
    original = module.append_records

    def append_records(out, batches, **kw):
        def stamped():
            for records in batches:
                yield records
                stamps.append((time.perf_counter(), len(records)))
        return original(out, stamped(), **kw)

    module.append_records = append_records
    return stamps


def _rates(start: float, stamps: list[tuple[float, int]]) -> dict:
    """From the driver's write times: the first batch stands in for startup + one batch of work."""
    images = sum(n for _, n in stamps)
    first_t, first_n = stamps[0]
    steady = (images - first_n) / (stamps[-1][0] - first_t) if len(stamps) > 1 else first_n / (first_t - start)
    return {"images": images, "batches": len(stamps), "wall_s": round(stamps[-1][0] - start, 2),
            "startup_s": round(first_t - start - first_n / steady, 2), "images_per_s": round(steady, 3),
            "overall_images_per_s": round(images / (stamps[-1][0] - start), 3)}


def run_local(paths: list[str], batch_size: int, threads: int | None) -> dict:
    """One single-process run (in this process: call it in a fresh one per setting)."""
    if threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    from captioner import Captioner
    from captioner.serving import batch

    start = time.perf_counter()
    captioner = Captioner.load(allow_download=False)
    stamps = _timed_writes(batch)
    with tempfile.TemporaryDirectory() as tmp:
        batch.caption_to_file(captioner, [Path(p) for p in paths], Path(tmp) / "out.jsonl", batch_size=batch_size,
                              progress=False)
    return _rates(start, stamps)


def run_ray(paths: list[str], batch_size: int, workers: int) -> dict:
    """One Ray run; actors log (pid, start, end, images) per batch to a file (same machine: one clock)."""
    from captioner.serving import ray_batch

    log = Path(tempfile.mkdtemp()) / "batches.log"
    log_name = str(log)

    class TimedActor(ray_batch.CaptionActor):  # pickled by value (defined in __main__)
        def __call__(self, batch):
            begin = time.time()
            out = super().__call__(batch)
            with open(log_name, "a") as fh:
                fh.write(f"{os.getpid()} {begin} {time.time()} {len(batch['path'])}\n")
            return out

    ray_batch.CaptionActor = TimedActor
    stamps = _timed_writes(ray_batch)
    start_wall, start = time.time(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ray_batch.caption_to_file_ray(None, [Path(p) for p in paths], Path(tmp) / "out.jsonl", batch_size=batch_size,
                                      workers=workers, progress=False)
    end_wall = start_wall + (stamps[-1][0] - start)
    rows = [line.split() for line in log.read_text().splitlines()]
    batches = sorted((int(pid), float(b), float(e), int(n)) for pid, b, e, n in rows)
    gaps = [b2 - e1 for (p1, _, e1, _), (p2, b2, _, _) in zip(batches, batches[1:]) if p1 == p2]
    first = min(b for _, b, _, _ in batches)
    images = sum(n for *_, n in batches)
    compute = sum(e - b for _, b, e, _ in batches) / len(batches)
    overhead = sum(gaps) / len(gaps) if gaps else 0.0
    return {"images": images, "batches": len(batches), "actors": len({p for p, *_ in batches}),
            "wall_s": round(end_wall - start_wall, 2), "startup_s": round(first - start_wall, 2),
            "images_per_s": round(images / (end_wall - first), 3),
            "overall_images_per_s": round(images / (end_wall - start_wall), 3),
            "compute_per_batch_s": round(compute, 3), "overhead_per_batch_s": round(overhead, 3)}


def in_subprocess(kind: str, paths: list[str], batch_size: int, arg: int | None, timeout: float) -> dict:
    """Each measurement in a fresh Python: TensorFlow's thread pools and Ray start clean every time."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(paths, fh)
    try:
        env = {**os.environ, **({"OMP_NUM_THREADS": str(arg)} if kind == "local" and arg else {})}
        result = subprocess.run([sys.executable, __file__, "--_one", kind, "--_arg", str(arg or 0), "--_paths", fh.name,
                                 "--batch-size", str(batch_size)], capture_output=True, text=True, timeout=timeout,
                                env=env)
    finally:
        os.unlink(fh.name)
    if result.returncode != 0:
        raise RuntimeError(f"{kind} run failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def project(results: dict, batch_size: int, machines=(1, 2, 4, 8, 16), cpus_per_machine: int = 16,
            collection: int = 1_000_000) -> dict:
    """Images/s and hours for ``collection`` images on M machines of ``cpus_per_machine`` CPUs."""
    one, two = results["ray-1"], results["ray-2"]
    per_worker = batch_size / (one["compute_per_batch_s"] + one["overhead_per_batch_s"])
    efficiency = min(1.0, two["images_per_s"] / (2 * one["images_per_s"]))
    rows = []
    for m in machines:
        rate = m * cpus_per_machine * per_worker * efficiency
        rows.append({"machines": m, "workers": m * cpus_per_machine, "images_per_s": round(rate, 1),
                     "hours_for_collection": round((one["startup_s"] + collection / rate) / 3600, 2)})
    return {"per_worker_images_per_s": round(per_worker, 3), "scaling_efficiency_1_to_2": round(efficiency, 3),
            "per_batch_overhead_s": one["overhead_per_batch_s"], "startup_s": one["startup_s"],
            "cpus_per_machine": cpus_per_machine, "collection_images": collection, "rows": rows,
            "assumes": "one 1-CPU worker per CPU; the efficiency measured from 1 to 2 workers here holds; "
                       "photos and model readable at the same paths on every node; the driver keeps up"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=64, help="Flickr8k dev images (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--data", type=Path, default=None, help="dataset folder (default: the usual search)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--timeout", type=float, default=1200, help="stop after this many seconds (default %(default)s)")
    parser.add_argument("--_one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_arg", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--_paths", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._one:  # a child: one measurement, one JSON line
        paths = json.loads(args._paths.read_text())
        if args._one == "local":
            result = run_local(paths, args.batch_size, args._arg or None)
        else:
            result = run_ray(paths, args.batch_size, args._arg)
        print(json.dumps(result))
        return 0

    signal.signal(signal.SIGALRM, lambda *_: sys.exit(f"bench stopped after --timeout {args.timeout:.0f} s"))
    signal.alarm(int(args.timeout))
    deadline = time.monotonic() + args.timeout
    from captioner.pipeline.data import load_dataset
    from captioner.machine import describe_machine
    from captioner.serving.model_folder import default_model_dir

    dataset = load_dataset(args.data)
    paths = [str(dataset.image_path(n)) for n in dataset.split_names("dev")[:args.images]]
    configs = [("local", "local", None), ("local-1thread", "local", 1), ("ray-1", "ray", 1), ("ray-2", "ray", 2)]
    results = {}
    for name, kind, arg in configs:
        results[name] = in_subprocess(kind, paths, args.batch_size, arg, max(10.0, deadline - time.monotonic()))
        print(f"{name}: {results[name]}", file=sys.stderr, flush=True)
    import ray

    report = {"machine": describe_machine(), "model": default_model_dir().name, "images": len(paths),
              "batch_size": args.batch_size, "ray_version": ray.__version__, "results": results,
              "projection": project(results, args.batch_size),
              "command": f"python bench/ray_batch.py --images {args.images} --batch-size {args.batch_size}"}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
