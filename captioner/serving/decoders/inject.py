"""The init-inject decoder (Show and Tell): the image sets the RNN's starting state, then only words go in.

    features (B, 2048) -> Dropout -> Dense(U, tanh) = first h (and, for LSTM, a second Dense = first c)
    words (B, T) -> Embedding(V, E) -> Dropout -> LSTM|GRU(U, from that state) (B, T, U) -> Dropout
        -> Dense(U, relu) -> Dense(V) = next-word logits (B, T, V)

The merge decoder adds the image to every step's output instead; here the image is seen once, as
memory, which is the classic design of Vinyals et al. (2015). ``Stepper`` runs the same layers one word
at a time.
"""
from __future__ import annotations

from ...config import FEATURE_DIM, TrainConfig
from .stepping import CompiledStepper

LAYER_NAMES = ("init_h", "embedding", "rnn", "hidden_dense", "logits")


def build_model(vocab_size: int, cfg: TrainConfig):
    """Keras model: inputs ``features`` (B, 2048) float, ``words`` (B, T) int (0 = pad) -> logits (B, T, V)."""
    import keras
    from keras import layers

    features = keras.Input((FEATURE_DIM,), name="features")
    words = keras.Input((None,), dtype="int32", name="words")
    image = layers.Dropout(cfg.dropout, name="image_dropout")(features)
    names = ("init_h", "init_c") if cfg.rnn == "lstm" else ("init_h",)
    start = [layers.Dense(cfg.units, activation="tanh", name=n)(image) for n in names]  # each (B, U)
    embedded = layers.Embedding(vocab_size, cfg.embedding_dim, mask_zero=True, name="embedding")(words)
    embedded = layers.Dropout(cfg.dropout, name="embedding_dropout")(embedded)  # (B, T, E)
    rnn_cls = layers.LSTM if cfg.rnn == "lstm" else layers.GRU
    text = rnn_cls(cfg.units, return_sequences=True, name="rnn")(embedded, initial_state=start)  # (B, T, U)
    text = layers.Dropout(cfg.dropout, name="rnn_dropout")(text)
    hidden = layers.Dense(cfg.units, activation="relu", name="hidden_dense")(text)
    logits = layers.Dense(vocab_size, name="logits")(hidden)  # (B, T, V)
    return keras.Model([features, words], logits, name=f"inject_{cfg.rnn}")


class Stepper(CompiledStepper):
    """The decoding step interface over a trained init-inject model. State: ``(h, c)`` for LSTM,
    ``(h,)`` for GRU, batch first."""

    feature_kind = "pooled"

    def __init__(self, model):
        import keras
        import tensorflow as tf

        present = {layer.name for layer in model.layers}
        missing = [n for n in LAYER_NAMES if n not in present]
        if missing:
            raise ValueError(f"not an init-inject decoder: layers {missing} are missing")
        init_h, embedding, rnn, hidden_dense, logits = (model.get_layer(n) for n in LAYER_NAMES)
        is_lstm = isinstance(rnn, keras.layers.LSTM)
        init = [init_h, model.get_layer("init_c")] if is_lstm else [init_h]
        units, cell = int(rnn.units), rnn.cell

        @tf.function(input_signature=[tf.TensorSpec([None, FEATURE_DIM], tf.float32)])
        def initial_state(features):
            return tuple(dense(features) for dense in init)  # each (B, U); dropout is inactive at inference

        state_specs = [tf.TensorSpec([None, units], tf.float32)] * len(init)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32), *state_specs])
        def step(words, *state):
            x = tf.gather(embedding.embeddings, words)  # (B, E)
            out, new_state = cell(x, list(state) if is_lstm else state[0], training=False)  # (B, U)
            log_probs = tf.nn.log_softmax(logits(hidden_dense(out)))  # (B, V)
            return (log_probs, *tf.nest.flatten(new_state))

        self._compile(initial_state, step, state_specs)
