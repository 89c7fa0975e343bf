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
from .records import CSV_FIELDS, CaptionRecord

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif", ".avif",
                  ".svg"}  # SVG is picked up so that each one gets its "not supported" line


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
    """The JSON object for one image: what ``caption --json`` prints, ``--out`` files hold and the API answers.
    Its fields and what they mean: ``records.CaptionRecord``. An image that failed: ``{"image", "error"}``."""
    return CaptionRecord.from_result(path, result).to_json()


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
    """Images already recorded in ``out`` (so a rerun resumes instead of starting over): only complete
    records count; one cut short by an interrupted run is redone."""
    if not out.is_file():
        return set()
    records, _end, _fields = read_complete(out)
    return {r["image"] for r in records if isinstance(r, dict) and r.get("image")}


def read_complete(out: Path) -> tuple[list[dict], int, list[str] | None]:
    """(the complete records of output file ``out``, the byte offset where the last of them ends, the CSV
    header's fields or None). Whatever follows that offset is a record a killed run left half-written.

    JSON lines: a record is a line that ends in a newline. CSV: a record (one or more lines: captions may
    hold newlines inside quotes) is complete when it ends in a newline outside quotes, i.e. its bytes hold
    an even number of ``"`` (the writer doubles quotes inside fields); the header counts as a record.
    """
    data = out.read_bytes()
    if _format(out) == "jsonl":
        records, end = [], 0
        while (newline := data.find(b"\n", end)) >= 0:
            try:
                records.append(json.loads(data[end:newline]))
            except ValueError:
                pass  # a damaged line in the middle: its image is not counted as done
            end = newline + 1
        return records, end, None
    spans, end = [], 0  # (start, end) of each complete CSV record, header first
    while end < len(data):
        stop, quotes = end, 0
        while (newline := data.find(b"\n", stop)) >= 0:
            quotes += data.count(b'"', stop, newline + 1)
            stop = newline + 1
            if quotes % 2 == 0:
                break
        else:
            break  # no newline outside quotes before the end: cut short
        spans.append((end, stop))
        end = stop
    rows = []
    for a, b in spans:
        try:
            rows.append(next(csv.reader([data[a:b].decode("utf-8", "replace")]), []))
        except csv.Error:
            rows.append([])  # a damaged record in the middle: its image is not counted as done
    if not rows:
        return [], 0, None
    fields = rows[0]  # [] when the first record cannot be read: not a captions file (the writer refuses it)
    return [dict(zip(fields, row)) for row in rows[1:] if row], spans[-1][1], fields


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
    return append_records(out, batches, total=total, skipped=skipped, progress=progress)


def append_records(out: Path, batches: Iterable[list[dict]], total: int | None = None, skipped: int = 0,
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
    fields = _cut_to_complete(out, fmt)
    with open(out, "a", encoding="utf-8", newline="") as fh, \
            tqdm(total=total, unit="img", desc="captioning", disable=not progress, file=sys.stderr) as bar:
        writer = csv.DictWriter(fh, fields or CSV_FIELDS, extrasaction="ignore") if fmt == "csv" else None
        if writer and not fields:
            writer.writeheader()
        bar.update(skipped)
        for records in batches:
            for record in records:
                if writer:
                    writer.writerow(csv_row(record))
                else:
                    fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                failed = "error" in record
                summary.captioned += not failed
                summary.failed += failed
            fh.flush()
            bar.update(len(records))
    return summary


def csv_row(record: dict) -> dict:
    """A ``result_record`` as a CSV row: the list of photo problems joined by ";" ("blurry;dark")."""
    if isinstance(record.get("photo_problems"), list):
        record = {**record, "photo_problems": ";".join(record["photo_problems"])}
    return record


def _cut_to_complete(out: Path, fmt: str) -> list[str] | None:
    """Truncate ``out`` back to the end of its last complete record, so that what an interrupted run left
    half-written is redone and an appended record can never run into it; the CSV header's fields (rows
    are appended in the file's own columns), None for JSON lines or a CSV without a complete header."""
    if not out.is_file():
        return None
    _records, end, fields = read_complete(out)
    if fields is not None and "image" not in fields:
        raise ValueError(f"{out}: its first row has no 'image' column, so it is not a captions file; "
                         "choose another --out")
    if end < out.stat().st_size:
        with open(out, "rb+") as fh:
            fh.truncate(end)
    return fields
