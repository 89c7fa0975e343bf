"""Training end to end on a tiny synthetic dataset: both decoders, selection on held-out images,
checkpoint averaging, and a checkpoint that loads and captions."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from captioner.serving.model_folder import load_checkpoint
from captioner.config import TrainConfig
from captioner.pipeline.data import CaptionDataset
from captioner.serving.decoding import greedy_decode
from captioner.serving.decoders import make_stepper
from captioner.pipeline.train import average_weights, train

WORDS = ["a", "dog", "cat", "runs", "sits", "on", "the", "grass", "sofa"]


def _data(spatial: bool, n: int = 60):
    rng = np.random.default_rng(0)
    names = [f"{i}.jpg" for i in range(n)]
    captions = {m: [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 8)))) for _ in range(2)] for m in names}
    dataset = CaptionDataset(Path("."), captions, {"train": names[:50], "dev": names[50:]})
    shape = (10, 10, 2048) if spatial else (2048,)
    dtype = np.float16 if spatial else np.float32  # as the feature cache stores them
    return dataset, {m: rng.normal(size=shape).astype(dtype) for m in names}


@pytest.mark.parametrize("decoder", ["merge", "attention"])
def test_train_selects_on_held_out_cider_and_writes_a_usable_checkpoint(tmp_path, decoder):
    dataset, features = _data(decoder == "attention")
    cfg = TrainConfig(decoder=decoder, units=16, embedding_dim=8, attention_units=8, epochs=3, batch_size=8,
                      min_word_count=1, patience=5, tune_images=5, average_best=2, label_smoothing=0.1)
    logs: list[str] = []
    summary = train(dataset, features, cfg, tmp_path / "ckpt", log=logs.append)
    assert summary["selected_on"] == "tune_cider" and len(summary["tune_cider"]) == 3
    assert summary["best_epoch"] == int(np.argmax(summary["tune_cider"])) + 1
    assert "averaged_tune_cider" in summary and any("keeping the" in line for line in logs)
    assert not (tmp_path / "ckpt" / ".epochs").exists()  # per-epoch weights are cleaned up
    saved = json.loads((tmp_path / "ckpt" / "training.json").read_text())
    assert saved["train_images"] == 45 and saved["tune_images"] == 5
    checkpoint = load_checkpoint(tmp_path / "ckpt")
    feats = np.stack([features["51.jpg"], features["52.jpg"]]).astype(np.float32)
    hyps = greedy_decode(make_stepper(checkpoint.model), feats, checkpoint.vocab.start_id,
                         checkpoint.vocab.end_id, max_words=6)
    assert len(hyps) == 2 and all(len(h.ids) <= 6 for h in hyps)


def test_average_weights_is_the_elementwise_mean(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    paths, sets = [], []
    for i in range(3):
        weights = [np.full(w.shape, float(i + 1), np.float32) for w in model.get_weights()]
        model.set_weights(weights)
        paths.append(tmp_path / f"{i}.weights.h5")
        model.save_weights(paths[-1])
        sets.append(weights)
    averaged = average_weights(model, paths)
    for got, *each in zip(averaged, *sets):
        np.testing.assert_allclose(got, np.mean(each, axis=0))
    np.testing.assert_allclose(averaged[0], 2.0)


def test_every_command_prints_its_help(capsys):
    """Every TrainConfig field is a documented flag, and the help renders (a stray '%' once broke it)."""
    from dataclasses import fields

    from captioner.cli import build_parser

    for command in ("caption", "evaluate", "train", "finetune", "card", "weights"):
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args([command, "--help"])
        assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for f in fields(TrainConfig):
        assert f"--{f.name.replace('_', '-')}" in text
    assert "at most 10%" in text
