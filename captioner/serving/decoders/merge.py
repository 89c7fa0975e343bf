"""The merge decoder: the RNN reads only words; the image joins after it, by addition.

    features (B, 2048) -> Dropout -> Dense(U, relu) --------------------┐ (B, 1, U)
    words (B, T) -> Embedding(V, E) -> Dropout -> LSTM|GRU(U) (B, T, U) -+-> Add -> Dropout
        -> Dense(U, relu) -> Dense(V) = next-word logits (B, T, V)

Trained with full-sequence teacher forcing; ``Stepper`` runs the same layers one word at a time.
"""
from __future__ import annotations

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


class Stepper(CompiledStepper):
    """The decoding step interface over a trained merge model.

    State is a tuple of tensors with the batch first: ``(h, c, image)`` for LSTM, ``(h, image)`` for GRU.
    Both functions are compiled once with fixed signatures (any batch size), never ``model.predict``
    per word.
    """

    feature_kind = "pooled"  # reads (B, 2048) pooled features

    def __init__(self, model):
        import keras
        import tensorflow as tf

        missing = [n for n in LAYER_NAMES if n not in {layer.name for layer in model.layers}]
        if missing:
            raise ValueError(f"not a merge decoder: layers {missing} are missing")
        image_dense, embedding, rnn, merge_dense, logits = (model.get_layer(n) for n in LAYER_NAMES)
        self.vocab_size = int(logits.units)
        self.units = int(rnn.units)
        self.is_lstm = isinstance(rnn, keras.layers.LSTM)
        cell = rnn.cell
        n_rnn_states = 2 if self.is_lstm else 1
        units = self.units

        @tf.function(input_signature=[tf.TensorSpec([None, FEATURE_DIM], tf.float32)])
        def initial_state(features):
            image = image_dense(features)  # (B, U); dropout is inactive at inference
            zeros = tf.zeros([tf.shape(features)[0], units])
            return (*([zeros] * n_rnn_states), image)

        state_specs = [tf.TensorSpec([None, units], tf.float32)] * (n_rnn_states + 1)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32), *state_specs])
        def step(words, *state):
            *rnn_state, image = state
            x = tf.gather(embedding.embeddings, words)  # (B, E); a plain lookup, no mask attached
            out, new_rnn_state = cell(x, rnn_state if self.is_lstm else rnn_state[0], training=False)
            hidden = merge_dense(out + image)  # (B, U)
            log_probs = tf.nn.log_softmax(logits(hidden))  # (B, V)
            return (log_probs, *tf.nest.flatten(new_rnn_state), image)

        self._compile(initial_state, step, state_specs)
