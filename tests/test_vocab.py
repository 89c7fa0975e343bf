"""The vocabulary: train-only fitting, thresholds, JSON round trip, encode/decode."""
from __future__ import annotations

import json

import pytest

from captioner.pipeline.data import load_dataset
from captioner.serving.vocab import SPECIAL_TOKENS, Vocabulary, VocabError


def test_fit_threshold_and_order():
    vocab = Vocabulary.fit(["a dog runs", "a dog sits", "a cat"], min_count=2)
    assert vocab.words == [*SPECIAL_TOKENS, "a", "dog"]
    assert vocab.encode("a cat") == [vocab.start_id, 4, vocab.unk_id, vocab.end_id]


def test_encode_decode_round_trip_and_truncation():
    vocab = Vocabulary.fit(["the quick brown fox jumps"], min_count=1)
    ids = vocab.encode("the quick brown fox jumps")
    assert vocab.decode(ids) == "the quick brown fox jumps"
    assert vocab.decode(vocab.encode("the quick brown fox jumps", max_words=2)) == "the quick"
    assert vocab.decode([vocab.start_id, 5, vocab.end_id, 6, 7]) == vocab.words[5]  # stops at <end>


def test_json_round_trip(tmp_path):
    vocab = Vocabulary.fit(["un café à paris", "un café"], min_count=1)
    vocab.save(tmp_path / "vocab.json")
    assert json.loads((tmp_path / "vocab.json").read_text())["format"] == "captioner-vocab/1"
    assert Vocabulary.load(tmp_path / "vocab.json") == vocab


def test_load_rejects_bad_files(tmp_path):
    with pytest.raises(VocabError, match="not found"):
        Vocabulary.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(VocabError, match="not a readable JSON"):
        Vocabulary.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"word_index": {"a": 1}}')
    with pytest.raises(VocabError, match="not a captioner vocabulary"):
        Vocabulary.load(tmp_path / "other.json")


def test_fit_on_training_captions_only(tmp_path, make_image):
    """A word that occurs only in dev captions must not enter the vocabulary."""
    for name in ("t.jpg", "d.jpg"):
        make_image(name, folder=tmp_path / "images")
    (tmp_path / "Flickr8k.token.txt").write_text("t.jpg#0\tA dog\nt.jpg#1\tA dog\nd.jpg#0\tA zebra\nd.jpg#1\tA zebra\n")
    (tmp_path / "Flickr_8k.trainImages.txt").write_text("t.jpg\n")
    (tmp_path / "Flickr_8k.devImages.txt").write_text("d.jpg\n")
    ds = load_dataset(tmp_path)
    from captioner.pipeline.train import encode_captions

    vocab = Vocabulary.fit((c for n in ds.splits["train"] for c in ds.captions[n]), min_count=1)
    assert "dog" in vocab.index and "zebra" not in vocab.index
    _, seqs = encode_captions(ds, ["d.jpg"], vocab, max_words=4)
    assert seqs.shape == (2, 6) and seqs[0][2] == vocab.unk_id


def test_hold_out_is_seeded_disjoint_and_capped():
    from captioner.pipeline.train import hold_out

    names = [f"{i}.jpg" for i in range(100)]
    kept, held = hold_out(names, 5, seed=1)
    assert len(held) == 5 and not set(kept) & set(held) and sorted(kept + held) == sorted(names)
    assert hold_out(names, 5, seed=1) == (kept, held)
    assert len(hold_out(names, 300, seed=1)[1]) == 10  # never more than a tenth
    assert hold_out(names, 0, seed=1) == (names, [])


def test_hold_out_within_a_pool_takes_only_its_images():
    from captioner.pipeline.train import hold_out

    names = [f"{i}.jpg" for i in range(100)]
    pool = {f"{i}.jpg" for i in range(0, 100, 20)} | {"elsewhere.jpg"}  # 5 of names, 1 not among them
    kept, held = hold_out(names, 8, seed=3, within=pool)
    assert set(held) == pool - {"elsewhere.jpg"}  # fewer than asked: only the pool's images
    assert not set(kept) & set(held) and sorted(kept + held) == sorted(names)
    assert set(hold_out(names, 3, seed=3, within=pool)[1]) < pool


def test_a_decoder_started_from_another_holds_out_only_what_that_one_held_out(tmp_path):
    from captioner.config import TrainConfig
    from captioner.pipeline.train import split_training_images
    from captioner.serving.model_folder import write_tune_images

    names = [f"{i}.jpg" for i in range(200)]
    source = tmp_path / "english"
    source.mkdir()
    write_tune_images(source, [f"{i}.jpg" for i in range(150, 160)] + ["not-in-this-language.jpg"])
    kept, held = split_training_images(names, TrainConfig(init_from=str(source), tune_images=300))
    assert held == [f"{i}.jpg" for i in range(150, 160)]
    assert len(kept) == 190
    # from scratch: any training image may be held out
    assert len(split_training_images(names, TrainConfig(tune_images=15))[1]) == 15
    (source / "tune_images.txt").unlink()
    with pytest.raises(ValueError, match="no held-out images"):
        split_training_images(names, TrainConfig(init_from=str(source)))
    with pytest.raises(ValueError, match="no such model folder"):
        split_training_images(names, TrainConfig(init_from=str(tmp_path / "missing")))
