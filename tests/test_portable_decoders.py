"""TensorFlow-free decoding steps (``decoders/portable.py``) against the TensorFlow steppers they stand in
for: the same weights, states, log-probabilities and captions, and no TensorFlow imported."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from captioner.serving.decoders.merge import MergeWeights
from captioner.serving.decoders.portable import (
    NumPyStepper, OpenVINOStepper, PortableUnavailable, log_softmax, portable_stepper)
from captioner.serving.model_folder import CheckpointError, read_decoder_layers

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
MERGE_FOLDERS = ["merge-lstm", "merge-gru", "merge-ensemble"]
ENGINES = ["numpy", "openvino"]
ATOL = 1e-4  # log-probabilities; measured differences are about 5e-6 (NumPy) and 2e-5 (OpenVINO)


def flat(state) -> list[np.ndarray]:
    """A state (tensors or arrays, nested per ensemble member or flat) as one list of arrays."""
    if isinstance(state, (tuple, list)):
        return [a for s in state for a in flat(s)]
    return [np.asarray(state)]


@pytest.fixture(scope="module")
def features(xception_weights) -> np.ndarray:
    """Six (2048,) rows: three pictures' real pooled features, and the same values shuffled."""
    from captioner.serving.encoder import XceptionEncoder
    from captioner.serving.images import load_image, preprocess_image

    encoder = XceptionEncoder.load(allow_download=False)
    pixels = np.stack([preprocess_image(load_image(ROOT / "assets" / name))
                       for name in ("dog-field.jpg", "cat.jpg", "coffee.jpg")])
    real = np.asarray(encoder.encode(pixels), np.float32)
    rng = np.random.default_rng(0)
    return np.concatenate([real, np.stack([rng.permutation(row) for row in real])])


@pytest.fixture(scope="module")
def tensorflow_side():
    """Folder name -> (checkpoint, its TensorFlow stepper), loaded once."""
    from captioner.serving.decoders import checkpoint_stepper
    from captioner.serving.model_folder import load_checkpoint

    loaded = {}

    def get(name: str):
        if name not in loaded:
            checkpoint = load_checkpoint(MODELS / name)
            loaded[name] = checkpoint, checkpoint_stepper(checkpoint)
        return loaded[name]

    return get


@pytest.fixture(scope="module")
def portable_side():
    """(folder name, engine) -> the portable stepper, built once."""
    built = {}

    def get(name: str, engine: str):
        if (name, engine) not in built:
            built[name, engine] = portable_stepper(MODELS / name, engine=engine)
        return built[name, engine]

    return get


# ------------------------------------------------------------------------------------ the weights

def read_keras_weights(folder: Path) -> dict[str, list[np.ndarray]]:
    """Layer name -> weight arrays, for the layers of the folder's decoder.keras that have any."""
    return {name: layer.weights for name, layer in read_decoder_layers(folder).items() if layer.weights}


@pytest.mark.parametrize("name", ["merge-lstm", "merge-gru"])
def test_weights_read_from_the_zip_are_the_keras_layers_weights(name, tensorflow_side):
    checkpoint, _ = tensorflow_side(name)
    read = read_keras_weights(MODELS / name)
    expected = {layer.name: layer.get_weights() for layer in checkpoint.model.layers if layer.get_weights()}
    assert set(read) == set(expected) == {"image_dense", "embedding", "rnn", "merge_dense", "logits"}
    for layer, arrays in expected.items():
        assert len(read[layer]) == len(arrays)
        for got, want in zip(read[layer], arrays):
            assert got.dtype == np.float32 and got.shape == want.shape
            np.testing.assert_array_equal(got, want)


