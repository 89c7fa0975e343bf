"""Decoding steps without TensorFlow: the merge family in NumPy, read straight from ``decoder.keras``.

A ``.keras`` file is a zip holding ``config.json`` (the layer graph) and ``model.weights.h5`` (the
variables). Keras 3 stores each layer's variables under a name made from its *class*, numbered in the
order of the model's layers (``layers/dense``, ``layers/dense_1``, ...; an RNN's under
``layers/lstm/cell/vars``), not under the layer's own name, so ``read_keras_weights`` replays that
numbering over the layers of ``config.json`` to give every array back to the layer it belongs to.

``MergeStepper`` runs the merge decoder's step (``merge.Stepper``'s layers: image_dense, embedding,
LSTM/GRU cell, merge_dense, logits) with NumPy, float32 throughout; ``PortableEnsembleStepper`` votes
exactly as ``ensemble.EnsembleStepper`` does (it *is* one, on its NumPy path). ``OpenVINOStepper``
compiles the same step (for one decoder, or for all of an ensemble's members and their vote) into one
OpenVINO CPU model: one call per step, and faster than NumPy once beams or images share a step
(``bench/portable_steps.py``). ``portable_stepper`` builds them from a model folder with json,
zipfile, h5py, NumPy (and OpenVINO) only: no TensorFlow, no Keras. Other families (attention,
inject) raise ``PortableUnavailable``: they step on TensorFlow.

BLAS threads: NumPy's OpenBLAS splits even these small (rows x 512) @ (512 x V) products over every
core, and when the cores are busy (a training, other requests) a step gets 10-30x slower. So each
NumPy step runs with OpenBLAS limited to ``MergeStepper.blas_threads`` (1) through threadpoolctl
(installed with scikit-learn). OpenVINO's step is compiled for ``OPENVINO_THREADS`` (two where the
machine has them): its thread pool shares the work out without spinning, so on an idle 2-core machine a
beam-3 caption's steps take 1.3x less time than on one thread, and with the other core kept busy about
10% more (``bench/portable_steps.py`` and ``--busy``).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import threading
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from ..model_folder import (DECODER_FILE, ENSEMBLE_FILE, KERAS_CONFIG_ENTRY, KERAS_WEIGHTS_ENTRY, CheckpointError,
                            ensemble_members, read_config)
from .ensemble import EnsembleStepper

PORTABLE_FAMILIES = ("merge",)  # decoder families (config.json "decoder") that step without TensorFlow
ENGINES = ("auto", "numpy", "openvino")
OPENVINO_THREADS = min(2, os.cpu_count() or 1)  # INFERENCE_NUM_THREADS of the compiled step (see above)
OPENVINO_PRECISION = "f32"  # INFERENCE_PRECISION_HINT of the compiled step (f32: the TensorFlow captions exactly)
# Precompute embedding @ kernel + bias for the whole vocabulary (one gather per step instead of a
# matmul) while that table stays this small.
MAX_INPUT_TABLE_BYTES = 64 * 2 ** 20


class PortableUnavailable(ValueError):
    """A model folder whose decoder has no TensorFlow-free step (use ``decoders.checkpoint_stepper``)."""


# ---------------------------------------------------------------------------------- reading .keras

def _snake_case(name: str) -> str:
    """Keras 3's ``naming.to_snake_case`` (what it names a layer's group in model.weights.h5 after)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _group_arrays(group) -> list[np.ndarray]:
    """A saved object's arrays: its own ``vars/0, 1, ...`` in order, then its children's (an RNN
    layer's cell), floating-point ones as float32 (float16 storage is widened back)."""
    import h5py

    arrays = []
    if "vars" in group:
        for key in sorted(group["vars"], key=int):
            data = np.asarray(group["vars"][key][()])
            arrays.append(data.astype(np.float32) if np.issubdtype(data.dtype, np.floating) else data)
    for key in sorted(group):
        if key != "vars" and isinstance(group[key], h5py.Group):
            arrays += _group_arrays(group[key])
    return arrays


