"""The merge decoder: the RNN reads only words; the image joins after it, by addition.

    features (B, 2048) -> Dropout -> Dense(U, relu) --------------------┐ (B, 1, U)
    words (B, T) -> Embedding(V, E) -> Dropout -> LSTM|GRU(U) (B, T, U) -+-> Add -> Dropout
        -> Dense(U, relu) -> Dense(V) = next-word logits (B, T, V)

Trained as a Keras model (``build_model``) with full-sequence teacher forcing. Its one-word step is
written ONCE, here (``image_projection`` and ``step``, over ``MergeWeights``), against the small ops
interface of ``ops.py``, and evaluated three ways from the same weights:

- ``Stepper``: traced with TensorFlow into ``tf.function`` s over the Keras model's variables (training's
  held-out scoring and self-critical fine-tuning, which follow the weights as they change; and serving
  when everything is asked to run on TensorFlow);
- ``portable.NumPyStepper``: evaluated eagerly with NumPy, from the weights ``model_folder`` reads out of
  decoder.keras by layer name;
- ``portable.OpenVINOStepper``: traced into one compiled OpenVINO graph, from the same weights.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Mapping, Sequence

from ...config import FEATURE_DIM, TrainConfig
from .stepping import CompiledStepper

LAYER_NAMES = ("image_dense", "embedding", "rnn", "merge_dense", "logits")


def build_model(vocab_size: int, cfg: TrainConfig):
    """Keras model: inputs ``features`` (B, 2048) float, ``words`` (B, T) int (0 = pad) -> logits (B, T, V)."""
    import keras
    from keras import layers

    features = keras.Input((FEATURE_DIM,), name="features")
    words = keras.Input((None,), dtype="int32", name="words")
    image = layers.Dropout(cfg.dropout, name="image_dropout")(features)
    image = layers.Dense(cfg.units, activation="relu", name="image_dense")(image)  # (B, U)
    image = layers.Reshape((1, cfg.units), name="image_expand")(image)  # (B, 1, U): broadcast over T
    embedded = layers.Embedding(vocab_size, cfg.embedding_dim, mask_zero=True, name="embedding")(words)
    embedded = layers.Dropout(cfg.dropout, name="embedding_dropout")(embedded)  # (B, T, E)
    rnn_cls = layers.LSTM if cfg.rnn == "lstm" else layers.GRU
    text = rnn_cls(cfg.units, return_sequences=True, name="rnn")(embedded)  # (B, T, U)
    merged = layers.Add(name="merge")([image, text])  # (B, T, U)
    merged = layers.Dropout(cfg.dropout, name="merge_dropout")(merged)  # without it dev loss is worse
    hidden = layers.Dense(cfg.units, activation="relu", name="merge_dense")(merged)
    logits = layers.Dense(vocab_size, name="logits")(hidden)  # (B, T, V)
    return keras.Model([features, words], logits, name=f"merge_{cfg.rnn}")


# ------------------------------------------------------------------------------ the step, written once

@dataclass(frozen=True)
class MergeWeights:
    """The step's weights as one engine holds them (NumPy arrays, OpenVINO constants, Keras variables).

    ``embeddings`` is either the Embedding table (V, E), with ``kernel`` (E, G*U) and ``input_bias``
    (G*U,) applied per step, or, with ``kernel`` None, the precomputed input table (V, G*U): every
    word's ``embedding @ kernel + input_bias`` (G = 4 gates for LSTM, 3 for GRU).
    ``recurrent_bias`` is the GRU's (reset_after: it joins ``h @ recurrent_kernel``); None for LSTM.
    """

    is_lstm: bool
    units: int
    image_kernel: Any
    image_bias: Any
    embeddings: Any
    kernel: Any
    input_bias: Any
    recurrent_kernel: Any
    recurrent_bias: Any
    merge_kernel: Any
    merge_bias: Any
    logits_kernel: Any
    logits_bias: Any

    @classmethod
    def from_layers(cls, weights: Mapping[str, Sequence], is_lstm: bool, units: int) -> "MergeWeights":
        """From layer name -> that layer's weights in Keras order (Dense: kernel, bias; Embedding: table;
        LSTM/GRU: kernel, recurrent kernel, bias), as arrays or as Keras variables."""
        image_kernel, image_bias = weights["image_dense"]
        (embeddings,) = weights["embedding"]
        kernel, recurrent_kernel, bias = weights["rnn"]
        merge_kernel, merge_bias = weights["merge_dense"]
        logits_kernel, logits_bias = weights["logits"]
        # GRU (reset_after): bias (2, 3U) = input bias, recurrent bias. Indexing a variable inside a traced
        # function reads it there, so the TensorFlow step still follows training.
        input_bias, recurrent_bias = (bias, None) if is_lstm else (bias[0], bias[1])
        return cls(is_lstm, int(units), image_kernel, image_bias, embeddings, kernel, input_bias, recurrent_kernel,
                   recurrent_bias, merge_kernel, merge_bias, logits_kernel, logits_bias)

    def map(self, convert: Callable) -> "MergeWeights":
        """The same weights with every array passed through ``convert`` (e.g. into an engine's constants)."""
        arrays = {f.name: convert(getattr(self, f.name)) for f in fields(self)
                  if f.name not in ("is_lstm", "units") and getattr(self, f.name) is not None}
        return replace(self, **arrays)

    @property
    def vocab_size(self) -> int:
        return int(self.logits_kernel.shape[-1])

    @property
    def state_names(self) -> tuple[str, ...]:
        """The step's state, in order: ``(h, c, image)`` for LSTM, ``(h, image)`` for GRU."""
        return ("h", "c", "image") if self.is_lstm else ("h", "image")


def image_projection(ops, w: MergeWeights, features):
    """(B, 2048) pooled features -> (B, U) image vector (``image_dense``; dropout is inactive at inference)."""
    return ops.relu(ops.add(ops.matmul(features, w.image_kernel), w.image_bias))


def input_part(ops, w: MergeWeights, words):
    """(B,) word ids -> (B, G*U): the RNN's input term ``embedding[word] @ kernel + input_bias``."""
    if w.kernel is None:  # precomputed for the whole vocabulary: one row lookup
        return ops.gather(w.embeddings, words)
    return ops.add(ops.matmul(ops.gather(w.embeddings, words), w.kernel), w.input_bias)


def step(ops, w: MergeWeights, words, state: Sequence) -> tuple[Any, tuple]:
    """One word: (B,) previous word ids + state (``w.state_names``) -> ((B, V) next-word log-probs, new
    state). The Keras LSTM/GRU cell's arithmetic (gates i, f, g, o; GRU z, r, h with reset_after), then
    Add, ``merge_dense`` (relu) and ``logits``. The image (the state's last entry) passes through unchanged."""
    x = input_part(ops, w, words)
    h, image = state[0], state[-1]
    if w.is_lstm:
        z = ops.add(x, ops.matmul(h, w.recurrent_kernel))
        i, f, g, o = ops.split(z, 4)
        c = ops.add(ops.multiply(ops.sigmoid(f), state[1]), ops.multiply(ops.sigmoid(i), ops.tanh(g)))
        h = ops.multiply(ops.sigmoid(o), ops.tanh(c))
        rnn_state = (h, c)
    else:
        inner = ops.add(ops.matmul(h, w.recurrent_kernel), w.recurrent_bias)
        x_z, x_r, x_h = ops.split(x, 3)
        inner_z, inner_r, inner_h = ops.split(inner, 3)
        z = ops.sigmoid(ops.add(x_z, inner_z))
        r = ops.sigmoid(ops.add(x_r, inner_r))
        candidate = ops.tanh(ops.add(x_h, ops.multiply(r, inner_h)))
        h = ops.add(ops.multiply(z, h), ops.multiply(ops.subtract(ops.constant(1.0), z), candidate))
        rnn_state = (h,)
    hidden = ops.relu(ops.add(ops.matmul(ops.add(h, image), w.merge_kernel), w.merge_bias))
    logits = ops.add(ops.matmul(hidden, w.logits_kernel), w.logits_bias)
    return ops.log_softmax(logits), (*rnn_state, image)


def check_layers(layers: Mapping[str, tuple[str, dict]]) -> bool:
    """ValueError unless ``layers`` (name -> (Keras class name, layer config)) are a merge decoder
    configured the way ``step`` computes; -> True for LSTM, False for GRU."""
    missing = [n for n in (*LAYER_NAMES, "merge") if n not in layers]
    if missing:
        raise ValueError(f"not a merge decoder: layers {missing} are missing")
    rnn_class = layers["rnn"][0]
    if rnn_class not in ("LSTM", "GRU"):
        raise ValueError(f"not a merge decoder: its 'rnn' layer is a {rnn_class}, not an LSTM or GRU")
    if layers["merge"][0] != "Add":
        raise ValueError(f"not a merge decoder: the merge layer is a {layers['merge'][0]}, not Add")
    expect = {"image_dense": {"activation": "relu", "use_bias": True},
              "merge_dense": {"activation": "relu", "use_bias": True},
              "logits": {"activation": "linear", "use_bias": True},
              "rnn": {"activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": True,
                      **({"reset_after": True} if rnn_class == "GRU" else {})}}
    for name, settings in expect.items():
        config = dict(layers[name][1])
        cell = config.get("cell")
        if isinstance(cell, dict) and isinstance(cell.get("config"), dict):
            config.update(cell["config"])
        for key, want in settings.items():
            if key in config and config[key] != want:
                raise ValueError(f"layer {name!r} has {key}={config[key]!r}; the merge step implements "
                                 f"{key}={want!r} only")
    return rnn_class == "LSTM"


def check_shapes(w: MergeWeights) -> None:
    """ValueError naming every weight whose shape does not fit the others (a damaged or foreign file)."""
    gates, units, vocab = (4 if w.is_lstm else 3), w.units, w.vocab_size
    shape = lambda a: tuple(int(d) for d in a.shape)  # noqa: E731
    expected = {"image_dense kernel": (shape(w.image_kernel)[1:], (units,)),
                "embedding rows": (shape(w.embeddings)[0], vocab),
                "rnn kernel": (shape(w.kernel), (shape(w.embeddings)[1], gates * units)),
                "rnn recurrent kernel": (shape(w.recurrent_kernel), (units, gates * units)),
                "rnn bias": (shape(w.input_bias), (gates * units,)),
                "merge_dense kernel": (shape(w.merge_kernel), (units, units)),
                "logits kernel rows": (shape(w.logits_kernel)[0], units)}
    wrong = [f"{what} {got} (expected {want})" for what, (got, want) in expected.items() if got != want]
    if wrong:
        raise ValueError(f"not a merge {'LSTM' if w.is_lstm else 'GRU'} decoder: {'; '.join(wrong)}")


# ------------------------------------------------------------------------------ on TensorFlow

class Stepper(CompiledStepper):
    """``step`` traced with TensorFlow over a Keras merge model's variables: the step interface for
    training (it reads the variables at every call, so it always steps the current weights) and for
    serving when everything runs on TensorFlow.

    State is a tuple of tensors with the batch first: ``(h, c, image)`` for LSTM, ``(h, image)`` for GRU.
    Both functions are compiled once with fixed signatures (any batch size), never ``model.predict``
    per word.
    """

    feature_kind = "pooled"  # reads (B, 2048) pooled features

    def __init__(self, model):
        import tensorflow as tf

        from .ops import tensorflow_ops

        names = {layer.name for layer in model.layers}
        missing = [n for n in LAYER_NAMES if n not in names]
        if missing:
            raise ValueError(f"not a merge decoder: layers {missing} are missing")
        self.is_lstm = check_layers({layer.name: (type(layer).__name__, layer.get_config()) for layer in model.layers})
        rnn = model.get_layer("rnn")
        self.units = units = int(rnn.units)
        self.vocab_size = int(model.get_layer("logits").units)
        variables = {n: list(model.get_layer(n).weights) for n in LAYER_NAMES}
        ops, is_lstm = tensorflow_ops(), self.is_lstm
        n_state = 3 if is_lstm else 2

        def weights() -> MergeWeights:  # called while tracing: the variables are read inside the graph
            return MergeWeights.from_layers(variables, is_lstm, units)

        # autograph off: the step is plain Python over ops (no tensor-dependent control flow to convert)
        @tf.function(input_signature=[tf.TensorSpec([None, FEATURE_DIM], tf.float32)], autograph=False)
        def initial_state(features):
            image = image_projection(ops, weights(), features)  # (B, U)
            zeros = tf.zeros([tf.shape(features)[0], units])
            return (*([zeros] * (n_state - 1)), image)

        state_specs = [tf.TensorSpec([None, units], tf.float32)] * n_state

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32), *state_specs], autograph=False)
        def step_fn(words, *state):
            log_probs, new_state = step(ops, weights(), words, state)
            return (log_probs, *new_state)

        self._compile(initial_state, step_fn, state_specs)
