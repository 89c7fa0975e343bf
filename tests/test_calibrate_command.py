"""`python -m captioner calibrate` end to end: the real encoder, decoder, data and shared files, on a
small held-out set, so that a broken fitting path (signals, CIDEr-D labels, the logistic fit, the bands,
the file written) fails here rather than in the next model release."""
from __future__ import annotations

import json
import shutil

from conftest import ROOT, data_missing

HELD_OUT = 40  # of the folder's 300 held-out training images: enough for both outcomes, quick to decode


def test_calibrate_fits_a_folder_and_serving_uses_what_it_wrote(tmp_path, xception_weights):
    """Catches a calibrate run that writes nothing, writes a file serving cannot load, fits on the wrong
    images, or loses the link to the shared domain check."""
    from captioner import Captioner
    from captioner.cli import main
    from captioner.pipeline.data import DataError, load_dataset
    from captioner.serving.confidence import ConfidenceModel
    from captioner.serving.domain import DomainCheck, domain_digest

    try:
        data = load_dataset().image_dir.parent
    except DataError as err:
        data_missing(err)
    models = tmp_path / "models"
    folder = models / "merge-lstm"
    shutil.copytree(ROOT / "models" / "merge-lstm", folder)
    for shared in ("domain.json", "neighbours.json"):
        shutil.copy(ROOT / "models" / shared, models / shared)
    held_out = (folder / "tune_images.txt").read_text(encoding="utf-8").split()[:HELD_OUT]
    (folder / "tune_images.txt").write_text("\n".join(held_out) + "\n", encoding="utf-8")
    before = json.loads((folder / "confidence.json").read_text(encoding="utf-8"))

    assert main(["calibrate", "--model", str(folder), "--data", str(data), "--out", str(tmp_path / "reports"),
                 "--no-report"]) == 0

    after = json.loads((folder / "confidence.json").read_text(encoding="utf-8"))
    assert after != before  # refitted on 40 images, not the 300 the shipped file came from
    info = after["info"]
    assert info["held_out"]["n"] == HELD_OUT and f"{HELD_OUT} training images" in info["fitted_on"]
    assert 0 < info["held_out"]["good_share"] < 1  # both outcomes were seen
    assert info["domain_digest"] == domain_digest(DomainCheck.load(models / "domain.json"))
    model = ConfidenceModel.load(folder)
    assert 0 <= model.calibrator.low <= model.calibrator.high <= 1
    [result] = Captioner.load(folder, allow_download=False).caption([ROOT / "assets" / "dog-field.jpg"])
    assert result.assessment is not None and 0 <= result.assessment.confidence <= 1
