"""The merge decoder: step mode equals the full-sequence model; save/load reproduces captions."""
from __future__ import annotations

import numpy as np
import pytest

from captioner.serving.model_folder import CheckpointError, load_checkpoint, save_checkpoint
from captioner.config import TrainConfig
from captioner.serving.decoders.merge import Stepper as MergeStepper, build_model as build_merge_model
from captioner.serving.decoding import beam_search, greedy_decode, sequence_log_prob
from captioner.serving.vocab import Vocabulary

WORDS = ["a", "dog", "runs", "on", "the", "grass", "cat", "sits"]


def _model(rnn: str, seed: int = 0):
    import keras

    keras.utils.set_random_seed(seed)
    vocab = Vocabulary.fit([" ".join(WORDS)], min_count=1)
    cfg = TrainConfig(rnn=rnn, units=24, embedding_dim=12, dropout=0.3)
    return build_merge_model(len(vocab), cfg), vocab, cfg


def _assert_steps_equal_full_sequence_model(model, stepper, vocab):
    """Masking bugs in step mode show up as drift at later positions, so compare every position."""
    import keras

    rng = np.random.default_rng(0)
    features = rng.normal(size=(3, 2048)).astype(np.float32)
    captions = ["a dog runs on the grass", "a cat sits", "the dog"]
    seqs = [vocab.encode(c) for c in captions]
    width = max(map(len, seqs))
    words = np.array([s + [0] * (width - len(s)) for s in seqs], np.int32)
    full = keras.ops.convert_to_numpy(keras.ops.log_softmax(model([features, words[:, :-1]], training=False), -1))
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


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_step_log_probs_equal_full_sequence_model(rnn):
    model, vocab, _ = _model(rnn)
    _assert_steps_equal_full_sequence_model(model, MergeStepper(model), vocab)


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_tensorflow_step_follows_the_weights_as_training_changes_them(rnn):
    """Training scores and fine-tunes through one stepper built before the weights change."""
    model, vocab, _ = _model(rnn, seed=8)
    stepper = MergeStepper(model)
    features = np.random.default_rng(3).normal(size=(2, 2048)).astype(np.float32)
    words = np.full(2, vocab.start_id, np.int32)
    before = stepper.step(words, stepper.initial_state(features))[0]
    rnn_layer = model.get_layer("rnn")
    kernel, recurrent, bias = rnn_layer.get_weights()
    rnn_layer.set_weights([kernel, recurrent, bias + 0.5])  # the GRU's (2, 3U) bias is read row by row
    after = stepper.step(words, stepper.initial_state(features))[0]
    assert np.abs(after - before).max() > 1e-3
    _assert_steps_equal_full_sequence_model(model, stepper, vocab)  # and it is the changed model's step


@pytest.mark.parametrize("engine", ["numpy", "numpy, no input table", "openvino"])
@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_portable_step_of_the_saved_folder_equals_full_sequence_model(rnn, engine, tmp_path, monkeypatch):
    """The Keras model against the same step evaluated with NumPy or OpenVINO from its saved folder."""
    from captioner.serving.decoders import portable

    model, vocab, cfg = _model(rnn, seed=7)
    save_checkpoint(model, vocab, cfg, tmp_path / "ckpt")
    if engine == "numpy, no input table":  # the per-step embedding @ kernel of large vocabularies
        monkeypatch.setattr(portable, "MAX_INPUT_TABLE_BYTES", 0)
    stepper = portable.portable_stepper(tmp_path / "ckpt", engine=engine.split(",")[0])
    assert stepper.members[0].is_lstm == (rnn == "lstm")
    assert (stepper.members[0].kernel is None) == (engine != "numpy, no input table")
    _assert_steps_equal_full_sequence_model(model, stepper, vocab)


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


