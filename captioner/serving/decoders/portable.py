"""Decoding steps without TensorFlow for merge decoders: ``merge.step`` evaluated with NumPy or compiled
into OpenVINO, from the weights ``model_folder.read_decoder_layers`` reads out of decoder.keras.

There is no step arithmetic here: the merge step (``merge.image_projection``, ``merge.step``) and an
ensemble's vote (``ensemble.vote``) are written once against the ops of ``ops.py``. ``NumPyStepper``
evaluates them eagerly on float32 arrays; ``OpenVINOStepper`` traces them, for one decoder or for all of
an ensemble's members and their vote, into one OpenVINO CPU model: one call per step, and faster than
NumPy once beams or images share a step (``bench/portable_steps.py``). Both take the same list of
``merge.MergeWeights`` (one per member) and keep an ensemble's state as its members' states side by side
in one flat tuple. ``portable_stepper`` builds them from a model folder with json, zipfile, h5py, NumPy
(and OpenVINO) only: no TensorFlow, no Keras. Other families (attention, inject) raise
``PortableUnavailable``: they step on TensorFlow.

BLAS threads: NumPy's OpenBLAS splits even these small (rows x 512) @ (512 x V) products over every
core, and when the cores are busy (a training, other requests) a step gets many times slower. So each
NumPy step runs with OpenBLAS limited to ``NumPyStepper.blas_threads`` (1) through threadpoolctl
(installed with scikit-learn). OpenVINO's step is compiled for ``OPENVINO_THREADS`` (two where the
machine has them): its thread pool shares the work out without spinning, so two threads help on an idle
machine and cost little on a busy one (``bench/portable_steps.py`` and ``--busy``; figures in
docs/PERFORMANCE.md).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from ..model_folder import (DECODER_FILE, ENSEMBLE_FILE, CheckpointError, ensemble_members, read_config,
                            read_decoder_layers)
from . import merge
from .ensemble import vote
from .ops import NUMPY, openvino_ops

PORTABLE_FAMILIES = ("merge",)  # decoder families (config.json "decoder") that step without TensorFlow
ENGINES = ("auto", "numpy", "openvino")
OPENVINO_THREADS = min(2, os.cpu_count() or 1)  # INFERENCE_NUM_THREADS of the compiled step (see above)
OPENVINO_PRECISION = "f32"  # INFERENCE_PRECISION_HINT of the compiled step (f32: the TensorFlow captions exactly)
# Precompute embedding @ kernel + bias for the whole vocabulary (one gather per step instead of a
# matmul) while that table stays this small.
MAX_INPUT_TABLE_BYTES = 64 * 2 ** 20


class PortableUnavailable(ValueError):
    """A model folder whose decoder has no TensorFlow-free step (use ``decoders.checkpoint_stepper``)."""


log_softmax = NUMPY.log_softmax  # row-wise and stable; the NumPy engine's


# ---------------------------------------------------------------------------------- weights

def load_merge_weights(folder: str | Path, rnn: str | None = None) -> merge.MergeWeights:
    """The NumPy weights of a single merge decoder folder, read by layer name through
    ``model_folder.read_decoder_layers``. ``rnn`` ("lstm"/"gru", from config.json) is checked against
    the file, which says which it is. PortableUnavailable unless the layers are the ones, configured
    the way, ``merge.step`` computes; the RNN's input term is precomputed per vocabulary word while
    that table stays under ``MAX_INPUT_TABLE_BYTES``."""
    folder = Path(folder)
    path = folder / DECODER_FILE
    layers = read_decoder_layers(folder)
    try:
        is_lstm = merge.check_layers({name: (layer.class_name, layer.config) for name, layer in layers.items()})
    except ValueError as err:
        raise PortableUnavailable(f"{path}: {err}; the TensorFlow-free step cannot run it") from err
    found = "lstm" if is_lstm else "gru"
    if rnn is not None and rnn != found:
        raise CheckpointError(f"{path}: config.json says rnn {rnn!r} but the decoder has a {found.upper()}")
    arrays = {name: [np.ascontiguousarray(a, np.float32) for a in layers[name].weights] for name in merge.LAYER_NAMES}
    expected = {"image_dense": 2, "embedding": 1, "rnn": 3, "merge_dense": 2, "logits": 2}
    wrong = [f"{name} has {len(arrays[name])}" for name, n in expected.items() if len(arrays[name]) != n]
    if wrong:
        raise PortableUnavailable(f"{path}: not a merge decoder (weights per layer: {', '.join(wrong)})")
    units = arrays["rnn"][1].shape[0]  # the recurrent kernel is (U, G*U)
    weights = merge.MergeWeights.from_layers(arrays, is_lstm, units)
    try:
        merge.check_shapes(weights)
    except ValueError as err:
        raise PortableUnavailable(f"{path}: {err}") from err
    if weights.vocab_size * weights.kernel.shape[1] * 4 <= MAX_INPUT_TABLE_BYTES:
        table = merge.input_part(NUMPY, weights, np.arange(weights.vocab_size))  # every word's input term
        weights = dataclasses.replace(weights, embeddings=NUMPY.constant(table), kernel=None, input_bias=None)
    return weights


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


# ---------------------------------------------------------------------------------- the engines

def images(ops, members: Sequence[merge.MergeWeights], features) -> list:
    """Every member's (B, U) image vector (``merge.image_projection``) on ``ops``."""
    return [merge.image_projection(ops, w, features) for w in members]


