"""tf.distribute: the same training in one process and on two loopback workers gives the same curves
and weights; sharding of items and of feature extraction."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from captioner.pipeline.distributed import cluster_spec, shard
from conftest import ROOT


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_shards_are_disjoint_and_complete():
    items = list(range(11))
    shards = [shard(items, i, 3) for i in range(3)]
    assert sorted(x for s in shards for x in s) == items
    assert shards[0] == [0, 3, 6, 9]


def test_cluster_spec_reads_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert cluster_spec() == (0, 1)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2", "c:3"]},
                                                "task": {"type": "worker", "index": 2}}))
    assert cluster_spec() == (2, 3)
    monkeypatch.setenv("TF_CONFIG", "{broken")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        cluster_spec()


def _start_run(out: Path, tf_config: dict | None) -> subprocess.Popen:
    """tests/distributed_worker.py in a fresh process (CPU only), one process or one worker of a cluster."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    if tf_config:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen([sys.executable, str(ROOT / "tests" / "distributed_worker.py"), str(out)], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# One process and two workers sum the same per-word losses in a different order and all-reduce the
# gradients: float32 rounding, amplified a little by Adam over four epochs. Measured: losses agree to
# about 1e-7 relative, weights to about 1e-6 absolute; training the workers without label smoothing
# moves the losses by more than 1e-2.
RTOL, ATOL = 1e-4, 1e-5


def test_one_process_and_two_workers_train_the_same(tmp_path):
    """The same tiny training (label smoothing 0.1, held-out CIDEr selection, checkpoint averaging, LR
    halving) in one process and on two loopback workers: the same loss curves and final weights."""
    import keras

    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    runs = {"single": _start_run(tmp_path / "single", None)}
    for index in range(2):
        runs[f"worker{index}"] = _start_run(tmp_path / f"worker{index}",
                                            {"cluster": cluster, "task": {"type": "worker", "index": index}})
    results = {}
    try:
        for name, proc in runs.items():
            out, err = proc.communicate(timeout=420)
            assert proc.returncode == 0, f"{name} failed:\n{err[-3000:]}"
            results[name] = json.loads(out.strip().splitlines()[-1])
    finally:
        for proc in runs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    single, first, second = results["single"], results["worker0"], results["worker1"]
    assert (single["workers"], single["replicas"]) == (1, 1)
    assert [(r["worker"], r["workers"], r["replicas"]) for r in (first, second)] == [(0, 2, 2), (1, 2, 2)]
    for result in results.values():
        assert result["label_smoothing"] == 0.1 and result["selected_on"] == "tune_cider"
        assert result["epochs_run"] == len(result["tune_cider"]) == 4 and "averaged_epochs" in result
    for folder in ("single", "worker0"):
        saved = json.loads((tmp_path / folder / "training.json").read_text())
        assert saved["label_smoothing"] == 0.1 and saved["selected_on"] == "tune_cider"
    for key in ("loss", "val_loss"):  # per epoch
        np.testing.assert_allclose(first[key], single[key], rtol=RTOL, err_msg=key)
        assert first[key] == second[key]  # all-reduced: the workers agree exactly
    np.testing.assert_allclose(first["tune_cider"], single["tune_cider"], rtol=RTOL, atol=ATOL)
    assert (first["best_epoch"], first["averaged_epochs"]) == (single["best_epoch"], single["averaged_epochs"])

    def weights(folder: str) -> list[np.ndarray]:
        return keras.models.load_model(tmp_path / folder / "decoder.keras", compile=False).get_weights()

    for a, b, c in zip(weights("single"), weights("worker0"), weights("worker1")):
        np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL)
        np.testing.assert_array_equal(b, c)


def test_feature_extraction_is_sharded_across_workers(tmp_path, monkeypatch, make_image):
    """Two workers share a cache folder: each encodes only its shard, then both read every feature."""
    import threading

    from captioner.pipeline.workflows import sharded_features
    from test_features import CountingEncoder

    monkeypatch.setenv("CAPTIONER_CACHE_DIR", str(tmp_path / "shared-cache"))
    paths = [make_image(f"{i}.jpg", color=(20 * i, 5, 5)) for i in range(6)]
    encoders = [CountingEncoder(), CountingEncoder()]
    results: dict[int, dict] = {}

    def worker(index: int) -> None:
        results[index] = sharded_features(encoders[index], paths, index, 2)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [e.encoded for e in encoders] == [3, 3]  # disjoint halves, nothing encoded twice
    assert sorted(results[0]) == sorted(results[1]) == sorted(p.name for p in paths)
    for name in results[0]:
        np.testing.assert_array_equal(results[0][name], results[1][name])
