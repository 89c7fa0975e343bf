"""Odd and hostile files through the library, the CLI and the page: a caption or a specific error,
never a traceback, a hang or runaway memory."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ASSETS, ROOT
from hostile_corpus import build_corpus

pytestmark = pytest.mark.usefixtures("xception_weights")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    return folder, build_corpus(folder)


@pytest.fixture(scope="module")
def captioner():
    from captioner import Captioner

    return Captioner.load(allow_download=False)


# Run in a fresh process so its peak memory is its own (this test process's peak was already raised by
# the tests before it): load, caption one ordinary photo (the model's working memory), then every corpus
# file, and print how much the peak grew over those files.
PEAK_SCRIPT = """
import json, resource, sys
from captioner import Captioner
captioner = Captioner.load(allow_download=False)
captioner.caption([sys.argv[1]])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for path in sys.argv[2:]:
    captioner.caption([path])
print(json.dumps({"grown_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, "files": len(sys.argv) - 2}))
"""


def test_hostile_files_do_not_blow_up_memory(corpus):
    """Decompression bombs and huge dimensions are refused before they are decoded: captioning the whole
    corpus raises a fresh process's peak memory by well under 1 GB over captioning one ordinary photo."""
    folder, cases = corpus
    proc = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(ASSETS / "dog-field.jpg"),
                           *[str(folder / c.filename) for c in cases]],
                          capture_output=True, text=True, cwd=ROOT, timeout=900,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak = json.loads(proc.stdout.strip().splitlines()[-1])
    assert peak["files"] == len(cases)
    assert peak["grown_kb"] / 1024 < 1024, f"peak memory grew by {peak['grown_kb'] / 1024:.0f} MB"


def test_library_gives_a_caption_or_a_specific_error(corpus, captioner):
    folder, cases = corpus
    for case in cases:
        [result] = captioner.caption([folder / case.filename])
        if case.should_caption:
            assert result.ok and len(result.text.split()) >= 2, (case.filename, result.error)
        else:
            assert not result.ok and case.expect in result.error, (case.filename, result.error)
            assert case.filename in result.error  # the message names the file


def test_exif_rotated_photo_is_captioned_upright(corpus, captioner):
    from PIL import Image

    from captioner.serving.images import load_and_preprocess, preprocess_image

    folder, _ = corpus
    stored = Image.open(folder / "exif-rotated.jpg").convert("RGB")  # the sideways pixels, EXIF ignored
    by_hand = preprocess_image(stored.transpose(Image.Transpose.ROTATE_270))  # turned upright by hand
    loaded = load_and_preprocess(folder / "exif-rotated.jpg")  # what every entry point does
    np.testing.assert_allclose(loaded, by_hand, atol=1e-6)
    original = load_and_preprocess(ASSETS / "astronaut.jpg")
    feats = captioner.encoder.encode(np.stack([original, loaded, preprocess_image(stored)]))
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    assert unit[0] @ unit[1] > 0.95 > unit[0] @ unit[2]  # upright matches the photo; sideways does not
    upright_text = captioner.caption([stored.transpose(Image.Transpose.ROTATE_270)])[0].text
    assert captioner.caption([folder / "exif-rotated.jpg"])[0].text == upright_text


def test_cli_over_the_whole_corpus(corpus):
    folder, cases = corpus
    proc = subprocess.run([sys.executable, "-m", "captioner", "caption", str(folder), "--json", "--beam-width", "2"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 1  # some inputs are bad, and the exit status says so
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = {json.loads(line)["image"].rsplit("/", 1)[-1]: json.loads(line) for line in proc.stdout.splitlines()}
    assert set(lines) == {c.filename for c in cases}
    for case in cases:
        line = lines[case.filename]
        if case.should_caption:
            assert "caption" in line, line
        else:
            assert case.expect in line["error"], line


def test_page_reports_each_bad_upload_and_captions_the_rest(corpus):
    from streamlit.testing.v1 import AppTest

    folder, cases = corpus
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    at.run()
    at.file_uploader[0].set_value([(c.filename, (folder / c.filename).read_bytes(), "application/octet-stream")
                                   for c in cases]).run()
    [button] = [b for b in at.button if b.label.startswith("Describe")]
    button.click().run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    bad = [c for c in cases if not c.should_caption]
    assert len(errors) == len(bad)
    for case, message in zip(bad, errors):
        assert case.filename in message and case.expect in message
    n_good = len(cases) - len(bad)
    assert sum(1 for m in at.markdown if m.value.startswith("### ")) == n_good
    assert any(f"{n_good} of {len(cases)}" in w.value for w in at.warning)
