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


def data_missing(err: Exception | str) -> None:
    """The Flickr8k data folder (../shared/flickr8k or $CAPTIONER_DATA) is not here: skip on a
    developer's machine, but FAIL on CI (CI=true), where a missing folder is a broken setup that would
    otherwise pass silently by skipping every test that reads real data."""
    message = (f"the Flickr8k data folder is missing ({err}); put it at ../shared/flickr8k or set "
               "CAPTIONER_DATA=DIR")
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message)


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
