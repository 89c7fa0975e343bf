"""Dataset readers for the three layouts, cleaning, splits and bad-input handling."""
from __future__ import annotations

import pytest

from captioner.pipeline.data import DataError, clean_caption, load_dataset


def test_clean_caption_keeps_articles_and_drops_punctuation():
    assert clean_caption("A dog's ball, in 2 parks!") == "a dogs ball in parks"
    assert clean_caption("An  old MAN -- sitting.") == "an old man sitting"
    assert clean_caption("...") == ""


def _flickr8k(root, make_image, lines, train=("a.jpg",), dev=("b.jpg",), images=("a.jpg", "b.jpg", "c.jpg")):
    for name in images:
        make_image(name, folder=root / "Images")
    (root / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    (root / "Flickr_8k.trainImages.txt").write_text("\n".join(train) + "\n")
    (root / "Flickr_8k.devImages.txt").write_text("\n".join(dev) + "\n")
    return root


def test_flickr8k_layout_with_malformed_lines_and_missing_images(tmp_path, make_image):
    root = _flickr8k(tmp_path, make_image, [
        "a.jpg#0\tA dog runs.", "a.jpg#1\tThe dog is running!",
        "b.jpg#0\tTwo children play", "this line has no tab", "c.jpg#0\tA cat",
        "missing.jpg#0\tNo such image", "missing.jpg#1\tStill none", "b.jpg#1\t",
    ])
    ds = load_dataset(root)
    assert ds.captions["a.jpg"] == ["a dog runs", "the dog is running"]
    assert ds.missing_images == 2
    assert ds.malformed_lines == 2  # the tab-less line and the empty caption
    assert ds.splits["train"] == ["a.jpg", "c.jpg"]  # images in no split join train
    assert ds.splits["dev"] == ["b.jpg"]
    assert any("malformed" in p and "lines 4, 8" in p for p in ds.problems)
    assert any("2 captions skipped" in p for p in ds.problems)


def test_kaggle_layout_csv_with_commas_in_captions(tmp_path, make_image):
    make_image("x.jpg", folder=tmp_path / "Images")
    make_image("y.jpg", folder=tmp_path / "Images")
    (tmp_path / "captions.txt").write_text(
        'image,caption\nx.jpg,"A man, a plan, a canal."\nx.jpg,A man walks\ny.jpg,A red bus\nz.jpg,gone\n')
    ds = load_dataset(tmp_path)
    assert ds.captions["x.jpg"] == ["a man a plan a canal", "a man walks"]
    assert ds.missing_images == 1
    assert set(ds.splits) == {"train", "dev", "test"}  # deterministic split by hash
    assert sorted(n for s in ds.splits.values() for n in s) == ["x.jpg", "y.jpg"]
    assert load_dataset(tmp_path).splits == ds.splits


def test_flickr30k_results_csv_with_pipes(tmp_path, make_image):
    make_image("1000092795.jpg", folder=tmp_path / "flickr30k_images")
    (tmp_path / "results.csv").write_text(
        "image_name| comment_number| comment\n"
        "1000092795.jpg| 0| Two young guys with shaggy hair .\n"
        "1000092795.jpg| 1| Two friends enjoy time spent together .\n"
        "1000092795.jpg| 2\n")
    ds = load_dataset(tmp_path)
    assert ds.captions["1000092795.jpg"] == ["two young guys with shaggy hair", "two friends enjoy time spent together"]
    assert ds.malformed_lines == 1


def test_flickr30k_token_file(tmp_path, make_image):
    make_image("1.jpg", folder=tmp_path / "flickr30k_images")
    (tmp_path / "results_20130124.token").write_text("1.jpg#0\tA woman sings .\n1.jpg#1\tSomeone on stage\n")
    assert load_dataset(tmp_path).captions == {"1.jpg": ["a woman sings", "someone on stage"]}


def test_clear_errors_for_unusable_data(tmp_path, make_image):
    with pytest.raises(DataError, match="data directory not found"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(DataError, match="no caption file"):
        load_dataset(tmp_path)
    (tmp_path / "Flickr8k.token.txt").write_text("a.jpg#0\tA dog\n")
    with pytest.raises(DataError, match="no images folder"):
        load_dataset(tmp_path)
    make_image("other.jpg", folder=tmp_path / "images")
    with pytest.raises(DataError, match="no usable captions"):
        load_dataset(tmp_path)


def test_dataset_name_comes_from_its_caption_file(tmp_path, make_image):
    root = _flickr8k(tmp_path / "8k", make_image, ["a.jpg#0\tA dog runs", "b.jpg#0\tA cat sits"])
    make_image("1.jpg", folder=tmp_path / "30k" / "flickr30k_images")
    (tmp_path / "30k" / "results.csv").write_text("image_name| comment_number| comment\n1.jpg| 0| A woman sings\n")
    eight, thirty = load_dataset(root), load_dataset(tmp_path / "30k")
    assert (eight.name, eight.lang, thirty.name) == ("Flickr8k", "en", "Flickr30k")
    facts = eight.facts(held_out=["a.jpg"])
    assert facts["name"] == "Flickr8k" and facts["lang"] == "en"
    assert facts["splits"]["train"] == {"images": 1, "captions": 1}  # a.jpg; c.jpg has no caption
    assert facts["held_out"] == {"images": 1, "captions": 1} and facts["images"] == 2


def test_data_folder_lookup_order_and_clear_error(tmp_path, make_image, monkeypatch):
    from captioner.pipeline import data

    given = _flickr8k(tmp_path / "given", make_image, ["a.jpg#0\tA dog", "b.jpg#0\tA cat"])
    env = _flickr8k(tmp_path / "env", make_image, ["a.jpg#0\tA bird", "b.jpg#0\tA fish"])
    sibling = _flickr8k(tmp_path / "shared" / "flickr8k", make_image, ["a.jpg#0\tA cow", "b.jpg#0\tA pig"])
    monkeypatch.setattr(data, "SIBLING_DATA", sibling)
    monkeypatch.setenv("CAPTIONER_DATA", str(env))
    assert load_dataset(given).captions["a.jpg"] == ["a dog"]  # --data first
    assert load_dataset().captions["a.jpg"] == ["a bird"]  # then CAPTIONER_DATA
    monkeypatch.delenv("CAPTIONER_DATA")
    assert load_dataset().captions["a.jpg"] == ["a cow"]  # then ../shared/flickr8k beside the project
    monkeypatch.setattr(data, "SIBLING_DATA", tmp_path / "nowhere")
    with pytest.raises(DataError, match="--data") as err:
        load_dataset()
    assert "CAPTIONER_DATA" in str(err.value)
    monkeypatch.setenv("CAPTIONER_DATA", str(tmp_path / "typo"))
    with pytest.raises(DataError, match="data directory not found.*CAPTIONER_DATA"):
        load_dataset()
