"""Training a decoder on cached image features with full-sequence teacher forcing.

One sample per caption (not one per prefix): the decoder reads ``<start> w1 … wn`` and is scored on
``w1 … wn <end>`` at every position at once, with padding masked out of the loss.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..serving.model_folder import save_checkpoint
from ..config import TrainConfig, save_json
from .data import CaptionDataset
from .distributed import cluster_spec, fit_distributed
from ..serving.vocab import Vocabulary


TUNE_FILE = "tune_images.txt"  # the held-out training images, saved beside the checkpoint


def hold_out(names: list[str], count: int, seed: int) -> tuple[list[str], list[str]]:
    """Split ``count`` images (a seeded random choice, at most a tenth of them) off ``names``:
    (kept, held out)."""
    count = min(count, len(names) // 10)
    if count <= 0:
        return list(names), []
    chosen = set(np.random.default_rng(seed).choice(sorted(names), size=count, replace=False).tolist())
    return [n for n in names if n not in chosen], [n for n in names if n in chosen]


def encode_captions(dataset: CaptionDataset, names: list[str], vocab: Vocabulary,
                    max_words: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (image index per caption (N,), padded id sequences (N, max_words + 2)) for ``names``."""
    image_index, sequences = [], []
    for i, name in enumerate(names):
        for caption in dataset.captions[name]:
            ids = vocab.encode(caption, max_words)
            image_index.append(i)
            sequences.append(ids + [vocab.pad_id] * (max_words + 2 - len(ids)))
    return np.array(image_index, np.int32), np.array(sequences, np.int32)


def make_dataset(features: np.ndarray, image_index: np.ndarray, sequences: np.ndarray, batch_size: int,
                 shuffle: bool, seed: int, bucket: bool = True, augmented: "AugmentedViews | None" = None):
    """tf.data of ``((features (B, ...), words (B, T)), targets (B, T), mask weights (B, T))``.

    ``features`` (N_images, ...) stays a NumPy array (the spatial grids of Flickr8k are 2.9 GB at
    float16, over TensorFlow's 2 GB limit for constants); each batch gathers its rows from it.

    Captions are grouped into batches of similar length and padded only to their batch's longest, so
    the RNN does not spend most of its steps on padding (Flickr8k captions average 12 words, the
    longest 30+): about 2-3x faster per epoch on a CPU than padding everything to the maximum.
    ``bucket=False`` pads every batch to the full width instead (fixed shapes, for multi-worker runs).

    ``augmented``: each caption is paired, with probability ``augmented.probability``, with its image's
    augmented copy instead; captions of mirrored copies have "left" and "right" swapped.
    """
    import tensorflow as tf

    lengths = (sequences != 0).sum(axis=1).astype(np.int32)  # includes <start> and <end>
    feature_shape = features.shape[1:]

    def to_example(idx, seq, length):
        seq = seq[:length]
        inputs, targets = seq[:-1], seq[1:]  # teacher forcing: predict each next word
        weights = tf.ones_like(targets, tf.float32)  # padding added below gets weight 0
        return (idx, inputs), targets, weights

    def gather_features(x, targets, weights):
        idx, inputs = x
        if augmented is None:
            rows = tf.numpy_function(lambda i: features[i].astype(np.float32), [idx], tf.float32, stateful=False)
        else:
            use_copy = tf.random.uniform(tf.shape(idx)) < augmented.probability  # (B,)
            rows = tf.numpy_function(
                lambda i, c: np.where(c[:, None], augmented.features[i], features[i]).astype(np.float32),
                [idx, use_copy], tf.float32, stateful=False)
            swap = (use_copy & tf.gather(tf.constant(augmented.mirrored), idx))[:, None]  # (B, 1)
            swap_ids = tf.constant(augmented.swap_ids)
            inputs = tf.where(swap, tf.gather(swap_ids, inputs), inputs)
            targets = tf.where(swap, tf.gather(swap_ids, targets), targets)
        rows.set_shape([None, *feature_shape])
        return (rows, inputs), targets, weights

    ds = tf.data.Dataset.from_tensor_slices((image_index, sequences, lengths))
    if shuffle:
        ds = ds.shuffle(len(sequences), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE)
    if not bucket:
        width = sequences.shape[1] - 1
        ds = ds.padded_batch(batch_size, (([], [width]), [width], [width]), drop_remainder=True)
        return ds.map(gather_features).prefetch(2)
    boundaries = [8, 10, 12, 14, 16, 19, 23]
    ds = ds.bucket_by_sequence_length(lambda inputs, targets, weights: tf.shape(targets)[0], boundaries,
                                      [batch_size] * (len(boundaries) + 1))
    return ds.map(gather_features).prefetch(2)


