"""The attention decoder (Show, Attend and Tell, soft attention) over Xception's grid of regions.

    features (B, 10, 10, 2048) -> AveragePooling to (g, g) -> (B, L = g*g, 2048) -> Dropout
        -> Dense(U, relu) = regions (B, L, U)
    words (B, T) -> Embedding(V, E) -> Dropout -> AttentionLSTM(regions) -> h (B, T, U), context (B, T, U)
    h + Dense(context) -> Dropout -> Dense(U, relu) -> Dense(V) = next-word logits (B, T, V)

At every word the LSTM looks at the regions through additive attention (weights alpha over the L
regions, summing to 1), scaled by a learned gate; its first state comes from the mean region.
Training adds the doubly stochastic penalty ``lambda * sum_l (T / L - sum_t alpha_tl) ** 2`` so every
region gets looked at over a caption of T words. ``Stepper`` runs the very same step function one
word at a time for greedy and beam search, and returns the attention weights of a caption for the
app's heatmap.

The pooling to a coarser grid lives inside the model, so training and serving cannot disagree: the
model always takes Xception's raw 10x10 grid.
"""
from __future__ import annotations

import numpy as np

from ...config import FEATURE_DIM, GRID_SIZE, TrainConfig
from .stepping import CompiledStepper, tf_constant

LAYER_NAMES = ("region_dense", "embedding", "attention_lstm", "context_dense", "merge_dense", "logits")

try:  # keras is imported lazily elsewhere; this module is only imported when a model is built/loaded
    import keras
    import tensorflow as tf
except ImportError:  # pragma: no cover - the package needs both at run time
    keras = tf = None


