"""Batch captioning on Ray (``caption --out FILE --engine ray``): a real two-node cluster on loopback (a head
and a worker node, started with ``ray start`` as separate processes) writes the same records as the
single-process path, every image once, errors included, and resumes without duplicates."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from captioner.cli import main
from captioner.serving.batch import caption_to_file
from captioner.testing import free_port

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
BATCH = 3  # small, so six real images make several batches spread over both actors


def test_missing_ray_is_one_clear_line(monkeypatch, make_image, tmp_path, capsys):
    """No Ray installed: exit 2, one line saying how to install it, before any model is loaded."""
    import captioner

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    monkeypatch.setattr(captioner.Captioner, "load", classmethod(lambda cls, *a, **k: pytest.fail("model loaded")))
    code = main(["caption", str(make_image("a.jpg")), "--out", str(tmp_path / "out.jsonl"), "--engine", "ray"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: ") and "pip install -r requirements-ray.txt" in err


def test_engine_ray_needs_an_output_file(make_image, capsys):
    assert main(["caption", str(make_image("a.jpg")), "--engine", "ray"]) == 2
    assert "--out" in capsys.readouterr().err


def test_local_engine_never_imports_ray(tmp_path):
    code = ("import sys, captioner.cli, captioner.serving.batch, captioner.serving.ray_batch; "
            "assert sys.modules.get('ray') is None, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


# --- a real cluster (skipped when Ray is not installed) -------------------------------------------------

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head node and one worker node, one CPU each, as separate `ray start` processes on loopback."""
    ray = pytest.importorskip("ray")
    ray_bin = Path(sys.executable).with_name("ray")
    temp = tmp_path_factory.mktemp("ray")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("RAY_ADDRESS", None)
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus=1", "--object-store-memory=150000000", "--disable-usage-stats"]
    try:
        subprocess.run([ray_bin, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                        "--include-dashboard=false", f"--temp-dir={temp}", *common],
                       check=True, env=env, capture_output=True, timeout=120)
        subprocess.run([ray_bin, "start", f"--address={address}", "--node-ip-address=127.0.0.1", *common],
                       check=True, env=env, capture_output=True, timeout=120)
        saved = os.environ.get("RAY_AUTH_MODE")
        os.environ["RAY_AUTH_MODE"] = "disabled"  # the driver (this process) speaks to the cluster as started
        ray.init(address=address, log_to_driver=False)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        ray.shutdown()
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True, timeout=120)
        if "saved" in locals():
            os.environ.pop("RAY_AUTH_MODE") if saved is None else os.environ.update(RAY_AUTH_MODE=saved)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Six real photos, an empty .jpg and a text file named .jpg."""
    folder = tmp_path_factory.mktemp("photos")
    for path in sorted(ASSETS.glob("*.jpg")):
        shutil.copy2(path, folder / path.name)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("a shopping list, not a picture")
    return folder


@pytest.fixture(scope="module")
def reference(photos, tmp_path_factory, xception_weights) -> list[dict]:
    """The single-process file for the same images and settings (the default model's own decoding)."""
    from captioner import Captioner

    out = tmp_path_factory.mktemp("local") / "captions.jsonl"
    summary = caption_to_file(Captioner.load(allow_download=False), [photos], out, batch_size=BATCH, progress=False)
    assert (summary.captioned, summary.failed) == (6, 2)
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_cluster_writes_the_single_process_file(cluster, photos, reference, tmp_path, capsys):
    out = tmp_path / "captions.jsonl"
    code = main(["caption", str(photos), "--out", str(out), "--engine", "ray", "--address", cluster,
                 "--workers", "2", "--batch-size", str(BATCH)])
    assert code == 1  # two broken files
    assert "6 captioned, 2 failed, 0 already in" in capsys.readouterr().err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records == reference  # same lines, same order, confidence fields included
    assert len({r["image"] for r in records}) == len(records) == 8
    errors = {Path(r["image"]).name for r in records if "error" in r}
    assert errors == {"empty.jpg", "notes.jpg"}
    assert any("confidence" in r for r in records)


def test_cluster_resumes_without_duplicates(cluster, photos, reference, tmp_path):
    """A file the single-process path left half done (its last line cut short) is finished on the
    cluster: every image exactly once, the same records."""
    from captioner.serving.ray_batch import caption_to_file_ray

    out = tmp_path / "captions.jsonl"
    kept = [json.dumps(r, ensure_ascii=False) for r in reference[:4]]
    out.write_text("\n".join(kept) + "\n" + json.dumps(reference[4])[:25], encoding="utf-8")
    summary = caption_to_file_ray(None, [photos], out, batch_size=BATCH, workers=2, address=cluster, progress=False)
    assert summary.skipped == 4 and summary.captioned + summary.failed == 4
    records = []
    for line in out.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # the line the interruption cut short
    assert sorted(r["image"] for r in records) == sorted(r["image"] for r in reference)  # each exactly once
    assert sorted(records, key=lambda r: r["image"]) == sorted(reference, key=lambda r: r["image"])
    again = caption_to_file_ray(None, [photos], out, batch_size=BATCH, workers=2, address=cluster, progress=False)
    assert (again.skipped, again.captioned, again.failed) == (8, 0, 0)  # nothing left: no cluster work at all
