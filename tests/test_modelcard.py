"""Model cards are written from the run's facts (dataset, language, split sizes, machine), never literals."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from captioner.config import TrainConfig
from captioner.pipeline.data import CaptionDataset
from captioner.machine import describe_machine, format_machine
from captioner.pipeline.modelcard import write_model_card, write_model_card_from_files
from captioner.serving import model_folder as mf

XEON = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx fma avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2
"""
GRAVITON = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes sve bf16
CPU implementer\t: 0x41
"""
METRICS = {"BLEU-1": 0.51, "BLEU-2": 0.32, "BLEU-3": 0.2, "BLEU-4": 0.12, "CIDEr": 0.33, "METEOR": 0.17,
           "ROUGE-L": 0.4}


def test_machine_description_reads_cpuinfo_text():
    xeon = describe_machine(XEON, cpus=8, arch="x86_64")
    assert xeon == {"cpu": "Intel(R) Xeon(R) Platinum 8480+", "arch": "x86_64", "cpus": 8,
                    "flags": ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]}
    assert format_machine(xeon) == ("Intel(R) Xeon(R) Platinum 8480+, 8 CPUs "
                                    "(x86_64; avx2, fma, avx512f, avx512_bf16, amx_bf16, amx_tile)")
    arm = describe_machine(GRAVITON, cpus=1, arch="aarch64")
    assert arm["flags"] == ["asimd", "sve"] and arm["cpus"] == 1 and arm["cpu"]
    assert describe_machine("", cpus=2, arch="x86_64")["flags"] == []
    here = describe_machine()
    assert here["cpus"] >= 1 and here["cpu"]
    assert format_machine(None) == "an unrecorded machine"


def _dataset(root: Path) -> CaptionDataset:
    """A German "Flickr30k": 6 train images (2 held out), 2 dev, 1 test; 2 captions each."""
    names = [f"{i}.jpg" for i in range(9)]
    captions = {n: ["ein hund läuft", "ein hund im park"] for n in names}
    return CaptionDataset(root / "flickr30k_images", captions,
                          {"train": names[:6], "dev": names[6:8], "test": names[8:]}, name="Flickr30k", lang="de")


def _run_folder(folder: Path, machine: dict | None) -> tuple[TrainConfig, dict, list[dict]]:
    cfg = TrainConfig(label_smoothing=0.1)
    folder.mkdir(parents=True)
    mf.write_config(folder, cfg)
    (folder / mf.DECODER_FILE).write_bytes(b"\0" * 2**20)
    mf.write_tune_images(folder, ["0.jpg", "1.jpg"])
    training = {"train_seconds": 90.0, "epochs_run": 3, "best_epoch": 2, "best_val_loss": 3.25, "parameters": 12345,
                "vocab_size": 40, "train_images": 4, "train_captions": 8, "tune_images": 2, "selected_on": "val_loss",
                **({"machine": machine} if machine else {})}
    mf.write_training(folder, training)
    evaluations = [{"label": "dev, beam 3", "metrics": METRICS,
                    "settings": {"n_images": 2, "block_ngram": 3, "allow_unk": False}}]
    return cfg, training, evaluations


def test_card_of_a_german_flickr30k_run_states_its_facts(tmp_path):
    folder = tmp_path / "models" / "merge-de"
    machine = describe_machine(XEON, cpus=8, arch="x86_64")
    cfg, training, evaluations = _run_folder(folder, machine)
    write_model_card(folder, cfg, training, evaluations, dataset=_dataset(tmp_path))
    card = (folder / mf.CARD_FILE).read_text()
    assert "trained on Flickr30k" in card and "captions in German (`de`)" in card
    assert "9 images, 18 captions" in card and "train 6 images, 12 captions; dev 2 images, 4 captions" in card
    assert "less 2 images (4 captions) held out" in card and "4 images, 8 captions" in card
    assert "The test split (1 image) is never read." in card
    assert "on **dev** (2 images, 4 reference captions)" in card
    assert "1.5 minutes on Intel(R) Xeon(R) Platinum 8480+, 8 CPUs (x86_64; avx2" in card
    assert "Trained on 4 Flickr30k images with German captions" in card
    assert "| dev, beam 3 | 2 | 0.510 | 0.320 | 0.200 | 0.120 | 0.330 | 0.170 | 0.400 |" in card
    assert "python -m captioner train --out models/merge-de --data DATA --label-smoothing 0.1" in card
    assert "Starts from the layers of" not in card  # trained from scratch: nothing to train first
    for literal in ("Flickr8k", "shared/flickr8k", "2-core", "English", "session"):
        assert literal not in card
    saved = mf.read_metrics(folder)
    assert saved["data"]["name"] == "Flickr30k" and saved["data"]["lang"] == "de"
    assert saved["machine"] == describe_machine()  # the evaluating machine: this one
    assert saved["evaluations"] == evaluations

    # From the stored files alone, without evaluating: the same card.
    (folder / mf.CARD_FILE).unlink()
    assert write_model_card_from_files(folder).read_text() == card


def test_card_of_a_decoder_started_from_another_folder_names_that_folder(tmp_path):
    folder = tmp_path / "models" / "merge-de"
    _, training, evaluations = _run_folder(folder, machine=None)
    cfg = TrainConfig(label_smoothing=0.1, init_from="runs/en-gru-600", tune_images=600)
    mf.write_config(folder, cfg)
    write_model_card(folder, cfg, training, evaluations, dataset=_dataset(tmp_path))
    card = (folder / mf.CARD_FILE).read_text()
    assert "--init-from runs/en-gru-600" in card and "--tune-images 600" in card
    assert "Starts from the layers of `runs/en-gru-600`" in card and "train that folder first" in card


def test_unrecorded_facts_are_called_unrecorded(tmp_path):
    folder = tmp_path / "old"
    _, training, evaluations = _run_folder(folder, machine=None)
    mf.write_metrics(folder, {"evaluations": evaluations, "training": training})
    card = write_model_card_from_files(folder).read_text()
    assert "1.5 minutes on an unrecorded machine" in card and "measured on an unrecorded machine" in card
    assert "Dataset: not recorded" in card and "on **dev** (2 images)" in card
    assert "Flickr8k" not in card
    # Given the dataset it was trained on, the facts are recorded beside the unchanged figures.
    card = write_model_card_from_files(folder, dataset=_dataset(tmp_path)).read_text()
    assert "**Flickr30k**" in card and mf.read_metrics(folder)["evaluations"] == evaluations
    other = _dataset(tmp_path)
    other.splits["train"] = ["5.jpg"]
    with pytest.raises(ValueError, match="not the data it was trained on"):
        write_model_card_from_files(folder, dataset=other)


def test_ensemble_card_from_files_takes_the_members_facts(tmp_path):
    machine = describe_machine(XEON, cpus=8, arch="x86_64")
    for name in ("lstm", "gru"):
        _, training, _ = _run_folder(tmp_path / name, machine)
        mf.write_training(tmp_path / name, {**training, "data": _dataset(tmp_path).facts(["0.jpg", "1.jpg"])})
    folder = tmp_path / "pair"
    folder.mkdir()
    mf.write_ensemble(folder, [tmp_path / "lstm", tmp_path / "gru"])
    mf.write_tune_images(folder, ["0.jpg", "1.jpg"])
    mf.write_metrics(folder, {"evaluations": [{"label": "dev, greedy", "metrics": METRICS,
                                               "settings": {"n_images": 2}}]})
    card = write_model_card_from_files(folder).read_text()
    assert "(ensemble)" in card and "[`lstm`](../lstm/MODEL_CARD.md)" in card and "| 12,345 | 1.0 MB | 1.5 min |" in card
    assert "**Flickr30k**, captions in German" in card and "the same 2 held-out images" in card
    assert "python -m captioner ensemble models/lstm models/gru --out models/pair --data DATA" in card
    assert "Flickr8k" not in card and json.loads((folder / mf.ENSEMBLE_FILE).read_text())["members"] == ["../lstm",
                                                                                                          "../gru"]


def test_card_states_the_calibration_and_its_dev_figures(tmp_path):
    """The "How sure it is" section comes from confidence.json; without one, the card says how to fit it."""
    from captioner.pipeline.modelcard import confidence_section
    from captioner.serving.calibrator import Calibrator

    assert "python -m captioner calibrate --model models/" in confidence_section(tmp_path)
    info = {"fitted_on": "300 held-out training images", "tool": "logistic regression",
            "dev": {"images": 1000, "good_share": 0.41, "ece": 0.0412,
                    "bands": {"high": {"share": 0.317, "mean_coco_cider": 0.767, "good_share": 0.8},
                              "medium": {"share": 0.361, "mean_coco_cider": 0.45, "good_share": 0.4},
                              "low": {"share": 0.322, "mean_coco_cider": 0.217, "good_share": 0.1}},
                    "high_over_low_coco_cider": 3.53, "score_terciles_ratio": 2.69, "photos_flagged": 0.022,
                    "nonphotos": 240, "nonphotos_flagged": 0.983, "roc_auc": 0.998,
                    "command": "python -m captioner calibrate --all --report-only --out runs/calibration"}}
    Calibrator(["score"], ["identity"], [0.0], [1.0], [1.0], 0.0, 0.6, 0.25, info=info).save(tmp_path / mf.CONFIDENCE_FILE)
    text = confidence_section(tmp_path)
    assert "high >= 0.6, low < 0.25" in text and "| expected calibration error (10 bins) | 0.041 |" in text
    assert "31.7% / 36.1% / 32.2%" in text and "3.53x" in text and "98.3% of 240" in text
    assert "Reproduce: `python -m captioner calibrate --all --report-only" in text
