"""Augmentation (fixed per image and seed, mirrored captions, cached copies) and Word2Vec initialisation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioner.pipeline.augment import (Augmentation, apply_augmentation, augmentation_for, augmented_key,
                               mirror_caption)
from captioner.config import TrainConfig
from captioner.pipeline.data import CaptionDataset
from captioner.pipeline.train import AugmentedViews, encode_captions, make_dataset, train
from captioner.serving.vocab import Vocabulary


def test_augmentation_is_fixed_by_name_and_seed_and_stays_in_range():
    seen = [augmentation_for(f"{i}.jpg", 42) for i in range(200)]
    assert augmentation_for("7.jpg", 42) == seen[7]  # same copy on every run: the cache key holds
    assert augmentation_for("7.jpg", 43) != seen[7]
    assert 60 < sum(a.mirror for a in seen) < 140  # about half are mirrored
    for a in seen:
        left, top, right, bottom = a.crop
        assert 0 <= left < right <= 1 and 0 <= top < bottom <= 1
        assert 0.6 <= (right - left) * (bottom - top) <= 1.0
        assert 0.7 <= a.brightness <= 1.3
    assert len({augmented_key("abc", a) for a in seen}) == len({a.tag for a in seen})


def test_apply_augmentation_crops_mirrors_and_relights():
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:, :30] = (200, 100, 50)  # left half coloured, right half black
    img = Image.fromarray(pixels)
    mirrored = np.asarray(apply_augmentation(img, Augmentation(True, (0.0, 0.0, 1.0, 1.0), 1.0)))
    assert mirrored.shape == (40, 60, 3) and mirrored[:, 40:].min() > 0 and mirrored[:, :20].max() == 0
    cropped = apply_augmentation(img, Augmentation(False, (0.0, 0.25, 0.5, 0.75), 0.5))
    assert cropped.size == (30, 20)
    assert np.asarray(cropped)[..., 0].mean() == pytest.approx(100, abs=1)  # half as bright


def test_mirror_caption_swaps_sides_only():
    assert mirror_caption("a dog on the left of a man turning right") == "a dog on the right of a man turning left"
    assert mirror_caption("leftover bright lights") == "leftover bright lights"


def test_mirrored_copies_swap_left_and_right_in_the_training_targets():
    """With augment=1 every caption is shown with the copy; mirrored images get left/right swapped,
    the others keep their words."""
    vocab = Vocabulary.fit(["a dog on the left", "a cat on the right"], min_count=1)
    names = [f"{i}.jpg" for i in range(12)]
    mirrored = {n for n in names if augmentation_for(n, 42).mirror}
    assert mirrored and len(mirrored) < len(names)
    dataset = CaptionDataset(Path("."), {n: ["a dog on the left"] for n in names}, {})
    feats = np.zeros((len(names), 2048), np.float32)
    copies = {n: np.full(2048, i + 1, np.float32) for i, n in enumerate(names)}
    idx, seqs = encode_captions(dataset, names, vocab, 10)
    views = AugmentedViews.build(names, feats, copies, vocab, 42, probability=1.0)
    ds = make_dataset(feats, idx, seqs, 4, shuffle=False, seed=0, bucket=False, augmented=views)
    left, right = vocab.index["left"], vocab.index["right"]
    checked = 0
    for (rows, inputs), targets, _ in ds:
        for row, words in zip(rows.numpy(), targets.numpy()):
            image = names[int(row[0]) - 1]  # the copy's features say which image it is
            expected = right if image in mirrored else left
            assert expected in words and ({left, right} - {expected}).isdisjoint(words)
            checked += 1
    assert checked == len(names)


def test_word2vec_initialised_training_starts_from_the_learned_vectors(tmp_path):
    pytest.importorskip("gensim")
    from captioner.pipeline.embeddings import word2vec_matrix

    captions = ["a dog runs on the grass", "a cat sits on the sofa", "the dog sits on the grass"] * 20
    vocab = Vocabulary.fit(captions, min_count=1)
    table, coverage = word2vec_matrix(captions, vocab, dim=8, seed=1, epochs=5)
    assert table.shape == (len(vocab), 8) and coverage == 1.0
    assert not table[vocab.pad_id].any() and table[vocab.index["dog"]].any()
    again, _ = word2vec_matrix(captions, vocab, dim=8, seed=1, epochs=5)
    np.testing.assert_array_equal(table, again)  # one worker + seed: reproducible

    rng = np.random.default_rng(0)
    names = [f"{i}.jpg" for i in range(40)]
    dataset = CaptionDataset(Path("."), {n: [captions[i % 3]] for i, n in enumerate(names)},
                             {"train": names[:34], "dev": names[34:]})
    features = {n: rng.normal(size=2048).astype(np.float32) for n in names}
    copies = {n: rng.normal(size=2048).astype(np.float32) for n in names}
    cfg = TrainConfig(units=8, embedding_dim=8, epochs=1, batch_size=8, min_word_count=1, tune_images=3,
                      embedding_init="word2vec", augment=0.5)
    logs: list[str] = []
    train(dataset, features, cfg, tmp_path / "ckpt", log=logs.append, augmented_by_name=copies)
    assert any("Word2Vec" in line and "100%" in line for line in logs)
    with pytest.raises(ValueError, match="no augmented features"):
        train(dataset, features, cfg, tmp_path / "other", log=logs.append)


@pytest.mark.parametrize("field, value, message", [("embedding_init", "glove", "embedding_init"),
                                                    ("augment", 1.5, "probability"),
                                                    ("decoder", "attention", "merge decoder")])
def test_bad_augment_and_embedding_settings_are_refused(field, value, message):
    cfg = TrainConfig(augment=0.5) if field == "decoder" else TrainConfig()
    setattr(cfg, field, value)
    with pytest.raises(ValueError, match=message):
        cfg.validate()