def read_keras_file(path: str | Path) -> tuple[dict[str, dict], dict[str, list[np.ndarray]]]:
    """(layer name -> {"class_name", "config"}, layer name -> weight arrays) of a functional ``.keras``
    model, with zipfile, json and h5py only. Layers without variables have no entry in the second dict."""
    import h5py

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read(KERAS_CONFIG_ENTRY))
            weights_bytes = archive.read(KERAS_WEIGHTS_ENTRY)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{path}: not a readable .keras file ({type(err).__name__}: {err})") from err
    layer_list = (config.get("config") or {}).get("layers") if isinstance(config, dict) else None
    if not isinstance(layer_list, list):
        raise PortableUnavailable(f"{path}: not a functional Keras model (its config.json lists no layers)")
    layers: dict[str, dict] = {}
    weights: dict[str, list[np.ndarray]] = {}
    with h5py.File(io.BytesIO(weights_bytes), "r") as store:
        saved = store["layers"] if "layers" in store else {}
        used: dict[str, int] = {}
        for layer in layer_list:
            name, class_name = layer["config"]["name"], layer["class_name"]
            layers[name] = {"class_name": class_name, "config": layer["config"]}
            key = _snake_case(class_name)  # saving_lib._get_unique_name: dense, dense_1, dense_2, ...
            used[key] = used[key] + 1 if key in used else 0
            key = key if used[key] == 0 else f"{key}_{used[key]}"
            if key not in saved:  # an operation that is not a saveable layer (NotEqual): never numbered
                used[_snake_case(class_name)] -= 1
                continue
            arrays = _group_arrays(saved[key])
            if arrays:
                weights[name] = arrays
    return layers, weights


def read_keras_weights(path: str | Path) -> dict[str, list[np.ndarray]]:
    """Layer name (as the model names it: "image_dense", "rnn", ...) -> its weight arrays as float32, in
    Keras order (Dense: kernel, bias; Embedding: embeddings; LSTM/GRU: kernel, recurrent kernel, bias),
    read from the ``.keras`` zip's model.weights.h5 with zipfile and h5py only (no TensorFlow, no Keras)."""
    return read_keras_file(path)[1]


# ----------------------------------------------------------------------------------- the NumPy step

