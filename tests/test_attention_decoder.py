"""The attention decoder: shapes, masking, attention weights, step = full sequence, it learns, save/load."""
from __future__ import annotations

import numpy as np
import pytest

from captioner.serving.model_folder import load_checkpoint, save_checkpoint
from captioner.config import TrainConfig
from captioner.serving.decoders.attention import Stepper as AttentionStepper, build_model as build_attention_model
from captioner.serving.decoding import beam_search, greedy_decode, sequence_log_prob
from captioner.serving.vocab import Vocabulary

WORDS = ["a", "dog", "runs", "on", "the", "grass", "cat", "sits", "red", "ball"]
CAPTIONS = ["a dog runs on the grass", "a cat sits", "the red ball", "a dog sits on the ball"]


def _model(seed: int = 0, grid: int = 5, reg: float = 0.05):
    import keras

    keras.utils.set_random_seed(seed)
    vocab = Vocabulary.fit([" ".join(WORDS)], min_count=1)
    cfg = TrainConfig(decoder="attention", units=24, embedding_dim=12, attention_units=16, dropout=0.2,
                      attention_grid=grid, attention_reg=reg)
    return build_attention_model(len(vocab), cfg), vocab, cfg


def _grids(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 10, 10, 2048)).astype(np.float32)


def _padded(vocab, captions):
    seqs = [vocab.encode(c) for c in captions]
    width = max(map(len, seqs))
    return seqs, np.array([s + [0] * (width - len(s)) for s in seqs], np.int32)


@pytest.mark.parametrize("grid", [5, 10])
def test_output_shapes_and_attention_sums_to_one(grid):
    model, vocab, _ = _model(grid=grid)
    _, words = _padded(vocab, CAPTIONS[:3])
    logits = model([_grids(3), words], training=False)
    assert tuple(logits.shape) == (3, words.shape[1], len(vocab))
    stepper = AttentionStepper(model)
    assert stepper.n_regions == grid * grid
    maps = stepper.attention(_grids(1)[0], vocab.encode("a dog runs")[1:-1], vocab.start_id)
    assert maps.shape == (3, grid, grid)
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), 1.0, atol=1e-5)
    assert (maps >= 0).all()


def test_padding_does_not_change_real_positions():
    """Masking: extra padding after a caption must not change its logits (the loss ignores padding,
    but the attention penalty and any state leak would show here)."""
    model, vocab, _ = _model()
    seq = vocab.encode("a cat sits")
    short = np.array([seq], np.int32)
    long = np.array([seq + [0] * 6], np.int32)
    feats = _grids(1)
    a = np.asarray(model([feats, short], training=False))
    b = np.asarray(model([feats, long], training=False))[:, :len(seq)]
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_attention_penalty_counts_only_real_words():
    import tensorflow as tf

    model, vocab, _ = _model(reg=1.0)
    seq = vocab.encode("a cat sits")
    feats = _grids(1)
    layer = model.get_layer("attention_lstm")
    model([feats, np.array([seq], np.int32)], training=False)
    short = float(tf.add_n(layer.losses))
    model([feats, np.array([seq + [0] * 5], np.int32)], training=False)
    padded = float(tf.add_n(layer.losses))
    assert short == pytest.approx(padded, rel=1e-5) and short > 0


def test_step_log_probs_equal_full_sequence_model():
    import keras

    model, vocab, _ = _model()
    seqs, words = _padded(vocab, CAPTIONS[:3])
    feats = _grids(3)
    full = keras.ops.convert_to_numpy(keras.ops.log_softmax(model([feats, words[:, :-1]], training=False), -1))
    stepper = AttentionStepper(model)
    state = stepper.initial_state(feats)
    for t in range(words.shape[1] - 1):
        step_log_probs, state = stepper.step(words[:, t], state)
        for b, seq in enumerate(seqs):
            if t < len(seq) - 1:
                np.testing.assert_allclose(step_log_probs[b], full[b, t], atol=2e-5)
    target = words[0, 1:len(seqs[0])]
    full_total = float(sum(full[0, t, w] for t, w in enumerate(target)))
    assert sequence_log_prob(stepper, feats[0], seqs[0][1:-1], vocab.start_id, vocab.end_id) == \
        pytest.approx(full_total, abs=1e-4)


def test_tiny_model_overfits_a_handful_of_captions():
    """It learns: the loss on four captions falls far below its start, and greedy decoding then
    reproduces the caption of each (distinct) image."""
    import keras

    from captioner.pipeline.train import make_loss

    model, vocab, _ = _model(seed=1)
    seqs, words = _padded(vocab, CAPTIONS)
    feats = _grids(4, seed=2)
    weights = (words[:, 1:] != 0).astype(np.float32)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=make_loss(0.0), weighted_metrics=[])
    history = model.fit([feats, words[:, :-1]], words[:, 1:], sample_weight=weights, epochs=60,
                        batch_size=4, verbose=0).history["loss"]
    assert history[-1] < 0.25 * history[0]
    hyps = greedy_decode(AttentionStepper(model), feats, vocab.start_id, vocab.end_id, max_words=10)
    assert [vocab.decode(h.ids) for h in hyps] == CAPTIONS


def test_save_and_load_reproduce_identical_captions(tmp_path):
    model, vocab, cfg = _model(seed=3)
    save_checkpoint(model, vocab, cfg, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config == cfg
    feats = _grids(3, seed=4)
    before, after = AttentionStepper(model), AttentionStepper(loaded.model)
    g1 = greedy_decode(before, feats, vocab.start_id, vocab.end_id, max_words=8)
    g2 = greedy_decode(after, feats, vocab.start_id, vocab.end_id, max_words=8)
    assert [h.ids for h in g1] == [h.ids for h in g2]
    b1 = beam_search(before, feats[0], vocab.start_id, vocab.end_id, beam_width=3, max_words=8, n_best=3)
    b2 = beam_search(after, feats[0], vocab.start_id, vocab.end_id, beam_width=3, max_words=8, n_best=3)
    assert [h.ids for h in b1] == [h.ids for h in b2]
    assert [h.score for h in b1] == pytest.approx([h.score for h in b2], abs=1e-6)
