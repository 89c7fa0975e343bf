"""Does the text gate (``reading.TextGate``: the detector on OpenVINO with a numpy box finder, no rapidocr)
agree with RapidOCR's own detector at the same size (``Reader.detect(bgr, GATE_SIDE)`` + ``worth_reading``)?

Counted on generated text pictures in five languages (plain and hard shots; every one should pass), the
300 held-out training photos (models/merge-ensemble/tune_images.txt), assets/*.jpg and, with ``--dev N``,
the first N dev photos (reported only; nothing is chosen on dev). Prints the agreement counts and each
disagreement with both sides' box that comes closest to passing.

    python experiments/text_gate.py [--data ../shared/flickr8k] [--per-lang 8] [--dev 1000] [--json FILE]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.report import emit  # noqa: E402

from captioner.pipeline.textpictures import generate  # noqa: E402
from captioner.serving import reading as rd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LANGS = ("en", "de", "zh", "fr", "es")


def best_line(boxes: np.ndarray) -> list[float]:
    """(height, width) of the box that comes closest to passing worth_reading, for the report."""
    best = [0.0, 0.0]
    for b in boxes:
        h, w = rd._height(b), rd._width(b)
        if min(h / rd.MIN_LINE_HEIGHT, w / max(h, 1e-6) / rd.GATE_ASPECT) > min(
                best[0] / rd.MIN_LINE_HEIGHT, best[1] / max(best[0], 1e-6) / rd.GATE_ASPECT):
            best = [round(h, 1), round(w, 1)]
    return best


def compare(reader: rd.Reader, named: list[tuple[str, object]]) -> dict:
    """Both verdicts on each (name, PIL picture)."""
    tally = {"pictures": 0, "both_text": 0, "both_none": 0, "old_text_new_none": 0, "old_none_new_text": 0}
    differ = []
    for name, image in named:
        bgr = reader.preprocess(image)
        old_boxes, _ = reader.detect(bgr, rd.GATE_SIDE)
        new_boxes = reader.gate().boxes(bgr, rd.GATE_SIDE)
        old, new = rd.worth_reading(old_boxes), rd.worth_reading(new_boxes)
        tally["pictures"] += 1
        key = ("both_text" if new else "both_none") if old == new else \
            ("old_text_new_none" if old else "old_none_new_text")
        tally[key] += 1
        if old != new:
            differ.append({"picture": name, "old": old, "new": new, "old_best_hw": best_line(old_boxes),
                           "new_best_hw": best_line(new_boxes)})
    return {**tally, "disagreements": differ}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "flickr8k")
    ap.add_argument("--per-lang", type=int, default=8, help="generated pictures per language and tier")
    ap.add_argument("--dev", type=int, default=0, help="dev photos to compare on (0: none)")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    from PIL import Image

    names = (ROOT / "models" / "merge-ensemble" / "tune_images.txt").read_text().split()
    tune = [args.data / "images" / n for n in names]
    reader = rd.Reader()
    generated = [(f"{lang}/{'hard' if hard else 'plain'}/{p.kind}/{i}", p.image)
                 for lang in LANGS for hard in (False, True)
                 for i, p in enumerate(generate(lang, args.per_lang, seed=args.seed, photos=tune, hard=hard))]
    figures = {"command": "python experiments/text_gate.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "generated": compare(reader, generated),
               "held_out_training_photos": compare(reader, ((p.name, Image.open(p)) for p in tune)),
               "assets": compare(reader, ((p.name, Image.open(p)) for p in sorted((ROOT / "assets").glob("*.jpg"))))}
    if args.dev:
        dev = [args.data / "images" / n for n in (args.data / "Flickr_8k.devImages.txt").read_text().split()[:args.dev]]
        figures["dev_photos"] = compare(reader, ((p.name, Image.open(p)) for p in dev))
    return emit(figures, args.json)


if __name__ == "__main__":
    sys.exit(main())
