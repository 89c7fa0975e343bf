"""Self-critical sequence training: sampling follows the model, and a fine-tuning run keeps the best
held-out weights (its reward, CIDEr-D, is checked against pycocoevalcap in test_cider.py)."""
from __future__ import annotations

import numpy as np
import pytest

from captioner.pipeline.scst import finetune, sample_decode

REFS = {
    "1": ["a dog runs on the grass", "a brown dog is running", "the dog plays outside"],
    "2": ["a man rides a bike", "a person on a bicycle", "a man is cycling down the road"],
    "3": ["two children play in the water", "kids splash in a pool", "two kids swim"],
}


class TwoWordModel:
    """After <start>: word 4 with p = 0.8, word 5 with p = 0.2; then always <end>."""

    def initial_state(self, features):
        return (np.zeros(len(features)),)

    def step(self, words, state):
        out = np.full((len(words), 6), -30.0)
        first = state[0] == 0
        out[first, 4], out[first, 5] = np.log(0.8), np.log(0.2)
        out[~first, 2] = 0.0
        return out, (state[0] + 1,)


def test_sampling_follows_the_model_distribution():
    ids = sample_decode(TwoWordModel(), np.zeros((4000, 1)), 1, 2, max_words=5, rng=np.random.default_rng(0))
    assert all(len(c) == 1 for c in ids)
    share = np.mean([c[0] == 4 for c in ids])
    assert share == pytest.approx(0.8, abs=0.03)


@pytest.mark.parametrize("baseline", ["greedy", "samples"])
def test_finetune_keeps_the_best_held_out_weights(baseline):
    from dataclasses import replace

    import keras

    from captioner.config import TrainConfig
    from captioner.pipeline.engine import held_out_cider
    from captioner.pipeline.scst import SCST_DECODE
    from captioner.serving.decoders import build_model, make_stepper
    from captioner.serving.vocab import Vocabulary

    keras.utils.set_random_seed(0)
    refs = [REFS[k] for k in sorted(REFS)] * 4
    vocab = Vocabulary.fit([r for rs in refs for r in rs], min_count=1)
    model = build_model(len(vocab), TrainConfig(units=16, embedding_dim=8))
    stepper = make_stepper(model, "merge")
    feats = np.random.default_rng(0).normal(size=(12, 2048)).astype(np.float32)
    before = held_out_cider(stepper, feats[:3], refs[:3], vocab)
    logs: list[str] = []
    history = finetune(model, vocab, stepper, feats, refs, feats[:3], refs[:3], epochs=3, batch_images=4,
                       samples=3, learning_rate=1e-2, patience=3, baseline=baseline,
                       decode=replace(SCST_DECODE, max_words=8), log=logs.append)
    assert history["tune_cider"][0] == pytest.approx(before)
    assert len(history["tune_cider"]) == 4 and len(history["mean_reward"]) == 3
    assert history["tune_cider"] != [before] * 4  # the weights did move
    kept = held_out_cider(stepper, feats[:3], refs[:3], vocab)
    assert kept == pytest.approx(max(history["tune_cider"]), abs=1e-9)
    assert history["kept_epoch"] == int(np.argmax(history["tune_cider"]))
    assert any(line.startswith("SCST epoch 0") for line in logs)


def test_scst_baseline_decoding_is_todays_greedy():
    from captioner.pipeline.scst import SCST_DECODE

    assert (SCST_DECODE.beam_width, SCST_DECODE.max_words, SCST_DECODE.length_alpha, SCST_DECODE.block_ngram,
            SCST_DECODE.allow_unk) == (1, 20, 0.0, 0, True)
