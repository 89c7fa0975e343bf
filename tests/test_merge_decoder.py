"""The merge decoder: step mode equals the full-sequence model; save/load reproduces captions."""
from __future__ import annotations

import numpy as np
import pytest

from captioner.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from captioner.config import TrainConfig
from captioner.decoders import MergeStepper, build_merge_model
from captioner.decoding import beam_search, greedy_decode, sequence_log_prob
from captioner.vocab import Vocabulary

WORDS = ["a", "dog", "runs", "on", "the", "grass", "cat", "sits"]


def _model(rnn: str, seed: int = 0):
    import keras

    keras.utils.set_random_seed(seed)
    vocab = Vocabulary.fit([" ".join(WORDS)], min_count=1)
    cfg = TrainConfig(rnn=rnn, units=24, embedding_dim=12, dropout=0.3)
    return build_merge_model(len(vocab), cfg), vocab, cfg


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_step_log_probs_equal_full_sequence_model(rnn):
    """Masking bugs in step mode show up as drift at later positions, so compare every position."""
    import keras

    model, vocab, _ = _model(rnn)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(3, 2048)).astype(np.float32)
    captions = ["a dog runs on the grass", "a cat sits", "the dog"]
    seqs = [vocab.encode(c) for c in captions]
    width = max(map(len, seqs))
    words = np.array([s + [0] * (width - len(s)) for s in seqs], np.int32)
    full = keras.ops.convert_to_numpy(keras.ops.log_softmax(model([features, words[:, :-1]], training=False), -1))
    stepper = MergeStepper(model)
    state = stepper.initial_state(features)
    for t in range(width - 1):
        step_log_probs, state = stepper.step(words[:, t], state)
        for b, seq in enumerate(seqs):
            if t < len(seq) - 1:  # only real (unpadded) positions are defined
                np.testing.assert_allclose(step_log_probs[b], full[b, t], atol=2e-5)
    # and the summed score of a whole caption agrees with the full model's
    target = words[0, 1:len(seqs[0])]
    full_total = float(sum(full[0, t, w] for t, w in enumerate(target)))
    assert sequence_log_prob(stepper, features[0], seqs[0][1:-1], vocab.start_id, vocab.end_id) == \
        pytest.approx(full_total, abs=1e-4)


def test_save_and_load_reproduce_identical_captions(tmp_path):
    model, vocab, cfg = _model("lstm", seed=3)
    save_checkpoint(model, vocab, cfg, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.vocab == vocab and loaded.config == cfg
    features = np.random.default_rng(1).normal(size=(4, 2048)).astype(np.float32)
    before, after = MergeStepper(model), MergeStepper(loaded.model)
    g1 = greedy_decode(before, features, vocab.start_id, vocab.end_id, max_words=8)
    g2 = greedy_decode(after, features, vocab.start_id, vocab.end_id, max_words=8)
    assert [h.ids for h in g1] == [h.ids for h in g2]
    b1 = beam_search(before, features[0], vocab.start_id, vocab.end_id, beam_width=3, max_words=8, n_best=3)
    b2 = beam_search(after, features[0], vocab.start_id, vocab.end_id, beam_width=3, max_words=8, n_best=3)
    assert [h.ids for h in b1] == [h.ids for h in b2]
    assert [h.score for h in b1] == pytest.approx([h.score for h in b2], abs=1e-6)


def test_checkpoint_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(CheckpointError, match="model folder not found"):
        load_checkpoint(tmp_path / "nothing")
    model, vocab, cfg = _model("gru")
    folder = tmp_path / "ckpt"
    save_checkpoint(model, vocab, cfg, folder)
    Vocabulary.fit(["just three words"], min_count=1).save(folder / "vocab.json")
    with pytest.raises(CheckpointError, match="belongs to a different checkpoint"):
        load_checkpoint(folder)
    vocab.save(folder / "vocab.json")
    (folder / "decoder.keras").write_bytes(b"not a zip file")
    with pytest.raises(CheckpointError, match="cannot load the decoder"):
        load_checkpoint(folder)
    (folder / "decoder.keras").unlink()
    with pytest.raises(CheckpointError, match="decoder.keras: missing"):
        load_checkpoint(folder)
