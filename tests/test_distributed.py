"""tf.distribute: two worker processes on loopback ports train together and end with the same weights."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

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


def test_two_workers_train_together_and_agree(tmp_path):
    import keras

    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "tests" / "distributed_worker.py"),
                                       str(tmp_path / f"worker{index}")], env=env, cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-3000:]
            outputs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            proc.kill()
    assert [o["replicas"] for o in outputs] == [2, 2]
    assert outputs[0]["loss"] == pytest.approx(outputs[1]["loss"], rel=1e-5)  # losses are all-reduced
    weights = [keras.models.load_model(tmp_path / f"worker{i}" / "decoder.keras", compile=False).get_weights()
               for i in range(2)]
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    fresh = keras.models.load_model(tmp_path / "worker0" / "decoder.keras", compile=False)
    assert fresh.count_params() > 0


def test_feature_extraction_is_sharded_across_workers(tmp_path, monkeypatch, make_image):
    """Two workers share a cache folder: each encodes only its shard, then both read every feature."""
    import threading

    from captioner.cli import _sharded_features
    from test_features import CountingEncoder

    monkeypatch.setenv("CAPTIONER_CACHE_DIR", str(tmp_path / "shared-cache"))
    paths = [make_image(f"{i}.jpg", color=(20 * i, 5, 5)) for i in range(6)]
    encoders = [CountingEncoder(), CountingEncoder()]
    results: dict[int, dict] = {}

    def worker(index: int) -> None:
        results[index] = _sharded_features(encoders[index], paths, index, 2)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [e.encoded for e in encoders] == [3, 3]  # disjoint halves, nothing encoded twice
    assert sorted(results[0]) == sorted(results[1]) == sorted(p.name for p in paths)
    for name in results[0]:
        np.testing.assert_array_equal(results[0][name], results[1][name])
