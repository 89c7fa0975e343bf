"""Every decoder family in the registry, by the same checks: a family added to
``captioner/serving/decoders/registry.py`` is tested here without a new test file."""
from __future__ import annotations

import numpy as np
import pytest

from captioner.config import FEATURE_DIM, GRID_SIZE, TrainConfig
from captioner.serving.decoders import FAMILIES, build_model, family, make_stepper
from captioner.serving.decoding import greedy_decode, sequence_log_prob
from captioner.serving.model_folder import describe_model, load_checkpoint, save_checkpoint
from captioner.serving.vocab import Vocabulary

CAPTIONS = ["a dog runs on the grass", "a cat sits", "the dog"]
SETTINGS = [(name, rnn) for name in FAMILIES for rnn in ("lstm", "gru") if not (name == "attention" and rnn == "gru")]


def _tiny(name: str, rnn: str):
    import keras

    keras.utils.set_random_seed(0)
    vocab = Vocabulary.fit(CAPTIONS, min_count=1)
    cfg = TrainConfig(decoder=name, rnn=rnn, units=16, embedding_dim=8, attention_units=8, dropout=0.3)
    shape = (3, FEATURE_DIM) if family(name).feature_kind == "pooled" else (3, GRID_SIZE, GRID_SIZE, FEATURE_DIM)
    features = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    return build_model(len(vocab), cfg), vocab, cfg, features


def test_unknown_family_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown decoder 'transformer'; available: 'merge', "):
        TrainConfig(decoder="transformer").validate()


@pytest.mark.parametrize("name, rnn", SETTINGS)
def test_step_log_probs_equal_the_full_sequence_model(name, rnn):
    """The stepper that serving uses computes what training computed, at every real position."""
    import keras

    model, vocab, cfg, features = _tiny(name, rnn)
    seqs = [vocab.encode(c) for c in CAPTIONS]
    width = max(map(len, seqs))
    words = np.array([s + [0] * (width - len(s)) for s in seqs], np.int32)  # (B, T)
    full = keras.ops.convert_to_numpy(keras.ops.log_softmax(model([features, words[:, :-1]], training=False), -1))
    stepper = make_stepper(model, name)
    assert stepper.feature_kind == family(name).feature_kind
    state = stepper.initial_state(features)
    for t in range(width - 1):
        log_probs, state = stepper.step(words[:, t], state)  # (B, V)
        for b, seq in enumerate(seqs):
            if t < len(seq) - 1:
                np.testing.assert_allclose(log_probs[b], full[b, t], atol=3e-5)
    total = float(sum(full[0, t, w] for t, w in enumerate(words[0, 1:len(seqs[0])])))
    assert sequence_log_prob(stepper, features[0], seqs[0][1:-1], vocab.start_id, vocab.end_id) == \
        pytest.approx(total, abs=1e-4)


@pytest.mark.parametrize("name, rnn", SETTINGS)
def test_a_saved_folder_loads_as_its_family_and_captions_the_same(tmp_path, name, rnn):
    model, vocab, cfg, features = _tiny(name, rnn)
    save_checkpoint(model, vocab, cfg, tmp_path / name)
    loaded = load_checkpoint(tmp_path / name)
    assert loaded.family is family(name) and loaded.config == cfg
    before = greedy_decode(make_stepper(model, name), features, vocab.start_id, vocab.end_id, max_words=6)
    after = greedy_decode(make_stepper(loaded.model, name), features, vocab.start_id, vocab.end_id, max_words=6)
    assert [h.ids for h in before] == [h.ids for h in after]
    assert describe_model(tmp_path / name) == f"{name}: {family(name).describe(cfg.to_json())}"
