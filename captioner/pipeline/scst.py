"""Self-critical sequence training (Rennie et al. 2017): fine-tune a trained decoder on CIDEr-D.

For each image the model samples a few captions; a sample's advantage is its CIDEr-D minus a
baseline, so only captions better than the baseline are reinforced. The baseline is the greedy
caption's CIDEr-D (Rennie et al.), or with ``baseline="samples"`` the mean of the image's other
samples (Luo 2020), which keeps advantages centred when most samples are worse than greedy (as with
models trained with label smoothing, whose samples stray). The loss is
``-(reward - baseline) * log p(sampled caption)``, computed with the full-sequence model on the
sampled words (the ``PolicyGradient`` objective of ``engine.py``, in the same epoch loop and
selector as teacher forcing). Everything runs on cached features, and the kept
weights are those with the best greedy CIDEr on the held-out training images (never dev).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..config import DecodeConfig
from ..serving.cider import CiderD  # the reward: CIDEr-D with training-reference document frequencies
from ..serving.decoding import StepModel, decode_with, decoding_stack, extend_captions
from .engine import GradientSteps, PolicyGradient, Selector, held_out_cider, run_epochs

# The greedy baseline's decoding (and the sampled captions' length limit): up to 20 words, nothing
# blocked, <unk> allowed, as the reward compares the model's own choices.
SCST_DECODE = DecodeConfig(beam_width=1, max_words=20, length_alpha=0.0, block_ngram=0, allow_unk=True)


def sample_decode(model: StepModel, features: np.ndarray, start_id: int, end_id: int, max_words: int,
                  rng: np.random.Generator) -> list[list[int]]:
    """One caption per row of ``features``, each word drawn from the model's distribution
    (Gumbel-max: argmax of log-probs plus Gumbel noise). Returns word ids without start/end."""
    batch = len(features)
    state = model.initial_state(features)
    words = np.full(batch, start_id, np.int32)
    ids: list[list[int]] = [[] for _ in range(batch)]
    done = np.zeros(batch, bool)
    for _ in range(max_words):
        log_probs, state = model.step(words, state)  # (B, V)
        words = (log_probs + rng.gumbel(size=log_probs.shape)).argmax(axis=1).astype(np.int32)
        if extend_captions(ids, done, words, end_id):
            break
    return ids


def finetune(model, vocab, stepper, train_features: np.ndarray, train_refs: list[list[str]],
             tune_features: np.ndarray, tune_refs: list[list[str]], epochs: int = 5, batch_images: int = 32,
             samples: int = 5, learning_rate: float = 2e-5, patience: int = 2, seed: int = 42,
             baseline: str = "greedy", decode: DecodeConfig = SCST_DECODE, log=print) -> dict:
    """SCST on ``model`` in place, through the training engine: the ``PolicyGradient`` objective, and a
    selector on held-out greedy CIDEr that counts the starting weights as epoch 0 (kept if no epoch
    beats them) and stops after ``patience`` epochs without improvement.

    ``stepper``: the step interface over ``model`` (``decoders.make_stepper``); ``decode``: the greedy
    baseline's decoding, and the sampled captions' length limit and suppressed words. Returns a summary.
    """
    import keras
    import tensorflow as tf

    if baseline not in ("greedy", "samples"):
        raise ValueError(f"baseline must be 'greedy' or 'samples', not {baseline!r}")
    if baseline == "samples" and samples < 2:
        raise ValueError("the leave-one-out baseline needs at least 2 samples per image")
    rng = np.random.default_rng(seed)
    cider = CiderD(train_refs)
    prepared = [None] * len(train_refs)
    optimizer = keras.optimizers.Adam(learning_rate)  # clipped by GradientSteps, as in teacher forcing
    optimizer.build(model.trainable_variables)
    steps = GradientSteps(model, optimizer, PolicyGradient())
    sampler = decoding_stack(stepper, vocab, decode)  # never samples padding or <start>

    def advantages(chunk, feats, sampled) -> tuple[np.ndarray, list[float]]:
        """(advantage per sampled caption (N,), every sample's reward) for the images ``chunk``."""
        if baseline == "greedy":
            greedy = [vocab.decode(hyps[0].ids) for hyps in decode_with(stepper, feats, vocab, decode)]
        advantage, rewards = np.zeros(len(sampled), np.float32), []
        for j, image in enumerate(chunk):
            if prepared[image] is None:
                prepared[image] = cider.prepare(train_refs[image])
            scores = np.array([cider.score(vocab.decode(sampled[j * samples + k]), prepared[image])
                               for k in range(samples)])
            if baseline == "greedy":
                advantage[j * samples:(j + 1) * samples] = scores - cider.score(greedy[j], prepared[image])
            else:  # leave-one-out mean of the other samples
                advantage[j * samples:(j + 1) * samples] = scores - (scores.sum() - scores) / (samples - 1)
            rewards.extend(scores.tolist())
        return advantage, rewards

    def train_epoch(epoch: int) -> dict:
        rewards = []
        order = rng.permutation(len(train_features))
        for i in range(0, len(order), batch_images):
            chunk = order[i:i + batch_images]
            feats = np.asarray(train_features[chunk], np.float32)  # (b, ...)
            repeated = np.repeat(feats, samples, axis=0)  # (b * samples, ...)
            sampled = sample_decode(sampler, repeated, vocab.start_id, vocab.end_id, decode.max_words, rng)
            advantage, chunk_rewards = advantages(chunk, feats, sampled)
            rewards += chunk_rewards
            # teacher-forced inputs/targets of the sampled captions, padded; <end> is scored too
            seqs = [[vocab.start_id, *ids, vocab.end_id] for ids in sampled]
            width = max(map(len, seqs))
            padded = np.array([s + [0] * (width - len(s)) for s in seqs], np.int32)  # (N, width)
            mask = (padded[:, 1:] != 0).astype(np.float32)  # (N, width - 1)
            steps.step(((tf.constant(repeated), tf.constant(padded[:, :-1])), tf.constant(padded[:, 1:]),
                        tf.constant(mask), tf.constant(advantage)))
        return {"mean_reward": float(np.mean(rewards))}

    def score_epoch() -> dict:
        return {"tune_cider": held_out_cider(stepper, tune_features, tune_refs, vocab)}

    selector = Selector("tune_cider", "max", patience=patience, include_start=True)
    history, kept = run_epochs(model, train_epoch, score_epoch, selector, epochs, log=lambda m: log(f"SCST {m}"))
    history["kept_epoch"] = kept["best_epoch"]  # 0 = the starting weights
    history["best_tune_cider"] = kept["best_score"]
    return history


def finetune_folder(model_dir: Path, out_dir: Path, dataset, encoder, epochs: int = 5,
                    learning_rate: float = 2e-5, baseline: str = "greedy", log=print) -> dict:
    """SCST on a trained checkpoint folder; writes a new folder (same vocabulary and config)."""
    import shutil

    from ..serving import model_folder as mf
    from ..serving.decoders import make_stepper
    from .features import extract_features

    checkpoint = mf.load_checkpoint(model_dir)
    if checkpoint.is_ensemble:
        raise ValueError(f"{model_dir} is an ensemble; fine-tune one of its members instead")
    tune_names = [n for n in mf.read_tune_images(model_dir) if n in dataset.captions]
    if not tune_names:
        raise ValueError(f"{Path(model_dir) / mf.TUNE_FILE}: no held-out training images to select on; "
                         "train with --tune-images")
    held_out = set(tune_names)
    train_names = [n for n in dataset.split_names("train") if n not in held_out]
    extracted = extract_features(encoder, [dataset.image_path(n) for n in train_names + tune_names],
                                 kind=checkpoint.family.feature_kind)
    index = {n: i for i, n in enumerate(extracted.names)}
    train_names = [n for n in train_names if n in index]
    tune_names = [n for n in tune_names if n in index]
    pick = lambda names: extracted.features[[index[n] for n in names]]  # noqa: E731
    model = checkpoint.model
    start = time.perf_counter()
    history = finetune(model, checkpoint.vocab, make_stepper(model, checkpoint.config.decoder), pick(train_names),
                       [dataset.captions[n] for n in train_names], pick(tune_names),
                       [dataset.captions[n] for n in tune_names], epochs=epochs, learning_rate=learning_rate,
                       baseline=baseline, log=log)
    history["seconds"] = round(time.perf_counter() - start, 1)
    out_dir = Path(out_dir)
    mf.save_checkpoint(model, checkpoint.vocab, checkpoint.config, out_dir)
    for name in (mf.TUNE_FILE, mf.TRAINING_FILE, mf.CURVE_FILE):
        if (Path(model_dir) / name).is_file() and Path(model_dir) != out_dir:
            shutil.copy(Path(model_dir) / name, out_dir / name)
    mf.write_scst(out_dir, {**history, "started_from": str(model_dir), "learning_rate": learning_rate,
                            "baseline": baseline})
    return history
