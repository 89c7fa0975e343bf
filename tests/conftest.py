"""Shared fixtures. Unit tests use small synthetic data; integration tests use the real parts."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
sys.path.insert(0, str(ROOT / "tools"))  # browser sessions, the hostile-file corpus, the load test


@pytest.fixture
def make_image(tmp_path):
    """Write a small coloured JPEG/PNG and return its path."""
    from PIL import Image

    def make(name: str = "img.jpg", size=(64, 48), color=(200, 30, 30), folder: Path | None = None) -> Path:
        folder = folder or tmp_path
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        Image.new("RGB", size, color).save(path)
        return path

    return make


@pytest.fixture(scope="session")
def xception_weights():
    """The real, verified Xception weights (obtained by `make test` before pytest runs)."""
    from captioner.serving.weights import WeightsError, ensure_weights

    try:
        return ensure_weights(allow_download=False)
    except WeightsError as err:
        pytest.fail(f"Xception weights are not set up; run `python -m captioner weights` first.\n{err}")
