"""The one training loop. Teacher forcing (one process or many workers) and SCST all run through it.

Three parts are parameters of the loop, not copies of it:

* an **objective**: what one replica's batch adds to the loss. ``CrossEntropy`` (teacher forcing,
  optional label smoothing) or ``PolicyGradient`` (SCST: -(reward - baseline) * log p(caption)).
* ``GradientSteps``: the compiled train and evaluate steps of a model, optimizer and objective under
  any ``tf.distribute`` strategy (the default strategy is one process; ``MultiWorkerMirroredStrategy``
  runs under ``TF_CONFIG``). A batch's loss is its summed loss over the *global* count (words, or
  captions) of all replicas, and the replicas' gradients are summed, clipped and applied once, so one
  process and several workers take the same step on the same global batch.
* a ``Selector``: judges each epoch (held-out greedy CIDEr, or dev loss), stops after ``patience``
  epochs without improvement, halves the learning rate on plateaus, and at the end restores the best
  epoch's weights, or the average of the best few epochs when that scores higher on the held-out images.

``run_epochs`` drives them: train one epoch, score it, let the selector decide; repeat.
With several workers every worker scores the same weights on the same held-out images, so every
worker's selector makes the same decisions and no extra communication is needed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..config import DecodeConfig
from ..serving.decoding import decode_with

# Held-out selection decodes greedily, up to 30 words, with nothing blocked and <unk> allowed: the
# score measures the model itself, not the decoding settings tuned afterwards.
SELECTION_DECODE = DecodeConfig(beam_width=1, max_words=30, length_alpha=0.0, block_ngram=0, allow_unk=True)
GRADIENT_CLIP_NORM = 5.0  # every gradient tensor is clipped to this L2 norm (Keras's ``clipnorm``)


# ------------------------------------------------------------------------------ held-out scoring

def held_out_cider(stepper, features: np.ndarray, references: list[list[str]], vocab,
                   decode: DecodeConfig = SELECTION_DECODE, batch_size: int = 100) -> float:
    """CIDEr-D (pycocoevalcap) of the captions ``stepper`` gives ``features`` (N, ...) decoded with
    ``decode``, against each image's ``references``."""
    from pycocoevalcap.cider.cider import Cider

    predictions = []
    for i in range(0, len(features), batch_size):
        chunk = np.asarray(features[i:i + batch_size], np.float32)  # (b, ...) float16 caches -> float32
        predictions += [vocab.decode(hyps[0].ids) or "<empty>" for hyps in decode_with(stepper, chunk, vocab, decode)]
    gts = {i: refs for i, refs in enumerate(references)}
    return float(Cider().compute_score(gts, {i: [p] for i, p in enumerate(predictions)})[0])


# ------------------------------------------------------------------------------------ objectives

def token_losses(targets, logits, label_smoothing: float = 0.0):
    """Cross-entropy at every position: targets (B, T) ids, logits (B, T, V) -> (B, T).

    With label smoothing ``eps``: ``(1 - eps) * CE + eps * mean_v(-log p_v)`` (a uniform share of each
    target's probability, which keeps the model from over-confidence)."""
    import tensorflow as tf

    log_probs = tf.nn.log_softmax(logits)  # (B, T, V)
    nll = -tf.gather(log_probs, tf.cast(targets, tf.int32), batch_dims=2)  # (B, T)
    if not label_smoothing:
        return nll
    return (1.0 - label_smoothing) * nll - label_smoothing * tf.reduce_mean(log_probs, axis=-1)


@dataclass(frozen=True)
class CrossEntropy:
    """Teacher forcing: the model reads ``<start> w1 … wn`` and is scored on ``w1 … wn <end>``.

    Batches are ``((features (B, ...), words (B, T)), targets (B, T), weights (B, T))``, weights 0 on
    padding. The loss is the summed per-word loss over the number of real words; the model's own
    losses (the attention decoder's penalty) are added, as Keras's ``fit`` adds them."""

    label_smoothing: float = 0.0
    training: bool = True  # dropout on
    add_model_losses: bool = True

    def summed_loss(self, model, batch):
        """-> (sum of this replica's per-word losses, its number of real words), both scalars."""
        import tensorflow as tf

        (features, words), targets, weights = batch
        logits = model((features, words), training=self.training)  # (B, T, V)
        per_word = token_losses(targets, logits, self.label_smoothing)  # (B, T)
        weights = tf.cast(weights, per_word.dtype)
        return tf.reduce_sum(per_word * weights), tf.reduce_sum(weights)


