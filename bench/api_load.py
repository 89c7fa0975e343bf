"""Load test of the HTTP API: a real `python -m captioner serve` process driven by concurrent clients.

    python bench/api_load.py                            # 1, 4 and 16 clients, cross-request batching on and off
    python bench/api_load.py --json docs/api-load.json  # also write the figures

Starts the server on a free loopback port, waits for /healthz to say the model is ready, then for each
concurrency has that many client threads post Flickr8k dev images (one per request, raw image/jpeg body)
until ``--requests`` answers or ``--seconds`` have passed (after an unmeasured round of two requests per
client, so first-time tracing of new batch shapes is not counted), and stops the server. Prints requests per
second and p50/p95 latency per concurrency as JSON, with the machine it ran on. A measurement, not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("CAPTIONER_DATA", ROOT.parent / "shared" / "flickr8k"))


def dev_images(limit: int) -> list[tuple[str, bytes]]:
    listing = DATA / "Flickr_8k.devImages.txt"
    if listing.is_file():
        names = [n.strip() for n in listing.read_text().split() if n.strip()][:limit]
        paths = [DATA / "images" / n for n in names if (DATA / "images" / n).is_file()]
    else:
        paths = []
    if not paths:  # no dataset here: the bundled photos
        paths = sorted((ROOT / "assets").glob("*.jpg"))[:limit]
    return [(p.name, p.read_bytes()) for p in paths]


def post(base: str, name: str, data: bytes) -> tuple[int, float]:
    req = urllib.request.Request(f"{base}/v1/captions?name={name}", data=data,
                                 headers={"Content-Type": "image/jpeg"}, method="POST")
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as err:
        status = err.code
    return status, time.perf_counter() - start


def drive(base: str, images, clients: int, requests: int, seconds: float) -> dict:
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    counter = iter(range(10**9))
    stop_at = time.perf_counter() + seconds

    def client():
        nonlocal failures
        while time.perf_counter() < stop_at:
            with lock:
                i = next(counter)
            if i >= requests:
                return
            name, data = images[i % len(images)]
            status, took = post(base, name, data)
            with lock:
                latencies.append(took)
                failures += status != 200

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ordered = sorted(latencies)
    pct = lambda q: ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]  # noqa: E731
    return {"clients": clients, "requests": len(latencies), "failed": failures, "seconds": round(wall, 2),
            "images_per_s": round(len(latencies) / wall, 2), "p50_ms": round(pct(0.50) * 1000),
            "p95_ms": round(pct(0.95) * 1000), "mean_ms": round(statistics.mean(latencies) * 1000)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="1,4,16", help="concurrencies to run (default %(default)s)")
    parser.add_argument("--requests", type=int, default=96, help="requests per concurrency, at most (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=60, help="time per concurrency, at most (default %(default)s)")
    parser.add_argument("--max-batch", default="16,1",
                        help="server --max-batch settings to compare (16: requests gathered into one encoder "
                             "batch; 1: one request per model call; default %(default)s)")
    parser.add_argument("--images", type=int, default=64, help="distinct dev images (default %(default)s)")
    parser.add_argument("--model", default=None, help="model folder (default: the shipped default)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    from captioner.machine import describe_machine
    from captioner.testing import api_server

    images = dev_images(args.images)
    figures: dict = {"machine": {**describe_machine(), "python": platform.python_version()},
                     "images": len(images), "model": args.model or "default", "runs": []}
    for max_batch in (int(x) for x in args.max_batch.split(",")):
        options = ["--max-batch", str(max_batch)] + (["--model", args.model] if args.model else [])
        with api_server(*options, timeout=180) as server:
            base = server.url
            post(base, *images[0])  # warm-up: the first call traces the compiled steps
            for clients in (int(x) for x in args.clients.split(",")):
                drive(base, images, clients, 2 * clients, args.seconds)  # unmeasured: new batch shapes trace once
                row = {"max_batch": max_batch, "ready_s": round(server.ready_s, 1),
                       **drive(base, images, clients, args.requests, args.seconds)}
                figures["runs"].append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
