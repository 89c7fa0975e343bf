"""Batch captioning of folders: recursion, JSONL/CSV output, per-image errors, resuming."""
from __future__ import annotations

import csv
import json

import pytest

from captioner import Caption, CaptionResult, DecodeConfig
from captioner.serving.batch import CSV_FIELDS, caption_to_file, done_images, iter_images
from captioner.serving.images import ImageError, load_image


class FakeCaptioner:
    """Reads each image for real (so bad files fail as they would) and 'captions' it by its size; a picture
    darker than 40 everywhere is called "dark" and "blurry" (the real checks: tests/test_quality.py)."""

    def __init__(self):
        self.calls: list[int] = []
        self.decodes: list[DecodeConfig | None] = []  # the decoding settings each call received

    def caption(self, images, decode=None, names=None, **keep):
        self.calls.append(len(images))
        self.decodes.append(decode)
        results = []
        for path in images:
            try:
                img = load_image(path)
                problems = ["blurry", "dark"] if max(img.convert("L").getextrema()) < 40 else []
                results.append(CaptionResult(str(path), [Caption(f"a picture {img.width} wide", -1.0, -0.5)],
                                             photo_problems=problems))
            except ImageError as err:
                results.append(CaptionResult(str(path), error=str(err)))
        return results


@pytest.fixture
def photo_tree(tmp_path, make_image):
    root = tmp_path / "photos"
    make_image("b.jpg", size=(20, 10), folder=root)
    make_image("a.png", size=(30, 10), folder=root / "2024" / "summer")
    make_image("c.JPG", size=(40, 10), folder=root / "2023")
    (root / "notes.txt").write_text("not an image, and not picked up")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return root


def test_walks_folders_recursively_in_order(photo_tree):
    found = [p.relative_to(photo_tree).as_posix() for p in iter_images([photo_tree])]
    assert found == ["b.jpg", "broken.jpg", "2023/c.JPG", "2024/summer/a.png"]


def test_jsonl_output_records_errors_and_resumes(photo_tree, tmp_path):
    out = tmp_path / "captions.jsonl"
    fake = FakeCaptioner()
    summary = caption_to_file(fake, [photo_tree], out, batch_size=2, progress=False)
    assert (summary.captioned, summary.failed, summary.skipped) == (3, 1, 0)
    assert fake.calls == [2, 2]  # batched
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {line["image"].split("/")[-1]: line.get("caption") for line in lines}["c.JPG"] == "A picture 40 wide."
    assert [line for line in lines if "error" in line][0]["image"].endswith("broken.jpg")
    # an interrupted run leaves half a line: a rerun redoes only what is missing
    out.write_text("\n".join(out.read_text().splitlines()[:2]) + '\n{"image": "half')
    again = caption_to_file(FakeCaptioner(), [photo_tree], out, progress=False)
    assert (again.skipped, again.captioned + again.failed) == (2, 2)
    assert len(done_images(out)) == 4


def test_csv_output(photo_tree, tmp_path):
    out = tmp_path / "captions.csv"
    caption_to_file(FakeCaptioner(), [photo_tree], out, progress=False)
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4 and set(rows[0]) == set(CSV_FIELDS)
    assert caption_to_file(FakeCaptioner(), [photo_tree], out, progress=False).skipped == 4


def test_rejects_unknown_output_format(photo_tree, tmp_path):
    with pytest.raises(ValueError, match="must end in .jsonl or .csv"):
        caption_to_file(FakeCaptioner(), [photo_tree], tmp_path / "out.txt", progress=False)


def test_every_decoding_setting_reaches_the_captioner(photo_tree, tmp_path):
    """The whole DecodeConfig is handed to Captioner.caption, not a subset of its fields."""
    captioner = FakeCaptioner()
    decode = DecodeConfig(beam_width=4, n_best=2, max_words=12, length_alpha=1.3, block_ngram=0, allow_unk=True)
    caption_to_file(captioner, [photo_tree], tmp_path / "out.jsonl", decode, batch_size=2, progress=False)
    assert captioner.decodes and all(d == decode for d in captioner.decodes)


def test_photo_problems_in_jsonl_and_csv(tmp_path, make_image):
    """The list of problems is a JSON list, and in CSV one field joined by ";"; the caption starts with the advice."""
    from captioner.serving.languages import language

    root = tmp_path / "shots"
    make_image("dark.jpg", size=(20, 10), color=(5, 5, 5), folder=root)
    make_image("fine.jpg", size=(20, 10), color=(200, 30, 30), folder=root)
    jsonl, table = tmp_path / "out.jsonl", tmp_path / "out.csv"
    caption_to_file(FakeCaptioner(), [root], jsonl, progress=False)
    caption_to_file(FakeCaptioner(), [root], table, progress=False)
    records = {json.loads(line)["image"].split("/")[-1]: json.loads(line) for line in jsonl.read_text().splitlines()}
    assert records["dark.jpg"]["photo_problems"] == ["blurry", "dark"] and records["fine.jpg"]["photo_problems"] == []
    assert records["dark.jpg"]["caption"].startswith(language("en").photo_advice["blurry"])
    rows = {row["image"].split("/")[-1]: row for row in csv.DictReader(table.open())}
    assert rows["dark.jpg"]["photo_problems"] == "blurry;dark" and rows["fine.jpg"]["photo_problems"] == ""
    assert rows["dark.jpg"]["caption"] == records["dark.jpg"]["caption"]