def test_float16_storage_is_widened_and_steps_the_same(tmp_path, features, tensorflow_side):
    from captioner.serving.decoders import checkpoint_stepper
    from captioner.serving.model_folder import load_checkpoint, store_float16

    folder = tmp_path / "merge-gru-f16"
    folder.mkdir()
    for name in ("decoder.keras", "config.json", "vocab.json"):
        shutil.copy(MODELS / "merge-gru" / name, folder / name)
    store_float16(folder)
    import h5py, io  # noqa: E401

    with zipfile.ZipFile(folder / "decoder.keras") as archive, \
            h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as store:
        assert store["layers/gru/cell/vars/0"].dtype == np.float16  # really stored as float16
    weights = read_keras_weights(folder)
    assert all(a.dtype == np.float32 for arrays in weights.values() for a in arrays)
    tf_stepper = checkpoint_stepper(load_checkpoint(folder))
    for engine in ("numpy", "openvino"):
        stepper = portable_stepper(folder, engine=engine)
        words = np.full(len(features), 1, np.int32)
        got, want = stepper.step(words, stepper.initial_state(features))[0], \
            tf_stepper.step(words, tf_stepper.initial_state(features))[0]
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------------ the steps

@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", MERGE_FOLDERS)
def test_initial_state_and_step_log_probs_match_tensorflow(name, engine, features, tensorflow_side, portable_side):
    checkpoint, tf_stepper = tensorflow_side(name)
    stepper = portable_side(name, engine)
    assert stepper.feature_kind == "pooled" and stepper.vocab_size == len(checkpoint.vocab)
    rng = np.random.default_rng(1)
    for rows in (len(features), 1):
        tf_state, state = tf_stepper.initial_state(features[:rows]), stepper.initial_state(features[:rows])
        assert len(flat(tf_state)) == len(flat(state))
        for want, got in zip(flat(tf_state), flat(state)):
            assert got.dtype == np.float32
            np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
        words = np.full(rows, checkpoint.vocab.start_id, np.int32)
        for step in range(6):
            tf_log_probs, tf_state = tf_stepper.step(words, tf_state)
            log_probs, state = stepper.step(words, state)
            assert log_probs.shape == (rows, len(checkpoint.vocab)) and log_probs.dtype == np.float32
            np.testing.assert_allclose(log_probs, tf_log_probs, atol=ATOL, rtol=0, err_msg=f"step {step}")
            np.testing.assert_allclose(np.exp(log_probs).sum(axis=1), 1.0, atol=1e-4)
            if step == 2:  # a beam search's reshuffle: rows kept, repeated and dropped
                keep = rng.integers(0, rows, rows)
                tf_state, state = tf_stepper.reorder(tf_state, keep), stepper.reorder(state, keep)
            words = rng.integers(4, len(checkpoint.vocab), rows).astype(np.int32)
        for want, got in zip(flat(tf_state), flat(state)):
            np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("beam_width", [1, 3])
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", MERGE_FOLDERS)
def test_captions_match_tensorflow(name, engine, beam_width, features, tensorflow_side, portable_side):
    from captioner.serving.decoding import decode_with

    checkpoint, tf_stepper = tensorflow_side(name)
    stepper = portable_side(name, engine)
    decode = checkpoint.default_decode(beam_width=beam_width)
    for batch in (len(features), 1):
        for start in range(0, len(features), batch):
            rows = features[start:start + batch]
            want = decode_with(tf_stepper, rows, checkpoint.vocab, decode)
            got = decode_with(stepper, rows, checkpoint.vocab, decode)
            assert [h[0].ids for h in got] == [h[0].ids for h in want]
            assert [h[0].log_prob for h in got] == pytest.approx([h[0].log_prob for h in want], abs=1e-3)


