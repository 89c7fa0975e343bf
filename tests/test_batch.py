"""Batch captioning of folders: recursion, JSONL/CSV output, per-image errors, resuming."""
from __future__ import annotations

import csv
import json

import pytest

from captioner import Caption, CaptionResult, DecodeConfig
from captioner.serving.batch import CSV_FIELDS, caption_to_file, done_images, iter_images, result_record
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


def test_records_hold_exactly_their_fields_in_order():
    """What `caption --json`, .jsonl files and the API write: keys present or absent by what is known."""
    from pathlib import Path

    from captioner.serving.confidence import Assessment

    plain = result_record("dog.jpg", CaptionResult("dog.jpg", [Caption("a dog runs", -2.0, -0.512345)]))
    assert list(plain.items()) == [("image", "dog.jpg"), ("caption", "A dog runs."), ("lang", "en"),
                                   ("photo_problems", []), ("model_caption", "a dog runs"), ("score", -0.5123),
                                   ("read_text", None), ("kind", "photo")]
    two = [Caption("a dog runs", -2.0, -0.512345), Caption("a dog", -2.4, -0.9)]
    sure = CaptionResult("dog.jpg", two, assessment=Assessment(0.81234, "medium", True, None))
    record = result_record(Path("photos/dog.jpg"), sure)
    assert list(record) == ["image", "caption", "lang", "photo_problems", "confidence", "band", "in_domain",
                            "reason", "model_caption", "score", "read_text", "kind", "alternatives"]
    assert (record["image"], record["caption"], record["confidence"], record["reason"]) == (
        str(Path("photos/dog.jpg")), sure.sentence, 0.812, None)
    assert record["alternatives"] == [{"caption": "a dog runs", "score": -0.5123}, {"caption": "a dog", "score": -0.9}]
    failed = CaptionResult("bad.jpg", error="bad.jpg: file is empty")
    assert result_record("bad.jpg", failed) == {"image": "bad.jpg", "error": "bad.jpg: file is empty"}


def test_the_record_definition_owns_the_csv_columns_and_the_calibration_keys():
    from dataclasses import fields

    from captioner.serving.confidence import Assessment
    from captioner.serving.records import CaptionRecord, field_docs

    names = [f.name for f in fields(CaptionRecord)]
    assert CSV_FIELDS == tuple(f.name for f in fields(CaptionRecord) if f.metadata["csv"]) == (
        "image", "caption", "lang", "photo_problems", "confidence", "band", "in_domain", "reason", "model_caption",
        "score", "read_text", "kind", "error")
    assert list(Assessment(0.5, "low", False, "why").to_json()) == names[4:8]
    assert all(doc.strip() for doc in field_docs().values())

# ------------------------------------------------------------------------------------------ resuming exactly

NASTY = ['He said "stop, now", then left', 'two\nlines, "quoted"\r\nand more', 'plain', 'Ünïcödé, 中文 "x"',
         '"', 'ends with a quote "']


class NameCaptioner:
    """'Captions' each file by its name with awkward text (commas, quotes, newlines), without decoding."""

    def caption(self, images, decode=None, names=None, **keep):
        results = []
        for path in images:
            index = int(path.stem.split("-")[1])
            if index == 3:
                results.append(CaptionResult(str(path), error=f'{path}: bad, "really"\nbad'))
            else:
                results.append(CaptionResult(str(path), [Caption(NASTY[index], -1.0, -0.5)]))
        return results


def _read(out):
    if out.suffix == ".csv":
        return list(csv.DictReader(out.open(encoding="utf-8", newline="")))
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_run_killed_at_any_byte_resumes_exactly(tmp_path, suffix):
    """A killed run leaves any prefix of the file: cut it at EVERY byte, rerun, and each image is there
    exactly once with every field intact (a row cut inside a quoted caption is redone, and the next row
    cannot run into its open quote)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(len(NASTY)):
        (folder / f"img-{i}.png").write_bytes(b"not decoded by NameCaptioner")
    full = tmp_path / f"full{suffix}"
    caption_to_file(NameCaptioner(), [folder], full, batch_size=2, progress=False)
    whole = full.read_bytes()
    expected = {r["image"]: r for r in _read(full)}
    assert len(expected) == len(NASTY) and '"' in whole.decode() and "\n" in expected[str(folder / "img-1.png")]["caption"]
    out = tmp_path / f"cut{suffix}"
    for cut in range(len(whole)):
        out.write_bytes(whole[:cut])
        done_before = done_images(out)
        summary = caption_to_file(NameCaptioner(), [folder], out, batch_size=2, progress=False)
        rows = _read(out)
        images = [r["image"] for r in rows]
        assert sorted(images) == sorted(expected), (cut, images)  # every image exactly once
        assert {r["image"]: r for r in rows} == expected, cut  # and every field as written
        assert summary.skipped == len(done_before) and summary.captioned + summary.failed == len(NASTY) - len(done_before)


def test_csv_resume_keeps_the_files_own_columns_and_refuses_a_foreign_csv(tmp_path, photo_tree):
    out = tmp_path / "old.csv"
    out.write_text("image,caption\r\nx.jpg,an older file's row\r\n", encoding="utf-8")
    caption_to_file(FakeCaptioner(), [photo_tree], out, progress=False)
    rows = list(csv.reader(out.open(newline="")))
    assert all(len(row) == 2 for row in rows) and len(rows) == 6  # header, the old row, 4 new ones
    foreign = tmp_path / "budget.csv"
    foreign.write_bytes(b"month,amount\r\njan,3\r\n")
    with pytest.raises(ValueError, match="no 'image' column"):
        caption_to_file(FakeCaptioner(), [photo_tree], foreign, progress=False)
    assert foreign.read_bytes() == b"month,amount\r\njan,3\r\n"


def test_killing_the_real_cli_mid_run_and_cutting_its_last_row_resumes_exactly(tmp_path, xception_weights):
    """`python -m captioner caption DIR --out x.csv` with the real model, killed (SIGKILL) once some rows
    are written; the file is then also cut inside its last row, as a kill during a write leaves it. The
    rerun redoes that row and every image ends up exactly once, each row whole."""
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from conftest import ASSETS, ROOT

    folder = tmp_path / "photos"
    folder.mkdir()
    sources = sorted(ASSETS.glob("*.jpg"))
    for i in range(10):  # copies, each its own image
        shutil.copy(sources[i % len(sources)], folder / f"photo-{i:02d}.jpg")
    out = tmp_path / "x.csv"
    command = [sys.executable, "-m", "captioner", "caption", str(folder), "--out", str(out), "--batch-size", "1",
               "--weights", str(xception_weights[0])]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while proc.poll() is None and len(done_images(out) if out.exists() else ()) < 3:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]  # killed mid-run, not finished
    data = out.read_bytes()
    last_row_start = data.rstrip(b"\r\n").rfind(b"\n") + 1
    out.write_bytes(data[:last_row_start + (len(data) - last_row_start) // 2])  # half of the last row
    cut_image = data[last_row_start:].split(b",")[0].decode()
    assert cut_image not in done_images(out)
    rerun = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    rows = list(csv.DictReader(out.open(encoding="utf-8", newline="")))
    assert sorted(r["image"] for r in rows) == sorted(str(p) for p in folder.iterdir())  # each exactly once
    assert all(r["caption"].endswith(".") and r["model_caption"] and not r["error"] for r in rows)
    assert set(rows[0]) == set(CSV_FIELDS)

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