@keras.saving.register_keras_serializable(package="captioner")
class AttentionLSTM(keras.layers.Layer):
    """An LSTM whose input at every step is [word embedding, gated attention context over regions]."""

    def __init__(self, units: int, attention_units: int, attention_reg: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.units, self.attention_units, self.attention_reg = units, attention_units, attention_reg

    def build(self, regions_shape, embedded_shape, words_shape=None):
        u, a, e = self.units, self.attention_units, int(embedded_shape[-1])
        region_dim = int(regions_shape[-1])
        add = self.add_weight
        self.key_kernel = add(shape=(region_dim, a), initializer="glorot_uniform", name="key_kernel")
        self.key_bias = add(shape=(a,), initializer="zeros", name="key_bias")
        self.query_kernel = add(shape=(u, a), initializer="glorot_uniform", name="query_kernel")
        self.score_vector = add(shape=(a, 1), initializer="glorot_uniform", name="score_vector")
        self.gate_kernel = add(shape=(u, 1), initializer="glorot_uniform", name="gate_kernel")
        self.gate_bias = add(shape=(1,), initializer="zeros", name="gate_bias")
        self.init_kernel = add(shape=(region_dim, 2 * u), initializer="glorot_uniform", name="init_kernel")
        self.init_bias = add(shape=(2 * u,), initializer="zeros", name="init_bias")
        self.kernel = add(shape=(e + region_dim, 4 * u), initializer="glorot_uniform", name="kernel")
        self.recurrent_kernel = add(shape=(u, 4 * u), initializer="orthogonal", name="recurrent_kernel")
        # forget-gate bias 1 (Jozefowicz et al. 2015): remember by default early in training
        bias = np.zeros(4 * u, np.float32)
        bias[u:2 * u] = 1.0
        self.bias = add(shape=(4 * u,), initializer=keras.initializers.Constant(bias), name="bias")
        self.built = True

    def initial_state(self, regions):
        """regions (B, L, R) -> (h, c) (B, U) each, and attention keys (B, L, A) computed once."""
        mean = tf.reduce_mean(regions, axis=1)  # (B, R)
        h, c = tf.split(tf.tanh(mean @ self.init_kernel + self.init_bias), 2, axis=-1)
        keys = tf.einsum("blr,ra->bla", regions, self.key_kernel) + self.key_bias  # (B, L, A)
        return h, c, keys

    def step(self, embedded_word, h, c, regions, keys):
        """One word: (B, E), (B, U), (B, U), (B, L, R), (B, L, A) -> h, c (B, U), context (B, R), alpha (B, L)."""
        query = h @ self.query_kernel  # (B, A)
        scores = tf.squeeze(tf.tanh(keys + query[:, None, :]) @ self.score_vector, -1)  # (B, L)
        alpha = tf.nn.softmax(scores, axis=-1)  # (B, L), sums to 1
        gate = tf.sigmoid(h @ self.gate_kernel + self.gate_bias)  # (B, 1): how much to look at all
        context = gate * tf.einsum("bl,blr->br", alpha, regions)  # (B, R)
        z = tf.concat([embedded_word, context], -1) @ self.kernel + h @ self.recurrent_kernel + self.bias
        i, f, g, o = tf.split(z, 4, axis=-1)  # (B, U) each
        c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        h = tf.sigmoid(o) * tf.tanh(c)
        return h, c, context, alpha

    def call(self, regions, embedded, words=None):
        """regions (B, L, R), embedded (B, T, E), words (B, T) ids (0 = padding, for the penalty)
        -> h (B, T, U), context (B, T, R), alpha (B, T, L)."""
        regions = tf.cast(regions, self.compute_dtype)
        h0, c0, keys = self.initial_state(regions)
        batch, n_regions = tf.shape(regions)[0], tf.shape(regions)[1]

        def scan_step(carry, x):
            h, c, _, _ = carry
            return self.step(x, h, c, regions, keys)

        first = (h0, c0, tf.zeros_like(regions[:, 0]), tf.zeros([batch, n_regions], regions.dtype))
        hs, _, contexts, alphas = tf.scan(scan_step, tf.transpose(embedded, [1, 0, 2]), initializer=first)
        hs, contexts, alphas = (tf.transpose(t, [1, 0, 2]) for t in (hs, contexts, alphas))
        if self.attention_reg and words is not None:
            mask = tf.cast(tf.not_equal(words, 0), alphas.dtype)[:, :, None]  # (B, T, 1)
            coverage = tf.reduce_sum(alphas * mask, axis=1)  # (B, L): total attention per region
            # Aim at an even share, T/L per region, rather than SAT's 1: the coverages sum to T, so the
            # two targets differ by a constant direction that softmax ignores (same gradients), but this
            # one is 0 at its optimum instead of a floor that would hide the loss's progress.
            even = tf.reduce_sum(mask, axis=1) / tf.cast(tf.shape(alphas)[-1], alphas.dtype)  # (B, 1)
            self.add_loss(self.attention_reg * tf.reduce_mean(tf.reduce_sum((even - coverage) ** 2, -1)))
        return hs, contexts, alphas

    def compute_output_shape(self, regions_shape, embedded_shape, words_shape=None):
        b, t = embedded_shape[0], embedded_shape[1]
        return (b, t, self.units), (b, t, regions_shape[-1]), (b, t, regions_shape[1])

    def get_config(self):
        return {**super().get_config(), "units": self.units, "attention_units": self.attention_units,
                "attention_reg": self.attention_reg}


def build_model(vocab_size: int, cfg: TrainConfig):
    """Keras model: ``features`` (B, 10, 10, 2048) float, ``words`` (B, T) int (0 = pad) -> logits (B, T, V)."""
    from keras import layers

    pool = GRID_SIZE // cfg.attention_grid
    features = keras.Input((GRID_SIZE, GRID_SIZE, FEATURE_DIM), name="features")
    words = keras.Input((None,), dtype="int32", name="words")
    grid = layers.AveragePooling2D(pool, name="region_pool")(features) if pool > 1 else features
    regions = layers.Reshape((cfg.attention_grid ** 2, FEATURE_DIM), name="regions")(grid)  # (B, L, 2048)
    regions = layers.Dropout(cfg.dropout, name="region_dropout")(regions)
    regions = layers.Dense(cfg.units, activation="relu", name="region_dense")(regions)  # (B, L, U)
    embedded = layers.Embedding(vocab_size, cfg.embedding_dim, name="embedding")(words)
    embedded = layers.Dropout(cfg.dropout, name="embedding_dropout")(embedded)  # (B, T, E)
    h, context, _ = AttentionLSTM(cfg.units, cfg.attention_units, cfg.attention_reg,
                                  name="attention_lstm")(regions, embedded, words)
    merged = layers.Add(name="merge")([h, layers.Dense(cfg.units, name="context_dense")(context)])
    merged = layers.Dropout(cfg.dropout, name="merge_dropout")(merged)
    hidden = layers.Dense(cfg.units, activation="relu", name="merge_dense")(merged)
    logits = layers.Dense(vocab_size, name="logits")(hidden)  # (B, T, V)
    return keras.Model([features, words], logits, name="attention_lstm")


class Stepper(CompiledStepper):
    """The decoding step interface over a trained attention model.

    State: ``(h, c, regions, keys)`` with the batch first, so beam search reorders beams by indexing.
    ``initial_state`` takes raw (B, 10, 10, 2048) grids; both functions are compiled once.
    """

    feature_kind = "spatial"  # reads the (B, 10, 10, 2048) region grid

    def __init__(self, model):
        missing = [n for n in LAYER_NAMES if n not in {layer.name for layer in model.layers}]
        if missing:
            raise ValueError(f"not an attention decoder: layers {missing} are missing")
        region_dense, embedding, attend, context_dense, merge_dense, logits = (
            model.get_layer(n) for n in LAYER_NAMES)
        names = {layer.name for layer in model.layers}
        pool = model.get_layer("region_pool") if "region_pool" in names else None
        reshape = model.get_layer("regions")
        self.vocab_size = int(logits.units)
        self.n_regions = int(reshape.target_shape[0])
        units, region_units = int(attend.units), int(region_dense.units)
        n_regions, attention_units = self.n_regions, int(attend.attention_units)

        grid_spec = tf.TensorSpec([None, GRID_SIZE, GRID_SIZE, FEATURE_DIM], tf.float32)

        @tf.function(input_signature=[grid_spec])
        def initial_state(features):
            grid = pool(features) if pool is not None else features
            regions = region_dense(reshape(grid))  # (B, L, U); dropout is inactive at inference
            h, c, keys = attend.initial_state(regions)
            return h, c, regions, keys

        specs = [tf.TensorSpec([None, units], tf.float32)] * 2 + [
            tf.TensorSpec([None, n_regions, region_units], tf.float32),
            tf.TensorSpec([None, n_regions, attention_units], tf.float32)]

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32), *specs])
        def step(words, h, c, regions, keys):
            x = tf.gather(embedding.embeddings, words)  # (B, E)
            h, c, context, alpha = attend.step(x, h, c, regions, keys)
            hidden = merge_dense(h + context_dense(context))  # (B, U)
            return tf.nn.log_softmax(logits(hidden)), h, c, regions, keys, alpha

        self._compile(initial_state, step, specs)

    def step_with_attention(self, words: np.ndarray, state: tuple) -> tuple[np.ndarray, tuple, np.ndarray]:
        """``step`` that also returns where it looked: (B, L) weights over the regions, each row summing to 1."""
        log_probs, *state, alpha = self._step(tf_constant(words, np.int32), *state)
        return log_probs.numpy(), tuple(state), alpha.numpy()

    def attention(self, features: np.ndarray, ids: list[int], start_id: int) -> np.ndarray:
        """Where the model looked while emitting each word of a caption.

        features (10, 10, 2048) for one image, ``ids`` the caption's word ids (without <start>/<end>)
        -> (len(ids), g, g) attention weights, each map summing to 1.
        """
        state = self.initial_state(np.asarray(features)[None])
        maps, previous = [], start_id
        for word in ids:
            _, *state, alpha = self._step(tf_constant([previous], np.int32), *state)
            maps.append(alpha.numpy()[0])
            previous = word
        side = int(round(self.n_regions ** 0.5))
        return np.array(maps, np.float32).reshape(len(ids), side, side)