@pytest.mark.parametrize("engine", ENGINES)
def test_ensemble_steppers_vote_like_the_ensemble(engine, features, portable_side):
    """The ensemble's step is its members' steps and the mean of their probabilities."""
    ensemble = portable_side("merge-ensemble", engine)
    assert isinstance(ensemble, {"numpy": NumPyStepper, "openvino": OpenVINOStepper}[engine])
    assert [type(m) for m in ensemble.members] == [MergeWeights, MergeWeights]
    assert [m.is_lstm for m in ensemble.members] == [True, False]
    singles = [portable_side(name, engine) for name in ("merge-lstm", "merge-gru")]
    words = np.full(len(features), 1, np.int32)
    mixed, state = ensemble.step(words, ensemble.initial_state(features))
    each = [s.step(words, s.initial_state(features)) for s in singles]
    np.testing.assert_allclose(np.exp(mixed), (np.exp(each[0][0]) + np.exp(each[1][0])) / 2, atol=1e-6, rtol=1e-4)
    for got, want in zip(state, [*each[0][1], *each[1][1]]):  # the members' states side by side
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_decoder_layers_need_the_names_keras_saves(tmp_path):
    """decoder.keras names each layer's weight group; a file without those names is refused clearly."""
    import h5py, io  # noqa: E401

    folder = tmp_path / "nameless"
    folder.mkdir()
    with zipfile.ZipFile(MODELS / "merge-lstm" / "decoder.keras") as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    buf = io.BytesIO(entries["model.weights.h5"])
    with h5py.File(buf, "r+") as store:
        for key in store["layers"]:
            store["layers"][key]["vars"].attrs.pop("name", None)
    entries["model.weights.h5"] = buf.getvalue()
    with zipfile.ZipFile(folder / "decoder.keras", "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    with pytest.raises(CheckpointError, match="carry no layer name"):
        read_decoder_layers(folder)


# ------------------------------------------------------------------------------------ no TensorFlow

def test_portable_decoding_imports_no_tensorflow(tmp_path, features, tensorflow_side):
    from captioner.serving.decoding import decode_with

    np.save(tmp_path / "features.npy", features)
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        from captioner.config import DecodeConfig
        from captioner.serving.decoders.portable import portable_stepper
        from captioner.serving.decoding import decode_with
        from captioner.serving.vocab import Vocabulary

        features = np.load({str(tmp_path / "features.npy")!r})
        vocab = Vocabulary.load({str(MODELS / "merge-lstm" / "vocab.json")!r})
        out = {{}}
        for engine in ("numpy", "openvino"):
            stepper = portable_stepper({str(MODELS / "merge-ensemble")!r}, engine=engine)
            hyps = decode_with(stepper, features, vocab, DecodeConfig(beam_width=3, length_alpha=0.7))
            out[engine] = [h[0].ids for h in hyps]
        out["imported"] = [m for m in ("tensorflow", "keras") if m in sys.modules]
        print(json.dumps(out))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["imported"] == []
    checkpoint, tf_stepper = tensorflow_side("merge-ensemble")
    from captioner.config import DecodeConfig

    want = [h[0].ids for h in decode_with(tf_stepper, features, checkpoint.vocab,
                                          DecodeConfig(beam_width=3, length_alpha=0.7))]
    assert out["numpy"] == want and out["openvino"] == want


# ------------------------------------------------------------------------------------ what it refuses

def test_other_families_step_on_tensorflow(tmp_path):
    with pytest.raises(PortableUnavailable, match="attention.*TensorFlow"):
        portable_stepper(MODELS / "attention-lstm")
    assert issubclass(PortableUnavailable, ValueError)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "ensemble.json").write_text(json.dumps(
        {"members": [str(MODELS / "merge-lstm"), str(MODELS / "attention-lstm")]}))
    with pytest.raises(PortableUnavailable, match="attention"):
        portable_stepper(mixed, engine="numpy")


def test_broken_folders_say_what_is_wrong(tmp_path):
    with pytest.raises(CheckpointError, match="2509"):
        portable_stepper(MODELS / "merge-lstm", engine="numpy", vocab_size=10)
    with pytest.raises(ValueError, match="engine"):
        portable_stepper(MODELS / "merge-lstm", engine="tensorflow")
    folder = tmp_path / "broken"
    folder.mkdir()
    shutil.copy(MODELS / "merge-lstm" / "config.json", folder / "config.json")
    (folder / "decoder.keras").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="decoder.keras"):
        portable_stepper(folder, engine="numpy")


def test_log_softmax_is_stable():
    out = log_softmax(np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]], np.float32))
    assert np.isfinite(out).all() and out.dtype == np.float32
    np.testing.assert_allclose(np.exp(out).sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(out[1], np.log(1 / 3), atol=1e-6)