def _sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function without overflow warnings for large negative inputs."""
    return (np.float32(0.5) * (np.float32(1.0) + np.tanh(np.float32(0.5) * x))).astype(np.float32, copy=False)


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, np.float32(0.0))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax, stable for any logits (the max is subtracted first)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


_BLAS = None  # threadpoolctl's view of the loaded BLAS libraries, found at the first NumPy step (or False)


def blas_threads_limited(threads: int | None):
    """A context in which BLAS (OpenBLAS under NumPy) uses at most ``threads`` threads; a no-op for None or
    without threadpoolctl."""
    global _BLAS
    if threads is None:
        return contextlib.nullcontext()
    if _BLAS is None:
        try:
            from threadpoolctl import ThreadpoolController

            blas = ThreadpoolController().select(user_api="blas")
            _BLAS = blas if blas.lib_controllers else False
        except Exception:  # not installed, or an unusual BLAS it cannot drive: leave threads alone
            _BLAS = False
    return _BLAS.limit(limits=threads) if _BLAS else contextlib.nullcontext()


class MergeStepper:
    """The merge decoder's step interface (``initial_state``, ``step``, ``reorder``) in NumPy.

    State is a tuple of float32 arrays with the batch first, as ``merge.Stepper``'s: ``(h, c, image)``
    for LSTM, ``(h, image)`` for GRU.
    """

    feature_kind = "pooled"  # reads (B, 2048) pooled features
    blas_threads: int | None = 1  # OpenBLAS threads during a step (None: as the process has them)

    def __init__(self, weights: dict[str, Sequence[np.ndarray]], rnn: str):
        if rnn not in ("lstm", "gru"):
            raise PortableUnavailable(f"merge decoder with rnn {rnn!r}: only 'lstm' and 'gru' step without TensorFlow")
        missing = [n for n in ("image_dense", "embedding", "rnn", "merge_dense", "logits") if n not in weights]
        if missing:
            raise PortableUnavailable(f"not a merge decoder: layers {missing} have no weights")
        f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
        self.image_kernel, self.image_bias = map(f32, weights["image_dense"])
        (embeddings,) = map(f32, weights["embedding"])
        kernel, self.recurrent_kernel, bias = map(f32, weights["rnn"])
        self.merge_kernel, self.merge_bias = map(f32, weights["merge_dense"])
        self.logits_kernel, self.logits_bias = map(f32, weights["logits"])
        self.is_lstm = rnn == "lstm"
        self.units = int(self.recurrent_kernel.shape[0])
        self.vocab_size = int(self.logits_kernel.shape[1])
        gates = 4 if self.is_lstm else 3
        units, vocab = self.units, self.vocab_size
        expected = {"image_dense kernel": (self.image_kernel.shape[1], units),
                    "embedding rows": (embeddings.shape[0], vocab),
                    "rnn kernel": (kernel.shape, (embeddings.shape[1], gates * units)),
                    "rnn recurrent kernel": (self.recurrent_kernel.shape, (units, gates * units)),
                    "rnn bias": (bias.shape, (gates * units,) if self.is_lstm else (2, gates * units)),
                    "merge_dense kernel": (self.merge_kernel.shape, (units, units)),
                    "logits kernel rows": (self.logits_kernel.shape[0], units)}
        wrong = [f"{what} {got} (expected {want})" for what, (got, want) in expected.items() if got != want]
        if wrong:
            raise PortableUnavailable(f"not a merge {rnn.upper()} decoder: {'; '.join(wrong)}")
        # LSTM: z = x @ kernel + h @ recurrent_kernel + bias. GRU (reset_after): the input bias joins
        # x @ kernel, the recurrent bias h @ recurrent_kernel. Either way the input part depends on the
        # word alone: one table row per vocabulary word when the table is small enough.
        input_bias = bias if self.is_lstm else bias[0]
        self.recurrent_bias = None if self.is_lstm else f32(bias[1])
        if vocab * gates * units * 4 <= MAX_INPUT_TABLE_BYTES:
            self.input_table, self._embeddings, self._kernel, self._input_bias = \
                f32(embeddings @ kernel + input_bias), None, None, None
        else:
            self.input_table, self._embeddings, self._kernel, self._input_bias = None, embeddings, kernel, input_bias

    @classmethod
    def load(cls, path: str | Path, rnn: str | None = None) -> "MergeStepper":
        """The stepper of a merge decoder's ``.keras`` file. ``rnn`` ("lstm"/"gru", from config.json) is
        checked against the file, which says which it is; the layers' settings must be the ones the
        NumPy step implements (else PortableUnavailable)."""
        path = Path(path)
        layers, weights = read_keras_file(path)
        rnn_layer = layers.get("rnn")
        if rnn_layer is None or rnn_layer["class_name"] not in ("LSTM", "GRU"):
            raise PortableUnavailable(f"{path}: not a merge decoder (no LSTM/GRU layer called 'rnn')")
        found = rnn_layer["class_name"].lower()
        if rnn is not None and rnn != found:
            raise CheckpointError(f"{path}: config.json says rnn {rnn!r} but the decoder has a {found.upper()}")
        _check_settings(path, layers, found)
        return cls(weights, found)

    def _input_part(self, words: np.ndarray) -> np.ndarray:
        if self.input_table is not None:
            return self.input_table[words]
        return self._embeddings[words] @ self._kernel + self._input_bias

    def initial_state(self, features: np.ndarray) -> tuple:
        """(B, 2048) pooled features -> state (float32 arrays, batch first)."""
        features = np.asarray(features, np.float32)
        with blas_threads_limited(self.blas_threads):
            image = _relu(features @ self.image_kernel + self.image_bias)  # (B, U); no dropout at inference
        zeros = np.zeros((features.shape[0], self.units), np.float32)
        return (zeros, zeros.copy(), image) if self.is_lstm else (zeros, image)

    def step(self, words: np.ndarray, state: tuple) -> tuple[np.ndarray, tuple]:
        """(B,) previous word ids + state -> ((B, V) next-word log-probs, new state)."""
        with blas_threads_limited(self.blas_threads):
            return self._step(np.asarray(words, np.intp), state)

    def _step(self, words: np.ndarray, state: tuple) -> tuple[np.ndarray, tuple]:
        units = self.units
        x = self._input_part(words)  # (B, gates * U)
        if self.is_lstm:
            h, c, image = state
            z = x + h @ self.recurrent_kernel
            i = _sigmoid(z[:, :units])
            f = _sigmoid(z[:, units:2 * units])
            g = np.tanh(z[:, 2 * units:3 * units])
            o = _sigmoid(z[:, 3 * units:])
            c = f * c + i * g
            h = o * np.tanh(c)
            new_state = (h, c, image)
        else:
            h, image = state
            inner = h @ self.recurrent_kernel + self.recurrent_bias
            zr = _sigmoid(x[:, :2 * units] + inner[:, :2 * units])
            z, r = zr[:, :units], zr[:, units:]
            hh = np.tanh(x[:, 2 * units:] + r * inner[:, 2 * units:])
            h = z * h + (np.float32(1.0) - z) * hh
            new_state = (h, image)
        hidden = _relu((h + image) @ self.merge_kernel + self.merge_bias)
        logits = hidden @ self.logits_kernel + self.logits_bias
        return log_softmax(logits), new_state

    def reorder(self, state: tuple, rows: Sequence[int]) -> tuple:
        """Rows ``rows`` of every state array."""
        rows = np.asarray(rows, np.intp)
        return tuple(s[rows] for s in state)


def _check_settings(path: Path, layers: dict[str, dict], rnn: str) -> None:
    """PortableUnavailable unless the saved layers are configured the way ``MergeStepper`` computes."""
    expect = {"image_dense": {"activation": "relu", "use_bias": True},
              "merge_dense": {"activation": "relu", "use_bias": True},
              "logits": {"activation": "linear", "use_bias": True},
              "rnn": {"activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": True,
                      **({"reset_after": True} if rnn == "gru" else {})},
              "merge": {}}
    for name, settings in expect.items():
        if name not in layers:
            raise PortableUnavailable(f"{path}: not a merge decoder (no layer {name!r})")
        config = dict(layers[name]["config"])
        cell = config.get("cell")
        if isinstance(cell, dict) and isinstance(cell.get("config"), dict):
            config.update(cell["config"])
        for key, want in settings.items():
            if key in config and config[key] != want:
                raise PortableUnavailable(f"{path}: layer {name!r} has {key}={config[key]!r}; the TensorFlow-free "
                                          f"step implements {key}={want!r} only")
    if layers["merge"]["class_name"] != "Add":
        raise PortableUnavailable(f"{path}: the merge layer is a {layers['merge']['class_name']}, not Add")


# ------------------------------------------------------------------------------------- ensembles

class PortableEnsembleStepper(EnsembleStepper):
    """``EnsembleStepper`` over NumPy members: its own (unfused) path, so the vote is the same rule
    (log of the members' mean next-word probability), with state kept as per-member tuples."""

    def __init__(self, members: Sequence):
        from .stepping import CompiledStepper

        if any(isinstance(m, CompiledStepper) for m in members):
            raise ValueError("PortableEnsembleStepper takes TensorFlow-free members; use EnsembleStepper")
        super().__init__(members)
        sizes = {m.vocab_size for m in self.members}
        if len(sizes) > 1:
            raise ValueError(f"ensemble members predict different vocabularies ({sorted(sizes)} words)")
        self.vocab_size = sizes.pop()


# ------------------------------------------------------------------------------------- OpenVINO

def _openvino_member_step(ops, member: MergeStepper, words, state):
    """OpenVINO nodes of ``member``'s step: (log-probs (B, V), [new h, new c] or [new h])."""
    axis = ops.constant(np.int64(1))
    if member.input_table is not None:
        x = ops.gather(ops.constant(member.input_table), words, ops.constant(np.int64(0)))
    else:
        embedded = ops.gather(ops.constant(member._embeddings), words, ops.constant(np.int64(0)))
        x = ops.add(ops.matmul(embedded, ops.constant(member._kernel), False, False), ops.constant(member._input_bias))
    h, image = state[0], state[-1]
    if member.is_lstm:
        z = ops.add(x, ops.matmul(h, ops.constant(member.recurrent_kernel), False, False))
        i, f, g, o = ops.split(z, axis, 4).outputs()
        c = ops.add(ops.multiply(ops.sigmoid(f), state[1]), ops.multiply(ops.sigmoid(i), ops.tanh(g)))
        h = ops.multiply(ops.sigmoid(o), ops.tanh(c))
        new_state = [h, c]
    else:
        inner = ops.add(ops.matmul(h, ops.constant(member.recurrent_kernel), False, False),
                        ops.constant(member.recurrent_bias))
        x_z, x_r, x_h = ops.split(x, axis, 3).outputs()
        inner_z, inner_r, inner_h = ops.split(inner, axis, 3).outputs()
        z = ops.sigmoid(ops.add(x_z, inner_z))
        r = ops.sigmoid(ops.add(x_r, inner_r))
        candidate = ops.tanh(ops.add(x_h, ops.multiply(r, inner_h)))
        h = ops.add(ops.multiply(z, h), ops.multiply(ops.subtract(ops.constant(np.float32(1.0)), z), candidate))
        new_state = [h]
    hidden = ops.relu(ops.add(ops.matmul(ops.add(h, image), ops.constant(member.merge_kernel), False, False),
                              ops.constant(member.merge_bias)))
    logits = ops.add(ops.matmul(hidden, ops.constant(member.logits_kernel), False, False),
                     ops.constant(member.logits_bias))
    return ops.log_softmax(logits, 1), new_state


class OpenVINOStepper:
    """The step of one merge decoder, or of an ensemble of them with its vote, as ONE compiled OpenVINO
    CPU model (float32, ``threads`` inference threads; default ``OPENVINO_THREADS``), and the members'
    image projections (``initial_state``) as a second one. Same interface as ``MergeStepper``; an
    ensemble's state is its members' states side by side in one flat tuple.

    Why it exists: once several rows share a step (beams, images) its small-batch matrix products read
    each weight once for all rows, where OpenBLAS's small matrix products do not (per step of the default
    ensemble: 1.6-2x faster than NumPy at 3 and 24 rows, the same at 1 row; ``bench/portable_steps.py``)."""

    feature_kind = "pooled"

    def __init__(self, members: Sequence[MergeStepper], threads: int | None = None):
        try:
            import openvino as ov
            import openvino.opset13 as ops
        except ImportError as err:
            raise PortableUnavailable(f"OpenVINO is not installed ({err})") from err
        self._ov = ov
        self.members = list(members)
        if not self.members:
            raise ValueError("no decoders to step")
        sizes = {m.vocab_size for m in self.members}
        if len(sizes) > 1:
            raise ValueError(f"ensemble members predict different vocabularies ({sorted(sizes)} words)")
        self.vocab_size = sizes.pop()
        self.units = self.members[0].units
        self._sizes = [3 if m.is_lstm else 2 for m in self.members]  # state arrays per member
        words = ops.parameter([-1], np.int32, name="words")
        inputs, log_probs, outputs = [words], [], []
        for k, (member, n) in enumerate(zip(self.members, self._sizes)):
            names = ("h", "c", "image") if member.is_lstm else ("h", "image")
            state = [ops.parameter([-1, member.units], np.float32, name=f"m{k}_{name}") for name in names[:n]]
            member_log_probs, new_state = _openvino_member_step(ops, member, words, state)
            inputs += state
            log_probs.append(member_log_probs)
            outputs += new_state
        if len(log_probs) == 1:
            vote = log_probs[0]
        else:  # ensemble.EnsembleStepper's rule: the log of the members' mean probability
            first = ops.constant(np.int64(0))
            stacked = ops.concat([ops.unsqueeze(lp, first) for lp in log_probs], 0)  # (K, B, V)
            peak = ops.reduce_max(stacked, first, True)
            mean = ops.reduce_mean(ops.exp(ops.subtract(stacked, peak)), first, False)
            vote = ops.add(ops.squeeze(peak, first), ops.log(mean))
        features = ops.parameter([-1, self.members[0].image_kernel.shape[0]], np.float32, name="features")
        images = [ops.relu(ops.add(ops.matmul(features, ops.constant(m.image_kernel), False, False),
                                   ops.constant(m.image_bias))) for m in self.members]  # (B, U) each; no dropout
        self.threads = int(OPENVINO_THREADS if threads is None else threads)
        self.precision = OPENVINO_PRECISION
        config = {"INFERENCE_PRECISION_HINT": self.precision, "INFERENCE_NUM_THREADS": self.threads,
                  "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        try:
            core = ov.Core()
            self._compiled = core.compile_model(ov.Model([vote, *outputs], inputs, "merge_step"), "CPU", config)
            self._project = core.compile_model(ov.Model(images, [features], "merge_image"), "CPU", config)
        except Exception as err:  # an unsupported CPU or runtime: NumPy steps instead
            raise PortableUnavailable(f"OpenVINO cannot compile the decoder step ({type(err).__name__}: "
                                      f"{err})") from err
        self._requests = threading.local()  # infer requests per thread (API threads decode concurrently)

    def _request(self, which: str = "step"):
        requests = self._requests.__dict__
        if which not in requests:
            requests[which] = (self._compiled if which == "step" else self._project).create_infer_request()
        return requests[which]

    def _infer(self, which: str, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run one compiled model on ``inputs`` (read in place, no copy); copies of its outputs."""
        request = self._request(which)
        for i, array in enumerate(inputs):  # binding tensors directly skips the generic input dispatch
            request.set_input_tensor(i, self._ov.Tensor(array, shared_memory=True))
        request.infer()
        return [request.get_output_tensor(k).data.copy() for k in range(len(request.model_outputs))]

    def initial_state(self, features: np.ndarray) -> tuple:
        """(B, 2048) pooled features -> the members' states side by side (float32 arrays, batch first)."""
        images = self._infer("project", [np.ascontiguousarray(features, np.float32)])
        state = []
        for image, is_lstm in zip(images, (m.is_lstm for m in self.members)):
            zeros = np.zeros_like(image)
            state += [zeros, zeros.copy(), image] if is_lstm else [zeros, image]
        return tuple(state)

    def step(self, words: np.ndarray, state: tuple) -> tuple[np.ndarray, tuple]:
        """(B,) previous word ids + state -> ((B, V) next-word log-probs (the vote, for an ensemble), new state)."""
        inputs = [np.ascontiguousarray(words, np.int32)] + [np.ascontiguousarray(s, np.float32) for s in state]
        log_probs, *rnn = self._infer("step", inputs)  # copies: safe to keep
        new_rnn, new_state, i = iter(rnn), [], 0
        for n in self._sizes:
            new_state += [next(new_rnn) for _ in range(n - 1)] + [state[i + n - 1]]  # the image is unchanged
            i += n
        return log_probs, tuple(new_state)

    def reorder(self, state: tuple, rows: Sequence[int]) -> tuple:
        rows = np.asarray(rows, np.intp)
        return tuple(s[rows] for s in state)


# ------------------------------------------------------------------------------------- folders

def _single_stepper(folder: Path) -> MergeStepper:
    config = read_config(folder)
    if config.decoder not in PORTABLE_FAMILIES:
        raise PortableUnavailable(f"{folder}: the {config.decoder!r} decoder family has no TensorFlow-free step; "
                                  "it steps on TensorFlow (decoders.checkpoint_stepper)")
    if not (folder / DECODER_FILE).is_file():
        raise CheckpointError(f"{folder / DECODER_FILE}: missing")
    return MergeStepper.load(folder / DECODER_FILE, rnn=config.rnn)


def portable_stepper(folder: str | Path, engine: str = "auto", vocab_size: int | None = None,
                     threads: int | None = None):
    """The TensorFlow-free step interface for a model folder: a merge decoder, or an ensemble of merge
    decoders.

    ``engine``: "numpy" (``MergeStepper`` / ``PortableEnsembleStepper``), "openvino" (``OpenVINOStepper``)
    or "auto" (OpenVINO when it compiles here, else NumPy). ``vocab_size`` (the length of vocab.json),
    when given, must be what every decoder predicts; ``threads`` sets OpenVINO's (default
    ``OPENVINO_THREADS``). PortableUnavailable (a ValueError) for any other
    family, or "openvino" where OpenVINO cannot run; CheckpointError for broken files."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    folder = Path(folder)
    if (folder / ENSEMBLE_FILE).is_file():
        paths = ensemble_members(folder)
        for member in paths:
            if (member / ENSEMBLE_FILE).is_file():
                raise CheckpointError(f"{folder / ENSEMBLE_FILE}: member {member} is itself an ensemble")
    else:
        paths = [folder]
    members = [_single_stepper(path) for path in paths]
    for path, member in zip(paths, members):
        if vocab_size is not None and member.vocab_size != vocab_size:
            raise CheckpointError(f"{path}: the vocabulary has {vocab_size} words but the decoder predicts "
                                  f"{member.vocab_size}; the vocabulary belongs to a different checkpoint")
    if engine != "numpy":
        try:
            return OpenVINOStepper(members, threads)
        except PortableUnavailable:
            if engine == "openvino":
                raise
    return PortableEnsembleStepper(members) if len(members) > 1 else members[0]