def ensemble_step(ops, members: Sequence[merge.MergeWeights], words, state: Sequence) -> tuple:
    """One step of every member (``merge.step``) and their ``ensemble.vote`` (a single decoder's own
    log-probs) on ``ops``: words + flat state (each member's ``state_names`` side by side) -> (log-probs,
    new flat state)."""
    log_probs, new_state, i = [], [], 0
    for w in members:
        n = len(w.state_names)
        member_log_probs, member_state = merge.step(ops, w, words, state[i:i + n])
        log_probs.append(member_log_probs)
        new_state += member_state
        i += n
    return vote(ops, log_probs), new_state


class PortableStepper:
    """What both engines share: the members (``merge.MergeWeights`` as NumPy arrays), and the state
    layout (each member's ``state_names`` side by side in one flat tuple of float32 arrays, batch first)."""

    feature_kind = "pooled"  # reads (B, 2048) pooled features

    def __init__(self, members: Sequence[merge.MergeWeights]):
        self.members = list(members)
        if not self.members:
            raise ValueError("no decoders to step")
        sizes = {m.vocab_size for m in self.members}
        if len(sizes) > 1:
            raise ValueError(f"ensemble members predict different vocabularies ({sorted(sizes)} words)")
        self.vocab_size = sizes.pop()
        self.units = self.members[0].units
        self._sizes = [len(m.state_names) for m in self.members]  # state arrays per member

    def _with_zeros(self, member_images: Sequence[np.ndarray]) -> tuple:
        """The initial flat state: zero h (and c), then the image vector, per member."""
        state = []
        for image, n in zip(member_images, self._sizes):
            state += [np.zeros_like(image) for _ in range(n - 1)] + [image]
        return tuple(state)

    def reorder(self, state: tuple, rows: Sequence[int]) -> tuple:
        """Rows ``rows`` of every state array."""
        rows = np.asarray(rows, np.intp)
        return tuple(s[rows] for s in state)


class NumPyStepper(PortableStepper):
    """``merge.step`` (and, for an ensemble, ``ensemble.vote``) evaluated eagerly with NumPy, float32."""

    blas_threads: int | None = 1  # OpenBLAS threads during a step (None: as the process has them)

    def initial_state(self, features: np.ndarray) -> tuple:
        """(B, 2048) pooled features -> the members' states side by side."""
        with blas_threads_limited(self.blas_threads):
            return self._with_zeros(images(NUMPY, self.members, np.asarray(features, np.float32)))

    def step(self, words: np.ndarray, state: tuple) -> tuple[np.ndarray, tuple]:
        """(B,) previous word ids + state -> ((B, V) next-word log-probs (the vote, for an ensemble), new state)."""
        with blas_threads_limited(self.blas_threads):
            log_probs, new_state = ensemble_step(NUMPY, self.members, np.asarray(words, np.intp), state)
        return log_probs, tuple(new_state)


