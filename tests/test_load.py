"""8 simultaneous browser sessions: all succeed, each sees its own result, the model loads once."""
from __future__ import annotations

import pytest

from load_test import ASSETS, run_load_test

pytestmark = pytest.mark.usefixtures("xception_weights")


def test_eight_simultaneous_sessions():
    from captioner import Captioner

    report = run_load_test(8)
    assert report["errors"] == []
    captioner = Captioner.load(allow_download=False)
    expected = {p.name: captioner.caption([p])[0].hedged for p in ASSETS.glob("*.jpg")}  # as the page writes it
    for result in report["results"]:
        assert result["caption"] == expected[result["image"]], result  # no session sees another's caption
        assert result["audio_duration_s"] > 0.3
    assert report["model_loads"] == 1