@dataclass
class AugmentedViews:
    """The augmented copies of the training images, aligned with the original feature rows."""

    features: np.ndarray  # (N_images, 2048) float32
    mirrored: np.ndarray  # (N_images,) bool: the copy is a mirror image
    swap_ids: np.ndarray  # (V,) int32: word id -> id of its mirror word ("left" <-> "right"; others unchanged)
    probability: float  # chance a caption is shown with the copy

    @classmethod
    def build(cls, names: list[str], originals: np.ndarray, copies: dict[str, np.ndarray], vocab: Vocabulary,
              seed: int, probability: float) -> "AugmentedViews":
        """Images without a cached copy keep their original features (and are never mirrored)."""
        from .augment import MIRROR_WORDS, augmentation_for

        feats = np.stack([copies.get(n, originals[i]) for i, n in enumerate(names)]).astype(np.float32)
        mirrored = np.array([n in copies and augmentation_for(n, seed).mirror for n in names], bool)
        swap_ids = np.arange(len(vocab), dtype=np.int32)
        for word, other in MIRROR_WORDS.items():
            if word in vocab.index and other in vocab.index:
                swap_ids[vocab.index[word]] = vocab.index[other]
        return cls(feats, mirrored, swap_ids, probability)


def build_model(vocab_size: int, cfg: TrainConfig):
    """The decoder named by ``cfg.decoder``."""
    from ..serving.decoders import build_attention_model, build_merge_model

    return (build_attention_model if cfg.decoder == "attention" else build_merge_model)(vocab_size, cfg)


def make_loss(label_smoothing: float):
    """Masked cross-entropy per real word; with label smoothing, ``(1 - eps) * CE + eps * mean_v(-log p_v)``
    (a uniform share of each target's probability, which keeps the model from over-confidence)."""
    import keras
    import tensorflow as tf

    if not label_smoothing:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight")

    class SmoothedCrossEntropy(keras.losses.Loss):
        def call(self, y_true, y_pred):  # (B, T) ids, (B, T, V) logits -> (B, T)
            log_probs = tf.nn.log_softmax(y_pred)
            nll = -tf.gather(log_probs, tf.cast(y_true, tf.int32), batch_dims=2)
            return (1.0 - label_smoothing) * nll - label_smoothing * tf.reduce_mean(log_probs, axis=-1)

    return SmoothedCrossEntropy(reduction="mean_with_sample_weight", name="smoothed_cross_entropy")


def tune_cider(model, features: np.ndarray, references: list[list[str]], vocab: Vocabulary,
               batch_size: int = 100) -> float:
    """Greedy CIDEr-D of ``model`` on held-out images (features (N, ...), their reference captions)."""
    from pycocoevalcap.cider.cider import Cider

    from ..serving.decoders import make_stepper
    from ..serving.decoding import greedy_decode

    stepper = make_stepper(model)
    predictions = []
    for i in range(0, len(features), batch_size):
        hyps = greedy_decode(stepper, features[i:i + batch_size].astype(np.float32), vocab.start_id, vocab.end_id)
        predictions += [vocab.decode(h.ids) or "<empty>" for h in hyps]
    gts = {i: refs for i, refs in enumerate(references)}
    return float(Cider().compute_score(gts, {i: [p] for i, p in enumerate(predictions)})[0])


