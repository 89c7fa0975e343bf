"""Captioning whole folders into a JSON-lines or CSV file: streamed, resumable, errors recorded per image.

Memory stays bounded whatever the number of images: folders are walked lazily, a few images are
decoded at a time, and each result is written (and flushed) as soon as it is known.
"""
from __future__ import annotations

import csv
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from ..config import DecodeConfig

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif", ".avif",
                  ".svg"}  # SVG is picked up so that each one gets its "not supported" line
CSV_FIELDS = ("image", "caption", "lang", "confidence", "band", "in_domain", "reason", "model_caption", "score",
              "read_text", "kind", "error")


@dataclass
class BatchSummary:
    captioned: int = 0
    failed: int = 0
    skipped: int = 0  # already in the output file from an earlier run


def iter_files(inputs: Iterable[Path], suffixes: set[str]) -> Iterator[Path]:
    """Files given directly, and files with one of ``suffixes`` found recursively (sorted) in folders given."""
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            for folder, dirs, files in os.walk(item):
                dirs.sort()
                for name in sorted(files):
                    if Path(name).suffix.lower() in suffixes:
                        yield Path(folder) / name
        else:
            yield item  # a missing or odd file gets its own error line


def iter_images(inputs: Iterable[Path]) -> Iterator[Path]:
    """Files given directly, and image files found recursively (sorted) in folders given."""
    return iter_files(inputs, IMAGE_SUFFIXES)


def result_record(path: Path, result) -> dict:
    """The JSON object for one image: what ``caption --json`` prints and ``--out`` files hold.

    ``"caption"`` is the sentence as the page shows and speaks it (hedged by its band, after the
    out-of-domain warning), ``"model_caption"`` the decoder's own words, ``"score"`` their ranking score;
    with a calibrated model also ``"confidence"`` (0-1), ``"band"`` (high / medium / low),
    ``"in_domain"`` and ``"reason"`` (why the picture was flagged, else null); ``"lang"``, the captions'
    language; ``"alternatives"`` when several captions were asked for; ``"read_text"`` (every line read in
    the picture, joined by newlines, or null), ``"kind"`` ("photo", "document", "sign") and, when text was
    read, ``"text_lines"`` (each line's text, score and box) and ``"short_caption"`` (alt text). An image
    that failed:
    ``{"image", "error"}``.
    """
    if not result.ok:
        return {"image": str(path), "error": result.error}
    record = {"image": str(path), "caption": result.sentence, "lang": result.lang}
    if result.assessment is not None:
        record.update(result.assessment.to_json())
    record.update({"model_caption": result.text, "score": round(result.captions[0].score, 4)})
    record.update({"read_text": result.read_text, "kind": result.kind})
    if result.read_text:
        record["text_lines"] = [line.to_json() for line in result.reading.lines]
        record["short_caption"] = result.short_sentence
    if len(result.captions) > 1:
        record["alternatives"] = [{"caption": c.text, "score": round(c.score, 4)} for c in result.captions]
    return record


def caption_paths(captioner, inputs: Iterable[Path], decode: DecodeConfig | None = None, batch_size: int = 16,
                  skip: set[str] = frozenset()) -> Iterator[tuple[list[Path], list]]:
    """Caption every image under ``inputs`` (except those named in ``skip``) in encoder batches of
    ``batch_size``; yields each batch's (paths, results) as soon as it is done."""
    chunk: list[Path] = []
    for path in iter_images(inputs):
        if str(path) in skip:
            continue
        chunk.append(path)
        if len(chunk) >= batch_size:
            yield chunk, captioner.caption(chunk, decode)
            chunk = []
    if chunk:
        yield chunk, captioner.caption(chunk, decode)


def _format(out: Path) -> str:
    suffix = out.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise ValueError(f"{out}: output must end in .jsonl or .csv")
    return suffix[1:]


def done_images(out: Path) -> set[str]:
    """Images already recorded in ``out`` (so a rerun resumes instead of starting over)."""
    if not out.is_file():
        return set()
    done: set[str] = set()
    with open(out, encoding="utf-8", newline="") as fh:
        if _format(out) == "csv":
            done.update(row["image"] for row in csv.DictReader(fh) if row.get("image"))
        else:
            for line in fh:
                try:
                    done.add(json.loads(line)["image"])
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by an interruption: that image is redone
    return done


def caption_to_file(captioner, inputs: Iterable[Path], out: Path, decode: DecodeConfig | None = None,
                    batch_size: int = 16, progress: bool = True) -> BatchSummary:
    """Caption every image under ``inputs`` into ``out`` (.jsonl or .csv), skipping ones already there.
    ``decode`` (default: the model's own) is passed whole to ``Captioner.caption``."""
    out = Path(out)
    _format(out)
    done = done_images(out)
    total = sum(1 for _ in iter_images(inputs))
    skipped = sum(1 for p in iter_images(inputs) if str(p) in done)
    batches = ([result_record(path, result) for path, result in zip(chunk, results)]
               for chunk, results in caption_paths(captioner, inputs, decode, batch_size, done))
    return write_records(out, batches, total=total, skipped=skipped, progress=progress)


def write_records(out: Path, batches: Iterable[list[dict]], total: int | None = None, skipped: int = 0,
                  progress: bool = True) -> BatchSummary:
    """Append each batch of ``result_record`` objects to ``out`` (.jsonl or .csv; a header for a new CSV),
    flushing after every batch, and count them: a record with an ``"error"`` is a failure.

    The one writer behind every engine (``caption_to_file`` here, ``ray_batch.caption_to_file_ray``), so
    their files are the same. ``total`` and ``skipped`` (images already in the file) drive the progress bar.
    """
    from tqdm import tqdm

    out = Path(out)
    fmt = _format(out)
    summary = BatchSummary(skipped=skipped)
    new_file = not out.is_file() or out.stat().st_size == 0
    _repair_last_line(out)
    with open(out, "a", encoding="utf-8", newline="") as fh, \
            tqdm(total=total, unit="img", desc="captioning", disable=not progress, file=sys.stderr) as bar:
        writer = csv.DictWriter(fh, CSV_FIELDS, extrasaction="ignore") if fmt == "csv" else None
        if writer and new_file:
            writer.writeheader()
        bar.update(skipped)
        for records in batches:
            for record in records:
                if writer:
                    writer.writerow(record)
                else:
                    fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                failed = "error" in record
                summary.captioned += not failed
                summary.failed += failed
            fh.flush()
            bar.update(len(records))
    return summary


def _repair_last_line(out: Path) -> None:
    """An interrupted run can leave half a line at the end; make sure appends start on a new line."""
    if out.is_file() and out.stat().st_size:
        with open(out, "rb+") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                fh.write(b"\n")