@dataclass(frozen=True)
class PolicyGradient:
    """SCST (Rennie et al. 2017): ``-(reward - baseline) * log p(sampled caption)``, mean over captions.

    Batches are ``((features (N, ...), words (N, T)), targets (N, T), mask (N, T), advantage (N,))``:
    the sampled captions teacher-forced, ``<end>`` scored too. The model runs without dropout, as the
    policy that sampled them."""

    training: bool = False
    add_model_losses: bool = False

    def summed_loss(self, model, batch):
        """-> (sum over captions of -advantage * log p(caption), number of captions), both scalars."""
        import tensorflow as tf

        (features, words), targets, mask, advantage = batch
        logits = model((features, words), training=self.training)  # (N, T, V)
        word_log_probs = -token_losses(targets, logits)  # (N, T)
        caption_log_probs = tf.reduce_sum(word_log_probs * mask, axis=1)  # (N,)
        return -tf.reduce_sum(advantage * caption_log_probs), tf.cast(tf.shape(advantage)[0], tf.float32)


# ---------------------------------------------------------------------------- distributed steps

@dataclass
class Batches:
    """One split as the loop reads it: a ``tf.data`` pipeline of batches and the steps in an epoch.

    ``steps=None``: an epoch is one full pass (batch shapes may vary: length buckets; one process only).
    With ``steps``, ``dataset`` repeats (fixed-shape batches) and each epoch reads the next ``steps``
    global batches, so every worker runs the same number of steps. ``cfg.batch_size`` is the global
    batch: ``tf.distribute`` splits each one across the replicas.
    """

    dataset: Any  # tf.data.Dataset
    steps: int | None = None
    _distributed: Any = field(default=None, init=False, repr=False)
    _iterator: Any = field(default=None, init=False, repr=False)

    def epoch(self, strategy):
        """Yield this epoch's batches, distributed over ``strategy``'s replicas."""
        if self._distributed is None:
            import tensorflow as tf

            options = tf.data.Options()
            # every worker builds the whole pipeline and keeps its share of each global batch
            options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
            self._distributed = strategy.experimental_distribute_dataset(self.dataset.with_options(options))
        if self.steps is None:
            yield from self._distributed
            return
        if self._iterator is None:
            self._iterator = iter(self._distributed)
        for _ in range(self.steps):
            yield next(self._iterator)


class GradientSteps:
    """Compiled training and evaluation steps of ``model`` under ``strategy`` for one objective.

    Each replica's loss is ``summed loss / global count`` (+ the model's own losses / replicas), so the
    sum of the replicas' gradients is the gradient of the global batch's mean loss. That sum is taken
    before clipping and applied once, outside the replicas: one process and N workers take the same
    step (Keras's optimizer would clip each replica's share before summing).
    """

    def __init__(self, model, optimizer, objective, strategy=None, clip_norm: float = GRADIENT_CLIP_NORM):
        import tensorflow as tf

        self.model, self.optimizer, self.objective = model, optimizer, objective
        self.strategy = strategy or tf.distribute.get_strategy()
        self.clip_norm = clip_norm
        # reduce_retracing: length-bucketed batches (and SCST's) vary in width; one general trace serves them
        self._train_step = tf.function(self._distributed_train_step, reduce_retracing=True)
        self._evaluate_step = tf.function(self._distributed_evaluate_step, reduce_retracing=True)

    def _replica_loss(self, batch):
        """One replica's (loss to differentiate, summed loss, count, model penalty), all scalars."""
        import tensorflow as tf

        total, count = self.objective.summed_loss(self.model, batch)
        global_count = tf.distribute.get_replica_context().all_reduce("SUM", count)
        penalty = tf.constant(0.0)
        if self.objective.add_model_losses and self.model.losses:
            penalty = tf.add_n([tf.cast(x, tf.float32) for x in self.model.losses])  # a mean over this replica's batch
        replicas = tf.cast(self.strategy.num_replicas_in_sync, tf.float32)
        return total / tf.maximum(global_count, 1.0) + penalty / replicas, total, count, penalty

    def _distributed_train_step(self, batch):
        """One optimizer step on a global batch -> (summed loss, count, mean penalty) over all replicas."""
        import tensorflow as tf

        variables = self.model.trainable_variables

        def replica_step(replica_batch):
            with tf.GradientTape() as tape:
                loss, total, count, penalty = self._replica_loss(replica_batch)
            grads = tape.gradient(loss, variables)
            grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g) for g, v in zip(grads, variables)]
            grads = tf.distribute.get_replica_context().all_reduce("SUM", grads)  # the global gradient
            return [tf.clip_by_norm(g, self.clip_norm) for g in grads], total, count, penalty

        grads, total, count, penalty = self.strategy.run(replica_step, args=(batch,))
        # every replica holds the same summed gradient: apply it once, in cross-replica context
        grads = [self.strategy.experimental_local_results(g)[0] for g in grads]
        self.optimizer.apply(grads, variables)
        return self._reduce(total, count, penalty)

    def _distributed_evaluate_step(self, batch):
        """The loss of a global batch without training -> (summed loss, count, mean penalty)."""
        _, total, count, penalty = self.strategy.run(self._replica_loss, args=(batch,))
        return self._reduce(total, count, penalty)

    def _reduce(self, total, count, penalty):
        reduce = self.strategy.reduce
        return reduce("SUM", total, axis=None), reduce("SUM", count, axis=None), reduce("MEAN", penalty, axis=None)

    def step(self, batch) -> float:
        """One optimizer step on one global batch; returns its loss (mean per word or caption)."""
        return _mean_loss([[float(x) for x in self._train_step(batch)]])

    def train_epoch(self, batches: Batches) -> float:
        """One epoch of optimizer steps; returns the epoch's loss (per word, plus the mean penalty)."""
        return _mean_loss([[float(x) for x in self._train_step(b)] for b in batches.epoch(self.strategy)])

    def evaluate(self, batches: Batches) -> float:
        """The loss on one epoch of ``batches`` (per word, plus the mean penalty), weights unchanged."""
        return _mean_loss([[float(x) for x in self._evaluate_step(b)] for b in batches.epoch(self.strategy)])