def _tune_callback(features, references, vocab, folder: Path, log):
    """A Keras callback: after each epoch, score the held-out images, log ``tune_cider`` and keep the weights."""
    import keras

    class TuneCider(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            score = tune_cider(self.model, features, references, vocab)
            if logs is not None:
                logs["tune_cider"] = score
            self.model.save_weights(folder / f"epoch{epoch + 1:03d}.weights.h5")
            log(f"epoch {epoch + 1}: greedy CIDEr on held-out training images {score:.4f}")

    return TuneCider()


def average_weights(model, paths: list[Path]) -> list[np.ndarray]:
    """The element-wise mean of several saved weight sets of ``model`` (checkpoint averaging)."""
    total = None
    for path in paths:
        model.load_weights(path)
        weights = model.get_weights()
        total = weights if total is None else [t + w for t, w in zip(total, weights)]
    return [t / len(paths) for t in total]


def train(dataset: CaptionDataset, features_by_name: dict[str, np.ndarray], cfg: TrainConfig, out_dir: Path,
          log=print, strategy=None, augmented_by_name: dict[str, np.ndarray] | None = None) -> dict:
    """Fit a decoder; keep the epoch with the best ``cfg.select_on`` (greedy CIDEr on the held-out
    training images, or dev loss), or the average of the best few epochs when that scores higher on
    the held-out images; write the checkpoint folder.

    ``strategy``: a ``tf.distribute`` strategy (see ``distributed.py``); ``cfg.batch_size`` is then the
    global batch, split across replicas. ``augmented_by_name``: features of the training images'
    augmented copies (used when ``cfg.augment`` > 0). Returns the training summary (also saved as ``training.json``).
    """
    import keras
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    cfg.validate()
    keras.utils.set_random_seed(cfg.seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_names = [n for n in dataset.split_names("train") if n in features_by_name]
    dev_names = [n for n in dataset.split_names("dev") if n in features_by_name]
    train_names, tune_names = hold_out(train_names, cfg.tune_images, cfg.seed)
    (out_dir / TUNE_FILE).write_text("".join(f"{n}\n" for n in tune_names), encoding="utf-8")
    if not train_names or not dev_names:
        raise ValueError(f"need features for train and dev images (have {len(train_names)} / {len(dev_names)})")
    vocab = Vocabulary.fit((c for n in train_names for c in dataset.captions[n]), cfg.min_word_count)
    log(f"vocabulary: {len(vocab)} words (seen >= {cfg.min_word_count} times in {len(train_names)} training images)")

    _, n_workers = cluster_spec()

    if cfg.augment and not augmented_by_name:
        raise ValueError("cfg.augment is set but no augmented features were given")

    def split_data(names, shuffle, augment=False):
        feats = np.stack([features_by_name[n] for n in names])
        idx, seqs = encode_captions(dataset, names, vocab, cfg.max_caption_words)
        views = (AugmentedViews.build(names, feats, augmented_by_name, vocab, cfg.seed, cfg.augment)
                 if augment and cfg.augment else None)
        ds = make_dataset(feats, idx, seqs, cfg.batch_size, shuffle, cfg.seed, bucket=n_workers == 1,
                          augmented=views)
        # Workers must run the same number of steps; length buckets make the batch count vary, so
        # with several workers the data repeats and each epoch is a fixed number of steps.
        steps = max(1, len(seqs) // cfg.batch_size // n_workers) if n_workers > 1 else None
        return (ds.repeat() if steps else ds), len(seqs), steps

    train_ds, n_train, train_steps = split_data(train_names, True, augment=True)
    dev_ds, n_dev, dev_steps = split_data(dev_names, False)
    log(f"captions: {n_train} train, {n_dev} dev; {strategy.num_replicas_in_sync} replica(s), {n_workers} worker(s)")
    with strategy.scope():
        model = build_model(len(vocab), cfg)
        model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate, clipnorm=5.0),
                      # mean over real (unpadded) words, so the loss reads as cross-entropy per word
                      loss=make_loss(cfg.label_smoothing), weighted_metrics=[])
    if cfg.embedding_init == "word2vec":
        from .embeddings import word2vec_matrix

        table, coverage = word2vec_matrix((c for n in train_names for c in dataset.captions[n]), vocab,
                                          cfg.embedding_dim, cfg.seed)
        model.get_layer("embedding").embeddings.assign(table)
        log(f"embedding initialised from Word2Vec on the training captions ({coverage:.0%} of words)")
    log(f"decoder: {model.count_params():,} parameters")
    start = time.perf_counter()
    if n_workers > 1:
        losses = fit_distributed(model, train_ds, dev_ds, cfg.epochs, train_steps, dev_steps, cfg.patience,
                                 strategy, log)
    else:
        import shutil

        epochs_dir = out_dir / ".epochs"  # every epoch's weights, for selection and averaging
        shutil.rmtree(epochs_dir, ignore_errors=True)
        epochs_dir.mkdir()
        use_tune = cfg.select_on == "tune_cider" and bool(tune_names)
        monitor, mode = ("tune_cider", "max") if use_tune else ("val_loss", "min")
        tune_feats = np.stack([features_by_name[n] for n in tune_names]) if tune_names else None
        tune_refs = [dataset.captions[n] for n in tune_names]
        callbacks = [
            _tune_callback(tune_feats, tune_refs, vocab, epochs_dir, log) if use_tune else
            keras.callbacks.ModelCheckpoint(epochs_dir / "epoch{epoch:03d}.weights.h5", save_weights_only=True),
            keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=cfg.patience),
            *([keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode=mode, factor=0.5, patience=cfg.lr_patience,
                                                 min_lr=1e-5)] if cfg.lr_patience else []),
            keras.callbacks.CSVLogger(out_dir / "history.csv"),
        ]
        losses = model.fit(train_ds, validation_data=dev_ds, epochs=cfg.epochs, callbacks=callbacks,
                           verbose=2 if not sys.stderr.isatty() else 1).history
        scores = losses[monitor]
        ranked = sorted(range(len(scores)), key=lambda i: scores[i], reverse=mode == "max")
        paths = [epochs_dir / f"epoch{i + 1:03d}.weights.h5" for i in ranked]
        model.load_weights(paths[0])
        if use_tune and cfg.average_best > 1 and len(paths) > 1:
            best_weights = model.get_weights()
            model.set_weights(average_weights(model, paths[:cfg.average_best]))
            averaged = tune_cider(model, tune_feats, tune_refs, vocab)
            chosen = "average" if averaged > scores[ranked[0]] else "single"
            log(f"average of epochs {[i + 1 for i in ranked[:cfg.average_best]]}: held-out CIDEr {averaged:.4f} "
                f"vs best single epoch {scores[ranked[0]]:.4f}: keeping the {chosen}")
            losses["averaged_tune_cider"] = averaged
            losses["averaged_epochs"] = [i + 1 for i in ranked[:cfg.average_best]] if chosen == "average" else []
            if chosen == "single":
                model.set_weights(best_weights)
        shutil.rmtree(epochs_dir, ignore_errors=True)
    seconds = time.perf_counter() - start
    save_checkpoint(model, vocab, cfg, out_dir)
    if "tune_cider" in losses:
        best_epoch = int(np.argmax(losses["tune_cider"])) + 1
    else:
        best_epoch = int(np.argmin(losses["val_loss"])) + 1
    summary = {
        "train_seconds": round(seconds, 1), "epochs_run": len(losses["loss"]), "best_epoch": best_epoch,
        "best_val_loss": float(min(losses["val_loss"])), "loss": [float(x) for x in losses["loss"]],
        "val_loss": [float(x) for x in losses["val_loss"]], "parameters": int(model.count_params()),
        "vocab_size": len(vocab), "train_images": len(train_names), "train_captions": n_train,
        "tune_images": len(tune_names), "peak_rss_mb": round(_peak_rss_mb()), "label_smoothing": cfg.label_smoothing,
        "selected_on": "tune_cider" if "tune_cider" in losses else "val_loss",
        **({"tune_cider": [float(x) for x in losses["tune_cider"]]} if "tune_cider" in losses else {}),
        **({"averaged_tune_cider": losses["averaged_tune_cider"], "averaged_epochs": losses["averaged_epochs"]}
           if "averaged_epochs" in losses else {}),
    }
    save_json(summary, out_dir / "training.json")
    plot_curve(summary, out_dir / "training_curve.png")
    log(f"trained in {seconds / 60:.1f} min; kept epoch {best_epoch} (by {summary['selected_on']}); "
        f"best dev loss {summary['best_val_loss']:.4f}")
    return summary


def _peak_rss_mb() -> float:
    """This process's peak resident memory so far (features, model, TensorFlow), in MB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def plot_curve(summary: dict, path: Path) -> None:
    """Train and dev loss per epoch (and held-out CIDEr when selection used it), kept epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, len(summary["loss"]) + 1)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(epochs, summary["loss"], "o-", label="train loss")
    ax.plot(epochs, summary["val_loss"], "s-", label="dev loss")
    averaged = summary.get("averaged_epochs") or []
    for i, epoch in enumerate(averaged or [summary["best_epoch"]]):
        label = (f"kept: average of epochs {averaged}" if averaged else f"kept: epoch {epoch}") if i == 0 else None
        ax.axvline(epoch, color="grey", ls="--", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("masked cross-entropy per word" + (" (label-smoothed)" if summary.get("label_smoothing") else ""))
    handles, labels = ax.get_legend_handles_labels()
    if "tune_cider" in summary:  # the selection metric, on its own scale
        right = ax.twinx()
        right.plot(epochs, summary["tune_cider"], "^-", color="tab:green", label="held-out greedy CIDEr")
        right.set_ylabel("CIDEr (held-out training images)")
        more_handles, more_labels = right.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels, fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
