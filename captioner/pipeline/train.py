"""Training a decoder on cached image features with full-sequence teacher forcing.

One sample per caption (not one per prefix): the decoder reads ``<start> w1 … wn`` and is scored on
``w1 … wn <end>`` at every position at once, with padding masked out of the loss. The epochs run
through ``engine.run_epochs`` (one loop for one process and for many workers) with the
``CrossEntropy`` objective and a ``Selector`` built from the config.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import TrainConfig
from ..serving import model_folder as mf
from ..serving.decoders import build_model, make_stepper
from ..serving.model_folder import save_checkpoint
from ..serving.vocab import Vocabulary
from .data import CaptionDataset
from .distributed import cluster_spec
from .engine import Batches, CrossEntropy, GradientSteps, Selector, held_out_cider, run_epochs, token_losses
from .modelcard import run_facts


def hold_out(names: list[str], count: int, seed: int,
             within: set[str] | None = None) -> tuple[list[str], list[str]]:
    """Split ``count`` images (a seeded random choice, at most a tenth of them) off ``names``:
    (kept, held out). ``within``: choose only among these images (fewer are held out when fewer of
    them are in ``names``)."""
    pool = sorted(names) if within is None else sorted(set(names) & within)
    count = min(count, len(names) // 10, len(pool))
    if count <= 0:
        return list(names), []
    chosen = set(np.random.default_rng(seed).choice(pool, size=count, replace=False).tolist())
    return [n for n in names if n not in chosen], [n for n in names if n in chosen]


def split_training_images(names: list[str], cfg: TrainConfig) -> tuple[list[str], list[str]]:
    """(training images, held-out images) for ``cfg``. A decoder that starts from another folder's layers
    (``cfg.init_from``) holds out only images that folder held out too: its image and RNN layers were
    trained on the rest, so those would score as if seen, inflating the held-out figures that choose
    the epoch and decoding and that calibrate confidence."""
    within = None
    if cfg.init_from and cfg.tune_images > 0:
        if not Path(cfg.init_from).is_dir():
            raise ValueError(f"--init-from {cfg.init_from}: no such model folder")
        within = set(mf.read_tune_images(Path(cfg.init_from)))
        if not within:
            raise ValueError(f"{cfg.init_from} lists no held-out images (tune_images.txt), so every training image "
                             "may have shaped its layers; start from a folder trained with --tune-images")
    return hold_out(names, cfg.tune_images, cfg.seed, within)


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

    ``features`` (N_images, ...) stays a NumPy array (a spatial grid cache can exceed TensorFlow's
    2 GB limit for constants); each batch gathers its rows from it.

    Captions are grouped into batches of similar length and padded only to their batch's longest, so
    the RNN does not spend most of its steps on padding (Flickr8k captions average 12 words, the
    longest 30+), so an epoch does far less work than padding everything to the maximum.
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


def make_loss(label_smoothing: float):
    """A Keras loss with the engine's per-word cross-entropy (``engine.token_losses``), averaged over the
    real (weighted) words: for models compiled and fitted with Keras outside ``train``."""
    import keras

    class MaskedCrossEntropy(keras.losses.Loss):
        def call(self, y_true, y_pred):  # (B, T) ids, (B, T, V) logits -> (B, T)
            return token_losses(y_true, y_pred, label_smoothing)

    return MaskedCrossEntropy(reduction="mean_with_sample_weight", name="masked_cross_entropy")


def selector_for(cfg: TrainConfig, held_out: bool) -> Selector:
    """The selector ``cfg`` asks for: held-out greedy CIDEr with checkpoint averaging when there are
    held-out images and ``select_on`` is "tune_cider", else dev loss; patience and LR halving from ``cfg``."""
    common = dict(patience=cfg.patience, lr_patience=cfg.lr_patience, lr_factor=0.5, min_lr=1e-5)
    if cfg.select_on == "tune_cider" and held_out:
        return Selector("tune_cider", "max", average_best=cfg.average_best, **common)
    return Selector("val_loss", "min", **common)


def train(dataset: CaptionDataset, features_by_name: dict[str, np.ndarray], cfg: TrainConfig, out_dir: Path,
          log=print, strategy=None, augmented_by_name: dict[str, np.ndarray] | None = None, *,
          bucket: bool | None = None) -> dict:
    """Fit a decoder; keep the epoch with the best ``cfg.select_on`` (greedy CIDEr on the held-out
    training images, or dev loss), or the average of the best few epochs when that scores higher on
    the held-out images; write the checkpoint folder.

    ``strategy``: a ``tf.distribute`` strategy (see ``distributed.py``); ``cfg.batch_size`` is then the
    global batch, split across replicas. One process and many workers run the same loop
    (``engine.run_epochs``) with the same objective and selector. ``bucket``: length-bucketed batches
    (default: with one worker only; several workers need fixed shapes, and then each epoch is a fixed
    number of steps over repeating data). ``augmented_by_name``: features of the training images'
    augmented copies (used when ``cfg.augment`` > 0). Returns the training summary (also saved as
    ``training.json``).
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
    train_names, tune_names = split_training_images(train_names, cfg)
    mf.write_tune_images(out_dir, tune_names)
    if not train_names or not dev_names:
        raise ValueError(f"need features for train and dev images (have {len(train_names)} / {len(dev_names)})")
    vocab = Vocabulary.fit((c for n in train_names for c in dataset.captions[n]), cfg.min_word_count)
    log(f"vocabulary: {len(vocab)} words (seen >= {cfg.min_word_count} times in {len(train_names)} training images)")

    _, n_workers = cluster_spec()
    bucket = n_workers == 1 if bucket is None else bucket
    if bucket and n_workers > 1:
        raise ValueError("several workers need fixed-shape batches (bucket=False): each must run the same steps")
    if cfg.augment and not augmented_by_name:
        raise ValueError("cfg.augment is set but no augmented features were given")

    def batches(names, shuffle, augment=False) -> tuple[Batches, int]:
        feats = np.stack([features_by_name[n] for n in names])
        idx, seqs = encode_captions(dataset, names, vocab, cfg.max_caption_words)
        views = (AugmentedViews.build(names, feats, augmented_by_name, vocab, cfg.seed, cfg.augment)
                 if augment and cfg.augment else None)
        ds = make_dataset(feats, idx, seqs, cfg.batch_size, shuffle, cfg.seed, bucket=bucket, augmented=views)
        if bucket:
            return Batches(ds), len(seqs)
        # fixed shapes: the data repeats and an epoch is every full global batch once (drop_remainder)
        if len(seqs) < cfg.batch_size:
            raise ValueError(f"{len(seqs)} captions are fewer than one batch of {cfg.batch_size}")
        return Batches(ds.repeat(), len(seqs) // cfg.batch_size), len(seqs)

    train_batches, n_train = batches(train_names, True, augment=True)
    dev_batches, n_dev = batches(dev_names, False)
    log(f"captions: {n_train} train, {n_dev} dev; {strategy.num_replicas_in_sync} replica(s), {n_workers} worker(s)")
    with strategy.scope():
        model = build_model(len(vocab), cfg)
    steps = teacher_forcing_steps(model, cfg, strategy)
    if cfg.embedding_init == "word2vec":
        from .embeddings import word2vec_matrix

        table, coverage = word2vec_matrix((c for n in train_names for c in dataset.captions[n]), vocab,
                                          cfg.embedding_dim, cfg.seed)
        model.get_layer("embedding").embeddings.assign(table)
        log(f"embedding initialised from Word2Vec on the training captions ({coverage:.0%} of words)")
    if cfg.init_from:
        copied = init_from_folder(model, Path(cfg.init_from))
        log(f"started from {cfg.init_from}: layers {', '.join(copied) or 'none'} copied (same name and shape)")
    log(f"decoder: {model.count_params():,} parameters")

    selector = selector_for(cfg, bool(tune_names))
    use_tune = selector.metric == "tune_cider"
    score_held_out = None  # () -> greedy CIDEr of the model as it stands on the held-out images
    if use_tune:
        stepper = make_stepper(model, cfg.decoder)  # reads the model's variables: always the current weights
        tune_feats = np.stack([features_by_name[n] for n in tune_names])  # (N_tune, ...)
        tune_refs = [dataset.captions[n] for n in tune_names]
        score_held_out = functools.partial(held_out_cider, stepper, tune_feats, tune_refs, vocab)

    def score_epoch() -> dict:
        scores = {"val_loss": steps.evaluate(dev_batches)}
        if score_held_out is not None:
            scores["tune_cider"] = score_held_out()
        return scores

    start = time.perf_counter()
    history, kept = run_epochs(model, lambda epoch: {"loss": steps.train_epoch(train_batches)}, score_epoch,
                               selector, cfg.epochs, steps.optimizer, score_held_out, log)
    seconds = time.perf_counter() - start
    save_checkpoint(model, vocab, cfg, out_dir)
    if dataset.truecase:  # only the words the decoder can say
        mf.write_truecase(out_dir, {w: f for w, f in sorted(dataset.truecase.items()) if w in vocab.index})
    summary = {
        "train_seconds": round(seconds, 1), "epochs_run": len(history["loss"]), "best_epoch": kept["best_epoch"],
        "best_val_loss": float(min(history["val_loss"])), "loss": [float(x) for x in history["loss"]],
        "val_loss": [float(x) for x in history["val_loss"]], "parameters": int(model.count_params()),
        "vocab_size": len(vocab), "train_images": len(train_names), "train_captions": n_train,
        "tune_images": len(tune_names), "peak_rss_mb": round(_peak_rss_mb()), "label_smoothing": cfg.label_smoothing,
        "selected_on": selector.metric,
        **({"tune_cider": [float(x) for x in history["tune_cider"]]} if use_tune else {}),
        **({"averaged_tune_cider": kept["averaged_score"], "averaged_epochs": kept["averaged_epochs"]}
           if "averaged_epochs" in kept else {}),
        **run_facts(dataset, tune_names),  # data and machine, for the model card
    }
    mf.write_training(out_dir, summary)
    write_history(history, out_dir / mf.HISTORY_FILE)
    plot_curve(summary, out_dir / mf.CURVE_FILE)
    log(f"trained in {seconds / 60:.1f} min; kept epoch {summary['best_epoch']} (by {summary['selected_on']}); "
        f"best dev loss {summary['best_val_loss']:.4f}")
    return summary


def init_from_folder(model, folder: Path) -> list[str]:
    """Copy into ``model`` the weights of every layer that ``folder``'s decoder has with the same name and
    weight shapes (another language's decoder shares the image and RNN layers, not the vocabulary's);
    -> the names of the layers copied."""
    source = mf.load_checkpoint(folder)
    if source.is_ensemble:
        source = source.members[0]
    theirs = {layer.name: layer for layer in source.model.layers}
    copied = []
    for layer in model.layers:
        other = theirs.get(layer.name)
        if other is None or not layer.weights:
            continue
        if [tuple(w.shape) for w in layer.weights] == [tuple(w.shape) for w in other.weights]:
            layer.set_weights(other.get_weights())
            copied.append(layer.name)
    return copied


def write_history(history: dict[str, list], path: Path) -> None:
    """One row per trained epoch: epoch, then each figure of ``history`` (loss, val_loss, …)."""
    import csv

    names = sorted(history)
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["epoch", *names])
        for i in range(max(len(v) for v in history.values())):
            writer.writerow([i + 1, *(history[n][i] if i < len(history[n]) else "" for n in names)])


def _peak_rss_mb() -> float:
    """This process's peak resident memory so far (features, model, TensorFlow), in MB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def teacher_forcing_steps(model, cfg: TrainConfig, strategy=None) -> GradientSteps:
    """The optimizer and compiled cross-entropy steps ``train`` takes for ``cfg`` (the benches time these).

    Adam at ``cfg.learning_rate``; clipping happens in ``GradientSteps``, after the replicas' gradients
    are summed."""
    import keras
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        optimizer = keras.optimizers.Adam(cfg.learning_rate)
        optimizer.build(model.trainable_variables)
    return GradientSteps(model, optimizer, CrossEntropy(cfg.label_smoothing), strategy)


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