def _mean_loss(steps: list[list[float]]) -> float:
    """Summed loss over count across steps, plus the steps' mean penalty (rows: total, count, penalty)."""
    if not steps:
        raise ValueError("no batches: fewer examples than one global batch")
    total, count, penalty = np.asarray(steps, np.float64).T
    return float(total.sum() / max(count.sum(), 1.0) + penalty.mean())


# ------------------------------------------------------------------------------------- selection

@dataclass
class Selector:
    """Which epoch's weights are kept, when training stops, and when the learning rate halves.

    Epochs are judged by ``metric`` (a name in the epoch's scores, e.g. "tune_cider" or "val_loss"),
    higher or lower better by ``mode``. An epoch improves only if it beats every earlier one. The best
    ``average_best`` epochs' weights are kept in memory (never more), so the end can restore the best
    epoch or, when it scores higher on the held-out images, their average.
    """

    metric: str = "tune_cider"
    mode: str = "max"  # "max" or "min"
    patience: int = 3  # stop after this many epochs without improvement
    average_best: int = 1  # also try the mean of the best N epochs' weights at the end (1 = off)
    lr_patience: int = 0  # halve the learning rate after this many epochs without improvement (0 = never)
    lr_factor: float = 0.5
    min_lr: float = 1e-5
    include_start: bool = False  # the starting weights compete as epoch 0 (kept if no epoch beats them)
    scores: list[float] = field(default_factory=list, init=False)
    epochs: list[int] = field(default_factory=list, init=False)
    _kept: list[tuple[float, int, list]] = field(default_factory=list, init=False, repr=False)  # best first
    _since_best: int = field(default=0, init=False)
    _since_lr_change: int = field(default=0, init=False)

    def __post_init__(self):
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', not {self.mode!r}")

    def better(self, a: float, b: float) -> bool:
        """True when score ``a`` beats score ``b``."""
        return a > b if self.mode == "max" else a < b

    @property
    def best_score(self) -> float:
        return self._kept[0][0]

    @property
    def best_epoch(self) -> int:
        return self._kept[0][1]

    def record(self, epoch: int, score: float, weights: list) -> None:
        """Note an epoch's score and weights (``model.get_weights()``)."""
        improved = not self._kept or self.better(score, self.best_score)
        self.scores.append(float(score))
        self.epochs.append(epoch)
        self._since_best = 0 if improved else self._since_best + 1
        self._since_lr_change = 0 if improved else self._since_lr_change + 1
        self._kept.append((float(score), epoch, weights))
        sign = -1.0 if self.mode == "max" else 1.0
        self._kept.sort(key=lambda kept: (sign * kept[0], kept[1]))  # best first; ties: the earlier epoch
        del self._kept[max(1, self.average_best):]

    def should_stop(self) -> bool:
        """True after ``patience`` epochs in a row without improvement."""
        return self._since_best >= self.patience

    def next_learning_rate(self, learning_rate: float) -> float:
        """The learning rate for the next epoch: halved (down to ``min_lr``) after ``lr_patience``
        epochs without improvement, then that count starts again."""
        if not self.lr_patience or self._since_lr_change < self.lr_patience or learning_rate <= self.min_lr:
            return learning_rate
        self._since_lr_change = 0
        return max(learning_rate * self.lr_factor, self.min_lr)

    def restore(self, model, score: Callable[[], float] | None = None, log=print) -> dict:
        """Load the kept weights into ``model``: the best epoch's, or the average of the best
        ``average_best`` epochs' when ``score()`` (the metric of the model as it stands) rates it higher.
        Returns ``{"best_epoch", "best_score"}`` plus, when an average was tried, ``"averaged_score"`` and
        ``"averaged_epochs"`` (empty when the single best epoch is kept)."""
        best_score, best_epoch, best_weights = self._kept[0]
        model.set_weights(best_weights)
        result = {"best_epoch": best_epoch, "best_score": best_score}
        if self.average_best > 1 and len(self._kept) > 1 and score is not None:
            epochs = [epoch for _, epoch, _ in self._kept]
            model.set_weights(average_weights([weights for _, _, weights in self._kept]))
            averaged = float(score())
            keep_average = self.better(averaged, best_score)
            log(f"average of epochs {epochs}: {self.metric} {averaged:.4f} vs best single epoch "
                f"{best_score:.4f}: keeping the {'average' if keep_average else 'single'}")
            if not keep_average:
                model.set_weights(best_weights)
            result.update(averaged_score=averaged, averaged_epochs=epochs if keep_average else [])
        return result