def test_ensemble_folder_loads_its_members_and_votes(tmp_path):
    """An ensemble folder of two decoders: loads through load_checkpoint, decodes with the mean
    probability, and refuses members that cannot vote together."""
    import json

    from captioner.serving.model_folder import available_models
    from captioner.serving.decoders import checkpoint_stepper
    from captioner.serving.decoders.ensemble import EnsembleStepper

    for name, rnn, seed in (("lstm", "lstm", 1), ("gru", "gru", 2)):
        model, vocab, cfg = _model(rnn, seed)
        save_checkpoint(model, vocab, cfg, tmp_path / name)
    (tmp_path / "both").mkdir()
    (tmp_path / "both" / "ensemble.json").write_text(json.dumps({"members": ["../lstm", "../gru"]}))
    (tmp_path / "both" / "decoding.json").write_text(json.dumps({"length_alpha": 0.9}))
    ensemble = load_checkpoint(tmp_path / "both")
    assert ensemble.is_ensemble and [m.folder.name for m in ensemble.members] == ["lstm", "gru"]
    assert ensemble.length_alpha == 0.9 and ensemble.vocab == vocab
    stepper = checkpoint_stepper(ensemble)
    assert isinstance(stepper, EnsembleStepper)
    features = np.random.default_rng(0).normal(size=(2, 2048)).astype(np.float32)
    words = np.full(2, vocab.start_id, np.int32)
    mixed, _ = stepper.step(words, stepper.initial_state(features))
    singles = [MergeStepper(m.model) for m in ensemble.members]
    each = [s.step(words, s.initial_state(features))[0] for s in singles]
    np.testing.assert_allclose(np.exp(mixed), (np.exp(each[0]) + np.exp(each[1])) / 2, atol=1e-5)
    [hyp] = beam_search(stepper, features[0], vocab.start_id, vocab.end_id, beam_width=3, max_words=6)
    assert len(hyp.ids) <= 6
    assert (tmp_path / "both") in available_models(tmp_path)

    (tmp_path / "both" / "ensemble.json").write_text(json.dumps({"members": ["../lstm"]}))
    with pytest.raises(CheckpointError, match="at least two"):
        load_checkpoint(tmp_path / "both")
    (tmp_path / "both" / "ensemble.json").write_text(json.dumps({"members": ["../lstm", "../missing"]}))
    with pytest.raises(CheckpointError, match="member missing cannot be loaded"):
        load_checkpoint(tmp_path / "both")
    other_model, other_vocab, other_cfg = _model("lstm", 4)
    other_vocab = Vocabulary.fit(["entirely other words here"], min_count=1)
    save_checkpoint(build_merge_model(len(other_vocab), other_cfg), other_vocab, other_cfg, tmp_path / "other")
    (tmp_path / "both" / "ensemble.json").write_text(json.dumps({"members": ["../lstm", "../other"]}))
    with pytest.raises(CheckpointError, match="different vocabularies"):
        load_checkpoint(tmp_path / "both")
    (tmp_path / "both" / "ensemble.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="ensemble.json: unreadable"):
        load_checkpoint(tmp_path / "both")


def test_ensemble_command_writes_relative_members_and_refuses_different_held_out_images(tmp_path, capsys):
    import json

    from captioner.cli import main

    for name, rnn, seed in (("lstm", "lstm", 1), ("gru", "gru", 2)):
        model, vocab, cfg = _model(rnn, seed)
        save_checkpoint(model, vocab, cfg, tmp_path / "models" / name)
        (tmp_path / "models" / name / "tune_images.txt").write_text("1.jpg\n2.jpg\n")
    models = tmp_path / "models"
    out = models / "ensemble"
    assert main(["ensemble", str(models / "lstm"), str(models / "gru"), "--out", str(out), "--no-eval"]) == 0
    assert json.loads((out / "ensemble.json").read_text()) == {"members": ["../lstm", "../gru"]}
    assert (out / "tune_images.txt").read_text() == "1.jpg\n2.jpg\n"
    assert load_checkpoint(out).is_ensemble
    (models / "gru" / "tune_images.txt").write_text("3.jpg\n")
    assert main(["ensemble", str(models / "lstm"), str(models / "gru"), "--out", str(tmp_path / "x"),
                 "--no-eval"]) != 0
    assert "same held-out training images" in capsys.readouterr().err
    (models / "gru" / "tune_images.txt").write_text("1.jpg\n2.jpg\n")
    _, _, cfg = _model("gru", 2)
    bad_vocab = Vocabulary.fit(["other words entirely"], min_count=1)
    save_checkpoint(build_merge_model(len(bad_vocab), cfg), bad_vocab, cfg, models / "gru")
    assert main(["ensemble", str(models / "lstm"), str(models / "gru"), "--out", str(tmp_path / "y"),
                 "--no-eval"]) == 2
    assert "different vocabularies" in capsys.readouterr().err
    assert not (tmp_path / "y" / "ensemble.json").exists()


def test_ensemble_card_names_members_decoding_rule_and_results(tmp_path):
    import json

    from captioner.pipeline.modelcard import write_ensemble_card

    for name, rnn, seed in (("lstm", "lstm", 1), ("gru", "gru", 2)):
        model, vocab, cfg = _model(rnn, seed)
        save_checkpoint(model, vocab, cfg, tmp_path / name)
        (tmp_path / name / "training.json").write_text(json.dumps({"parameters": 1000, "train_seconds": 600}))
    folder = tmp_path / "pair"
    folder.mkdir()
    (folder / "ensemble.json").write_text(json.dumps({"members": ["../lstm", "../gru"]}))
    sweep = {"0.7": {"BLEU-1": 0.6, "BLEU-4": 0.19, "METEOR": 0.2, "CIDEr": 0.5}}
    (folder / "decoding.json").write_text(json.dumps({"length_alpha": 0.7, "sweep": sweep, "balanced_score": {"0.7": 1.0},
                                                      "rule": "balanced rule", "selected_on": "300 held-out images"}))
    metrics = {"BLEU-1": 0.61, "BLEU-2": 0.42, "BLEU-3": 0.29, "BLEU-4": 0.195, "CIDEr": 0.51, "METEOR": 0.2,
               "ROUGE-L": 0.45}
    write_ensemble_card(folder, load_checkpoint(folder), [{"label": "dev, beam 3", "metrics": metrics,
                                                          "settings": {"n_images": 1000}}])
    card = (folder / "MODEL_CARD.md").read_text()
    assert "`lstm`" in card and "`gru`" in card and "10.0 min" in card
    assert "| dev, beam 3 | 1000 | 0.610 | 0.420 | 0.290 | 0.195 | 0.510 |" in card
    assert "alpha = 0.7" in card and "balanced rule" in card and "| 0.7 (chosen) | 0.6000 |" in card
    assert "python -m captioner ensemble models/lstm models/gru --out models/pair" in card
    saved = json.loads((folder / "metrics.json").read_text())
    assert [m["folder"] for m in saved["members"]] == ["lstm", "gru"]


def test_fused_ensemble_step_equals_the_member_by_member_one():
    """Compiled members are fused into one TensorFlow step; it must match averaging them in NumPy."""
    from captioner.serving.decoders.ensemble import EnsembleStepper

    models = [_model(rnn, seed)[0] for rnn, seed in (("lstm", 5), ("gru", 6))]
    _, vocab, _ = _model("lstm")
    fused = EnsembleStepper([MergeStepper(m) for m in models])
    assert fused._fused is not None

    class Plain:  # the same stepper, hidden from the fusing (not a CompiledStepper)
        def __init__(self, inner):
            self.inner = inner

        def initial_state(self, features):
            return self.inner.initial_state(features)

        def step(self, words, state):
            return self.inner.step(words, state)

        def reorder(self, state, rows):
            return self.inner.reorder(state, rows)

    plain = EnsembleStepper([Plain(MergeStepper(m)) for m in models])
    assert plain._fused is None
    features = np.random.default_rng(2).normal(size=(3, 2048)).astype(np.float32)
    for width in (1, 3):
        for f in features:
            a = beam_search(fused, f, vocab.start_id, vocab.end_id, beam_width=width, max_words=7, n_best=width)
            b = beam_search(plain, f, vocab.start_id, vocab.end_id, beam_width=width, max_words=7, n_best=width)
            assert [h.ids for h in a] == [h.ids for h in b]
            assert [h.log_prob for h in a] == pytest.approx([h.log_prob for h in b], abs=1e-4)


def test_describe_model_labels_single_ensemble_and_broken_folders(tmp_path):
    import json

    from captioner.serving.model_folder import describe_model

    model, vocab, cfg = _model("gru")
    save_checkpoint(model, vocab, cfg, tmp_path / "solo")
    assert describe_model(tmp_path / "solo") == "solo: merge decoder, GRU"
    (tmp_path / "pair").mkdir()
    (tmp_path / "pair" / "ensemble.json").write_text(json.dumps({"members": ["../solo", "../other"]}))
    assert describe_model(tmp_path / "pair") == "pair: ensemble of solo + other"
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{oops")
    assert describe_model(tmp_path / "broken") == "broken"
