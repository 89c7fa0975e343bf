"""How well the text in pictures is read (``captioner/serving/reading.py``), measured on pictures this script
generates itself and on the dataset's photos.

- Generated text pictures (``captioner/pipeline/textpictures.py``) in English, German, Chinese, French and
  Spanish: signs pasted in perspective onto held-out training photos (models/merge-ensemble/tune_images.txt),
  product labels, document pages photographed at an angle under uneven light, and screens; each as a plain
  picture and as a hard shot (turned, smaller, blurred, darker, compressed harder). Per language and tier:
  word recall of ``read_text`` (share of the drawn words read; Chinese: characters), word precision (share
  of the words read that are drawn), how often the kind (photo / document / sign) is right, seconds.
- Held-out training photos (``--tune``, the 300 in tune_images.txt): how many get text, with each line's
  features (what the junk rules and thresholds were chosen on).
- The 1,000 dev photos: how many get text, and a sample of what was read (reported only; nothing is chosen
  on dev).
- Timings on one text-free photo and one page: ``auto`` (the cheap detection pass only, for a photo), the
  whole read of a page.

    python experiments/reading_text.py [--data ../shared/flickr8k] [--per-lang 8] [--dev 1000] [--tune]
                                       [--json docs/reading-text.json]
"""
from __future__ import annotations

import argparse
import platform
import re
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.report import emit  # noqa: E402

from captioner.pipeline.textpictures import generate  # noqa: E402
from captioner.serving import reading as rd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LANGS = ("en", "de", "zh", "fr", "es")


def words(text: str, lang: str) -> list[str]:
    """Words to compare: lower case, punctuation dropped; Chinese characters one by one."""
    text = text.lower()
    if lang == "zh":
        return re.findall(r"[\u4e00-\u9fff]|[a-z0-9]+", text)
    return re.findall(r"[^\W_]+", text)


def recall_precision(truth: str, read: str, lang: str) -> tuple[int, int, int]:
    """(words matched, words drawn, words read) as multisets."""
    want, got = Counter(words(truth, lang)), Counter(words(read, lang))
    return sum((want & got).values()), sum(want.values()), sum(got.values())


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def generated(reader: rd.Reader, photos: list[Path], per_lang: int, seed: int) -> dict:
    out = {}
    for lang in LANGS:
        for hard in (False, True):
            matched = drawn = got = kind_ok = 0
            seconds, misses = [], []
            for picture in generate(lang, per_lang, seed=seed, photos=photos, hard=hard):
                reading = reader.read(picture.image, "auto")
                m, d, g = recall_precision(picture.text, reading.text, lang)
                matched, drawn, got = matched + m, drawn + d, got + g
                kind_ok += reading.kind == picture.expected_kind
                seconds.append(reading.seconds)
                if m < d:
                    misses.append({"kind": picture.kind, "drawn": picture.text, "read": reading.text})
            out[f"{lang} {'hard' if hard else 'plain'}"] = {
                "pictures": per_lang, "word_recall": round(matched / max(1, drawn), 4),
                "word_precision": round(matched / max(1, got), 4), "kind_right": round(kind_ok / per_lang, 3),
                "median_s": round(float(np.median(seconds)), 3), "misses": misses[:3]}
            print(lang, "hard" if hard else "plain", out[f"{lang} {'hard' if hard else 'plain'}"]["word_recall"],
                  file=sys.stderr, flush=True)
    return out


def photos_read(reader: rd.Reader, paths: list[Path], sample: int = 20) -> dict:
    """How many photos get text in ``auto``, how many passed the cheap pass, a sample of what was read."""
    from PIL import Image

    with_text, gated, seconds, found = 0, 0, [], []
    for path in paths:
        reading = reader.read(Image.open(path), "auto")
        seconds.append(reading.seconds)
        gated += reading.gated
        if reading.lines:
            with_text += 1
            found.append({"image": path.name, "read_text": reading.text, "kind": reading.kind,
                          "scores": [round(l.score, 3) for l in reading.lines]})
    return {"photos": len(paths), "with_text": with_text, "share_with_text": round(with_text / max(1, len(paths)), 4),
            "passed_cheap_pass": len(paths) - gated, "median_s": round(float(np.median(seconds)), 3),
            "mean_s": round(float(np.mean(seconds)), 3), "sample": found[:sample]}


def timings(reader: rd.Reader, photo: Path, page) -> dict:
    from PIL import Image

    img = Image.open(photo).convert("RGB")
    reader.read(img, "auto")  # warm
    reader.read(page, "on")
    t = {}
    for name, picture, mode in (("text-free photo, auto", img, "auto"), ("page of text, auto", page, "auto")):
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            reader.read(picture, mode)
            runs.append(time.perf_counter() - start)
        t[name] = round(min(runs), 3)
    return t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "flickr8k")
    ap.add_argument("--per-lang", type=int, default=8, help="generated pictures per language and tier")
    ap.add_argument("--dev", type=int, default=1000, help="dev photos to read (0: none)")
    ap.add_argument("--tune", action="store_true", help="also read the 300 held-out training photos")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    images = args.data / "images"
    tune = [images / n for n in (ROOT / "models" / "merge-ensemble" / "tune_images.txt").read_text().split()]
    reader = rd.Reader()
    figures = {"cpu": f"{cpu_name()}, {rd.THREADS} OpenVINO threads",
               "settings": {k: getattr(rd, k) for k in ("GATE_SIDE", "GATE_ASPECT", "DETECT_SIDE", "MAX_SIDE",
                                                        "MIN_LINE_SCORE", "MIN_LINE_HEIGHT", "MIN_CHARS",
                                                        "LONE_LINE_SCORE", "MOSTLY_TEXT_BLOCK", "MOSTLY_TEXT_BUSY",
                                                        "DOCUMENT_TEXT")},
               "command": "python experiments/reading_text.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    page = generate("en", 3, seed=args.seed)[1].image  # a document page
    figures["timings_s"] = timings(reader, tune[0], page)
    figures["generated"] = generated(reader, tune, args.per_lang, args.seed)
    if args.tune:
        figures["held_out_training_photos"] = photos_read(reader, tune)
    if args.dev:
        dev = [images / n for n in (args.data / "Flickr_8k.devImages.txt").read_text().split()[:args.dev]]
        figures["dev_photos"] = photos_read(reader, dev)
    return emit(figures, args.json)


if __name__ == "__main__":
    sys.exit(main())