def average_weights(weight_sets: list[list[np.ndarray]]) -> list[np.ndarray]:
    """The element-wise mean of several ``model.get_weights()`` lists (checkpoint averaging)."""
    return [np.mean(np.stack(arrays), axis=0).astype(arrays[0].dtype) for arrays in zip(*weight_sets)]


# ----------------------------------------------------------------------------------------- loop

def get_learning_rate(optimizer) -> float:
    import keras

    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def run_epochs(model, train_epoch: Callable[[int], dict], score_epoch: Callable[[], dict], selector: Selector,
               epochs: int, optimizer=None, average_score: Callable[[], float] | None = None,
               log=print) -> tuple[dict[str, list], dict]:
    """The one epoch loop.

    Each epoch: ``train_epoch(epoch)`` trains and returns figures such as ``{"loss": …}``;
    ``score_epoch()`` returns figures that include ``selector.metric`` (``{"val_loss": …, "tune_cider": …}``);
    the selector records the score and weights, may halve ``optimizer``'s learning rate, and decides
    when to stop. With ``selector.include_start`` the starting weights are scored first, as epoch 0.
    At the end the model holds the weights the selector keeps (``average_score`` rates an average).

    Returns (history: one list per figure, plus "learning_rate" and "epoch_seconds" per trained epoch;
    the selector's ``restore`` result).
    """
    history: dict[str, list] = {}

    def note(figures: dict) -> None:
        for name, value in figures.items():
            history.setdefault(name, []).append(value)

    if selector.include_start:
        start = score_epoch()
        note(start)
        selector.record(0, start[selector.metric], model.get_weights())
        log(f"epoch 0 (start): {_describe(start)}")
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        learning_rate = get_learning_rate(optimizer) if optimizer is not None else None
        figures = {**train_epoch(epoch), **score_epoch()}
        seconds = time.perf_counter() - started
        note({**figures, **({"learning_rate": learning_rate} if learning_rate is not None else {}),
              "epoch_seconds": round(seconds, 1)})
        selector.record(epoch, figures[selector.metric], model.get_weights())
        log(f"epoch {epoch}: {_describe(figures)} ({seconds:.0f} s)")
        if selector.should_stop():
            log(f"no better {selector.metric} for {selector.patience} epoch(s): stopping")
            break
        if optimizer is not None:
            new_rate = selector.next_learning_rate(learning_rate)
            if new_rate != learning_rate:
                optimizer.learning_rate = new_rate
                log(f"learning rate {learning_rate:g} -> {new_rate:g}")
    return history, selector.restore(model, average_score, log)


def _describe(figures: dict) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in figures.items() if isinstance(value, float))
