"""Training beyond one process with ``tf.distribute``.

* One machine, several GPUs: ``MirroredStrategy``.
* Several machines: ``MultiWorkerMirroredStrategy``, configured by the ``TF_CONFIG`` environment
  variable that every worker gets (the same cluster, its own task index), e.g. for worker 0 of two::

      TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'

Feature extraction is sharded: worker i encodes images i, i+n, i+2n, … into the shared feature cache
(``CAPTIONER_CACHE_DIR`` on a shared file system), then waits until every feature is there.
"""
from __future__ import annotations

import json
import os
import time
from typing import Sequence, TypeVar

import numpy as np

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


def fit_distributed(model, train_ds, dev_ds, epochs: int, steps: int, dev_steps: int, patience: int,
                    strategy, log=print) -> dict[str, list[float]]:
    """A plain training loop for multi-worker runs (Keras 3's ``fit`` does not support
    MultiWorkerMirroredStrategy). Masked per-word cross-entropy, early stopping on dev loss; the best
    epoch's weights are restored at the end. Returns ``{"loss": [...], "val_loss": [...]}``.
    """
    import keras
    import tensorflow as tf

    per_token = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
    train_iter = iter(strategy.experimental_distribute_dataset(train_ds))

    def summed_loss(batch, training: bool):
        inputs, targets, weights = batch
        logits = model(inputs, training=training)  # (B, T, V)
        return tf.reduce_sum(per_token(targets, logits) * weights), tf.reduce_sum(weights)

    @tf.function
    def train_step():
        def step(batch):
            with tf.GradientTape() as tape:
                total, count = summed_loss(batch, True)
                # gradients are summed over replicas, so divide by the global number of words
                global_count = tf.distribute.get_replica_context().all_reduce("SUM", count)
                loss = total / global_count
            grads = tape.gradient(loss, model.trainable_variables)
            model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return total, count

        total, count = strategy.run(step, args=(next(train_iter),))
        return strategy.reduce("SUM", total, axis=None), strategy.reduce("SUM", count, axis=None)

    @tf.function
    def dev_step(iterator):
        total, count = strategy.run(lambda batch: summed_loss(batch, False), args=(next(iterator),))
        return strategy.reduce("SUM", total, axis=None), strategy.reduce("SUM", count, axis=None)

    history: dict[str, list[float]] = {"loss": [], "val_loss": []}
    best, best_weights, waited = float("inf"), None, 0
    for epoch in range(1, epochs + 1):
        sums = np.zeros(2)
        for _ in range(steps):
            sums += [float(x) for x in train_step()]
        dev_iter = iter(strategy.experimental_distribute_dataset(dev_ds))
        dev_sums = np.zeros(2)
        for _ in range(dev_steps):
            dev_sums += [float(x) for x in dev_step(dev_iter)]
        history["loss"].append(sums[0] / max(sums[1], 1))
        history["val_loss"].append(dev_sums[0] / max(dev_sums[1], 1))
        log(f"epoch {epoch}: loss {history['loss'][-1]:.4f}, dev loss {history['val_loss'][-1]:.4f}")
        if history["val_loss"][-1] < best:
            best, best_weights, waited = history["val_loss"][-1], model.get_weights(), 0
        else:
            waited += 1
            if waited >= patience:
                break
    if best_weights is not None:
        model.set_weights(best_weights)
    return history
