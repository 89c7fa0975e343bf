"""Training beyond one process with ``tf.distribute``.

* One machine, several GPUs: ``MirroredStrategy``.
* Several machines: ``MultiWorkerMirroredStrategy``, configured by the ``TF_CONFIG`` environment
  variable that every worker gets (the same cluster, its own task index), e.g. for worker 0 of two::

      TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'

Training itself runs the same loop in every case (``engine.run_epochs`` with ``GradientSteps``, which
works under any strategy); this module only says which strategy and which share of the work is whose.

Feature extraction is sharded: worker i encodes images i, i+n, i+2n, … into the shared feature cache
(``CAPTIONER_CACHE_DIR`` on a shared file system), then waits until every feature is there.
"""
from __future__ import annotations

import json
import os
import time
from typing import Sequence, TypeVar

T = TypeVar("T")


def cluster_spec() -> tuple[int, int]:
    """(this worker's index, number of workers) from ``TF_CONFIG``; (0, 1) when not distributed."""
    try:
        config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    except ValueError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON ({err})") from err
    workers = config.get("cluster", {}).get("worker", [])
    if len(workers) <= 1:
        return 0, 1
    index = int(config.get("task", {}).get("index", 0))
    if not 0 <= index < len(workers):
        raise ValueError(f"TF_CONFIG task index {index} is outside the {len(workers)} workers")
    return index, len(workers)


def distribution_strategy():
    """MultiWorkerMirrored with a multi-worker TF_CONFIG, Mirrored with several GPUs, else the default.

    Must be called before any other TensorFlow work in the process (a tf.distribute rule).
    """
    import tensorflow as tf

    _, n_workers = cluster_spec()
    if n_workers > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def shard(items: Sequence[T], index: int, count: int) -> list[T]:
    """Every ``count``-th item starting at ``index``: disjoint shards that cover ``items``."""
    return list(items[index::count])


def wait_for(predicate, what: str, timeout_s: float = 3600.0, poll_s: float = 2.0) -> None:
    """Block until ``predicate()`` is true (other workers finishing their shard), or raise TimeoutError."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)
