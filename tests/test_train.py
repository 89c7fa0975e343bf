"""Training end to end on a tiny synthetic dataset: both decoders, selection on held-out images,
checkpoint averaging, and a checkpoint that loads and captions; the engine's selector and loss."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from captioner.config import TrainConfig
from captioner.pipeline.data import CaptionDataset
from captioner.pipeline.engine import Selector, average_weights
from captioner.pipeline.train import train
from captioner.serving.decoders import make_stepper
from captioner.serving.decoding import greedy_decode
from captioner.serving.model_folder import load_checkpoint

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
    assert not (tmp_path / "ckpt" / ".epochs").exists()  # epoch weights stay in memory
    saved = json.loads((tmp_path / "ckpt" / "training.json").read_text())
    assert saved["train_images"] == 45 and saved["tune_images"] == 5 and saved["label_smoothing"] == 0.1
    history = (tmp_path / "ckpt" / "history.csv").read_text().splitlines()
    assert history[0].split(",")[:2] == ["epoch", "epoch_seconds"] and len(history) == 4
    assert (tmp_path / "ckpt" / "training_curve.png").is_file()
    assert len((tmp_path / "ckpt" / "tune_images.txt").read_text().split()) == 5
    checkpoint = load_checkpoint(tmp_path / "ckpt")
    feats = np.stack([features["51.jpg"], features["52.jpg"]]).astype(np.float32)
    hyps = greedy_decode(make_stepper(checkpoint.model, decoder), feats, checkpoint.vocab.start_id,
                         checkpoint.vocab.end_id, max_words=6)
    assert len(hyps) == 2 and all(len(h.ids) <= 6 for h in hyps)


def test_average_weights_is_the_elementwise_mean():
    sets = [[np.full((3, 2), float(i + 1), np.float32), np.full(2, 10.0 * (i + 1), np.float32)] for i in range(3)]
    averaged = average_weights(sets)
    np.testing.assert_allclose(averaged[0], 2.0)
    np.testing.assert_allclose(averaged[1], 20.0)
    assert averaged[0].dtype == np.float32


class FakeModel:
    """Just the weights, as the selector sees a model."""

    def __init__(self):
        self.weights = [np.zeros(2)]

    def get_weights(self):
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        self.weights = [w.copy() for w in weights]


def test_selector_stops_halves_the_rate_and_keeps_the_best_or_the_average():
    selector = Selector("tune_cider", "max", patience=2, average_best=2, lr_patience=1, min_lr=0.2)
    model, rate = FakeModel(), 1.0
    for epoch, score in enumerate([0.1, 0.3, 0.2, 0.25], start=1):
        selector.record(epoch, score, [np.full(2, float(epoch))])
        rate = selector.next_learning_rate(rate)
        if selector.should_stop():
            break
    assert epoch == 4 and rate == pytest.approx(0.25)  # halved after epochs 3 and 4 (no floor reached)
    result = selector.restore(model, score=lambda: 0.35, log=lambda m: None)  # the average of epochs 2 and 4
    assert result == {"best_epoch": 2, "best_score": 0.3, "averaged_score": 0.35, "averaged_epochs": [2, 4]}
    np.testing.assert_allclose(model.weights[0], 3.0)
    result = selector.restore(model, score=lambda: 0.29, log=lambda m: None)  # the average scores lower
    assert result["averaged_epochs"] == [] and model.weights[0][0] == 2.0
    start_kept = Selector("val_loss", "min", patience=1, include_start=True)
    start_kept.record(0, 1.0, [np.zeros(2)])
    start_kept.record(1, 1.0, [np.ones(2)])  # a tie is not an improvement
    assert start_kept.should_stop() and start_kept.restore(model)["best_epoch"] == 0


def test_label_smoothing_is_in_the_loss():
    import tensorflow as tf

    from captioner.pipeline.engine import token_losses

    logits = tf.constant([[[2.0, 0.0, -1.0]]])  # (1, 1, 3)
    targets = tf.constant([[0]])
    log_p = tf.nn.log_softmax(logits).numpy()[0, 0]
    assert float(token_losses(targets, logits)[0, 0]) == pytest.approx(-log_p[0], rel=1e-6)
    smoothed = float(token_losses(targets, logits, 0.1)[0, 0])
    assert smoothed == pytest.approx(-0.9 * log_p[0] - 0.1 * log_p.mean(), rel=1e-6)


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