class OpenVINOStepper(PortableStepper):
    """``merge.step`` of one decoder, or of an ensemble's members with ``ensemble.vote``, traced into ONE
    compiled OpenVINO CPU model (float32, ``threads`` inference threads; default ``OPENVINO_THREADS``),
    and the members' image projections (``initial_state``) into a second one.

    Why it exists: once several rows share a step (beams, images) its small-batch matrix products read
    each weight once for all rows, where OpenBLAS's small matrix products do not (faster than
    NumPy once several rows share a step, the same at one row; ``bench/portable_steps.py``)."""

    def __init__(self, members: Sequence[merge.MergeWeights], threads: int | None = None):
        super().__init__(members)
        try:
            import openvino as ov

            ops = openvino_ops()
        except ImportError as err:
            raise PortableUnavailable(f"OpenVINO is not installed ({err})") from err
        import openvino.opset13 as opset

        self._ov = ov
        constants = [w.map(ops.constant) for w in self.members]  # the same weights as graph constants
        words = opset.parameter([-1], np.int32, name="words")
        state = [opset.parameter([-1, w.units], np.float32, name=f"m{k}_{name}")
                 for k, w in enumerate(self.members) for name in w.state_names]
        log_probs, new_state = ensemble_step(ops, constants, words, state)
        # a state entry the step passes through unchanged (the image) is not an output: step() reuses it
        self._changed = [new is not old for new, old in zip(new_state, state)]
        outputs = [log_probs] + [new for new, changed in zip(new_state, self._changed) if changed]
        features = opset.parameter([-1, self.members[0].image_kernel.shape[0]], np.float32, name="features")
        projected = images(ops, constants, features)
        self.threads = int(OPENVINO_THREADS if threads is None else threads)
        self.precision = OPENVINO_PRECISION
        config = {"INFERENCE_PRECISION_HINT": self.precision, "INFERENCE_NUM_THREADS": self.threads,
                  "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        try:
            core = ov.Core()
            self._compiled = core.compile_model(ov.Model(outputs, [words, *state], "merge_step"), "CPU", config)
            self._project = core.compile_model(ov.Model(projected, [features], "merge_image"), "CPU", config)
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
        return self._with_zeros(self._infer("project", [np.ascontiguousarray(features, np.float32)]))

    def step(self, words: np.ndarray, state: tuple) -> tuple[np.ndarray, tuple]:
        """(B,) previous word ids + state -> ((B, V) next-word log-probs (the vote, for an ensemble), new state)."""
        inputs = [np.ascontiguousarray(words, np.int32)] + [np.ascontiguousarray(s, np.float32) for s in state]
        log_probs, *changed = self._infer("step", inputs)  # copies: safe to keep
        changed = iter(changed)
        return log_probs, tuple(next(changed) if c else old for c, old in zip(self._changed, state))


# ------------------------------------------------------------------------------------- folders

def _member_weights(folder: Path) -> merge.MergeWeights:
    config = read_config(folder)
    if config.decoder not in PORTABLE_FAMILIES:
        raise PortableUnavailable(f"{folder}: the {config.decoder!r} decoder family has no TensorFlow-free step; "
                                  "it steps on TensorFlow (decoders.checkpoint_stepper)")
    return load_merge_weights(folder, rnn=config.rnn)


def portable_stepper(folder: str | Path, engine: str = "auto", vocab_size: int | None = None,
                     threads: int | None = None) -> PortableStepper:
    """The TensorFlow-free step interface for a model folder: a merge decoder, or an ensemble of merge
    decoders.

    ``engine``: "numpy" (``NumPyStepper``), "openvino" (``OpenVINOStepper``) or "auto" (OpenVINO when it
    compiles here, else NumPy). ``vocab_size`` (the length of vocab.json), when given, must be what
    every decoder predicts; ``threads`` sets OpenVINO's (default ``OPENVINO_THREADS``).
    PortableUnavailable (a ValueError) for any other family, or "openvino" where OpenVINO cannot run;
    CheckpointError for broken files."""
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
    members = [_member_weights(path) for path in paths]
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
    return NumPyStepper(members)
