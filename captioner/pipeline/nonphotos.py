"""Seeded, offline generator of pictures that are NOT photos, for the out-of-domain check.

The captioner learned from Flickr photos (people, animals, outdoor scenes). These are the pictures
it should say it does not know: text pages in several fonts and sizes, slides and tables, charts
(bar, line, pie, scatter, histogram, area), flowcharts and line drawings, UI screenshots (windows,
web pages, code editors, phone screens), flat colour fields and gradients, noise (uniform, Gaussian,
salt-and-pepper, blotchy) and codes (barcodes, QR-like block codes).

Everything is drawn with PIL, numpy and matplotlib (Agg), from fonts found on the machine (DejaVu,
Liberation, ... or PIL's default font), so the same seed gives the same pictures anywhere the
same fonts are installed. Two disjoint sets are used:

* ``THRESHOLD_SEED``: the set the out-of-domain threshold is chosen on (``calibrate.py``);
* ``REPORT_SEED``: held back, only for reporting how many non-photos are flagged.

Neither set is ever used to fit the out-of-domain model itself (that is fitted on training photos
alone), and nothing generated here is committed: ``write_samples`` draws the app's examples on demand.

    from captioner.pipeline.nonphotos import generate
    for kind, image in generate(20, seed=THRESHOLD_SEED): ...
"""
from __future__ import annotations

import glob
import io
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

THRESHOLD_SEED = 1001  # the set thresholds are chosen on
REPORT_SEED = 2002  # held back: only reported on

WORDS = """the of and to in is that for it as was with be by on not he this are or his from at which but have
an they you were her she there been one all we their has would when if so what more no out up into do
any time my about can said them only me other new some could these two may first then its also after
our over such people now very made well work years way even because many where those most through
year much how must before should great back total report page chapter section figure table data
results method system value sales revenue quarter growth market customer account order invoice
payment date number amount balance service project meeting agenda summary notes review draft final
settings profile password login search download upload help contact privacy terms home about news
price product cart checkout shipping delivery address email phone name city country status open
closed pending approved error warning info debug file edit view tools window format insert options
function return import class print string list index count error result input output server client
request response update delete create select from where group limit""".split()


# ----------------------------------------------------------------------------------------- fonts

@lru_cache(maxsize=1)
def font_files() -> tuple[str, ...]:
    """TrueType/OpenType fonts on this machine (sorted, so seeds pick the same ones each run)."""
    patterns = ["/usr/share/fonts/**/*.ttf", "/usr/share/fonts/**/*.otf", "/usr/local/share/fonts/**/*.ttf",
                os.path.expanduser("~/.fonts/**/*.ttf"), "/Library/Fonts/*.ttf", "C:/Windows/Fonts/*.ttf"]
    found = set()
    for pattern in patterns:
        found.update(glob.glob(pattern, recursive=True))
    try:  # matplotlib ships DejaVu Sans in every install
        import matplotlib

        found.update(glob.glob(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "*.ttf")))
    except ImportError:  # pragma: no cover
        pass
    usable: dict[str, str] = {}  # file name -> path: one copy of each font (system copies sort first)
    for path in sorted(found, key=lambda p: (p.startswith(str(Path(os.sep) / "usr")) is False, p)):
        name = Path(path).name.lower()
        if any(skip in name for skip in ("math", "symbol", "cmex", "cmsy", "cmmi", "display", "lastresort", "stix")):
            continue  # symbol and fallback fonts draw boxes or symbols for letters
        usable.setdefault(name, path)
    return tuple(sorted(usable.values()))


def _font(rng: np.random.Generator, size: int, mono: bool = False) -> ImageFont.ImageFont:
    files = font_files()
    if mono:
        files = tuple(f for f in files if "mono" in Path(f).name.lower()) or files
    if files:
        try:
            return ImageFont.truetype(files[int(rng.integers(len(files)))], size)
        except OSError:
            pass
    try:
        return ImageFont.load_default(size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


# ---------------------------------------------------------------------------------------- helpers

def _words(rng: np.random.Generator, n: int) -> str:
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.8:
            out.append(WORDS[int(rng.integers(len(WORDS)))])
        elif r < 0.9:
            out.append(str(int(rng.integers(0, 10 ** int(rng.integers(1, 5))))))
        else:
            out.append("".join(chr(97 + int(c)) for c in rng.integers(0, 26, int(rng.integers(2, 9)))))
    return " ".join(out)


def _sentence(rng: np.random.Generator, n: int) -> str:
    text = _words(rng, n)
    return text[:1].upper() + text[1:] + "."


def _colour(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, 3))


def _light(rng) -> tuple[int, int, int]:
    return _colour(rng, 215, 256)


def _dark(rng) -> tuple[int, int, int]:
    return _colour(rng, 0, 90)


def _size(rng: np.random.Generator, lo: int = 320, hi: int = 1100, aspect=(0.6, 1.8)) -> tuple[int, int]:
    width = int(rng.integers(lo, hi))
    return width, max(64, int(width / rng.uniform(*aspect)))


def _text_width(draw: ImageDraw.ImageDraw, text: str, font) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return right - left


def _wrap(draw, text: str, font, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and _text_width(draw, trial, font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + ([line] if line else [])


def _line_height(font) -> int:
    try:
        ascent, descent = font.getmetrics()
        return int((ascent + descent) * 1.25)
    except AttributeError:
        return 14


# ----------------------------------------------------------------------------------------- kinds

def text_page(rng: np.random.Generator) -> Image.Image:
    """A document page: optional heading, paragraphs (one or two columns), in one of the fonts."""
    w, h = _size(rng, 400, 1200, (0.6, 1.5))
    paper = _light(rng) if rng.random() < 0.4 else (255, 255, 255)
    ink = _dark(rng) if rng.random() < 0.4 else (0, 0, 0)
    if rng.random() < 0.12:  # dark mode
        paper, ink = _dark(rng), _light(rng)
    img = Image.new("RGB", (w, h), paper)
    draw = ImageDraw.Draw(img)
    size = int(rng.integers(11, 42))
    body = _font(rng, size, mono=rng.random() < 0.2)
    margin = int(w * rng.uniform(0.04, 0.12))
    y = margin
    if rng.random() < 0.7:
        head = _font(rng, int(size * rng.uniform(1.4, 2.4)))
        for line in _wrap(draw, _words(rng, int(rng.integers(2, 7))).title(), head, w - 2 * margin):
            draw.text((margin, y), line, font=head, fill=ink)
            y += _line_height(head)
        y += size
    columns = 2 if w > 700 and rng.random() < 0.3 else 1
    gap = size * 2
    col_w = (w - 2 * margin - (columns - 1) * gap) // columns
    for c in range(columns):
        x, yy = margin + c * (col_w + gap), y
        while yy < h - margin - _line_height(body):
            para = " ".join(_sentence(rng, int(rng.integers(5, 18))) for _ in range(int(rng.integers(1, 6))))
            for line in _wrap(draw, para, body, col_w):
                if yy > h - margin - _line_height(body):
                    break
                draw.text((x, yy), line, font=body, fill=ink)
                yy += _line_height(body)
            yy += _line_height(body) // 2
    return img


def slide(rng: np.random.Generator) -> Image.Image:
    """A presentation slide: a title bar and bullet points."""
    w = int(rng.integers(480, 1280))
    h = int(w * rng.choice([0.5625, 0.75]))
    bg = _light(rng) if rng.random() < 0.7 else _dark(rng)
    ink = (20, 20, 20) if sum(bg) > 380 else (240, 240, 240)
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    bar = int(h * rng.uniform(0.12, 0.22))
    draw.rectangle([0, 0, w, bar], fill=_colour(rng, 20, 200))
    title = _font(rng, max(12, int(bar * 0.45)))
    draw.text((int(w * 0.05), int(bar * 0.25)), _words(rng, int(rng.integers(2, 6))).title(), font=title,
              fill=(255, 255, 255))
    body = _font(rng, max(10, int(h * rng.uniform(0.035, 0.06))))
    y = bar + int(h * 0.06)
    while y < h - 2 * _line_height(body):
        draw.ellipse([int(w * 0.06), y + 6, int(w * 0.06) + 8, y + 14], fill=ink)
        draw.text((int(w * 0.09), y), _words(rng, int(rng.integers(3, 9))), font=body, fill=ink)
        y += int(_line_height(body) * 1.5)
    return img


def table(rng: np.random.Generator) -> Image.Image:
    """A spreadsheet-like table: grid lines, a header row, words and numbers."""
    rows, cols = int(rng.integers(6, 30)), int(rng.integers(3, 9))
    font = _font(rng, int(rng.integers(10, 20)))
    cell_w, cell_h = int(rng.integers(60, 140)), _line_height(font) + 6
    w, h = cols * cell_w + 20, rows * cell_h + 20
    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    header = _colour(rng, 150, 240)
    stripe = rng.random() < 0.5
    for r in range(rows):
        y = 10 + r * cell_h
        if r == 0:
            draw.rectangle([10, y, w - 10, y + cell_h], fill=header)
        elif stripe and r % 2:
            draw.rectangle([10, y, w - 10, y + cell_h], fill=(240, 240, 245))
        for c in range(cols):
            x = 10 + c * cell_w
            text = _words(rng, 1) if r == 0 or c == 0 else f"{rng.uniform(0, 10 ** rng.integers(1, 5)):.2f}"
            draw.text((x + 4, y + 3), text[:12], font=font, fill=(0, 0, 0))
    for r in range(rows + 1):
        draw.line([10, 10 + r * cell_h, w - 10, 10 + r * cell_h], fill=(160, 160, 160))
    for c in range(cols + 1):
        draw.line([10 + c * cell_w, 10, 10 + c * cell_w, h - 10], fill=(160, 160, 160))
    return img


def chart(rng: np.random.Generator) -> Image.Image:
    """A matplotlib chart: bar, line, pie, scatter, histogram or stacked area, in a random style."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    styles = ["default", "ggplot", "bmh", "classic", "seaborn-v0_8-whitegrid", "fivethirtyeight",
              "dark_background", "grayscale"]
    style = styles[int(rng.integers(len(styles)))]
    style = style if style in plt.style.available or style == "default" else "default"
    kind = ["bar", "line", "pie", "scatter", "hist", "area", "barh"][int(rng.integers(7))]
    w, h = _size(rng, 400, 1000, (1.0, 1.8))
    with plt.style.context(style):
        fig, ax = plt.subplots(figsize=(w / 100, h / 100), dpi=100)
        n = int(rng.integers(3, 12))
        labels = [_words(rng, 1)[:8] for _ in range(n)]
        if kind == "bar":
            ax.bar(labels, rng.uniform(1, 100, n), color=None if rng.random() < 0.5 else f"C{rng.integers(10)}")
        elif kind == "barh":
            ax.barh(labels, rng.uniform(1, 100, n))
        elif kind == "line":
            x = np.arange(int(rng.integers(10, 100)))
            for i in range(int(rng.integers(1, 5))):
                ax.plot(x, np.cumsum(rng.normal(0, 1, len(x))), label=f"series {i + 1}",
                        marker="o" if rng.random() < 0.3 else None)
            ax.legend()
        elif kind == "pie":
            ax.pie(rng.uniform(1, 10, min(n, 8)), labels=labels[:min(n, 8)], autopct="%1.0f%%")
        elif kind == "scatter":
            m = int(rng.integers(20, 400))
            ax.scatter(rng.normal(0, 1, m), rng.normal(0, 1, m), c=rng.uniform(0, 1, m), s=rng.uniform(5, 60))
        elif kind == "hist":
            ax.hist(rng.normal(rng.uniform(-5, 5), rng.uniform(0.5, 3), 1000), bins=int(rng.integers(8, 40)))
        else:
            x = np.arange(30)
            ax.stackplot(x, *[np.abs(np.cumsum(rng.normal(0, 1, 30))) + 1 for _ in range(int(rng.integers(2, 5)))])
        if kind != "pie":
            ax.set_xlabel(_words(rng, 2))
            ax.set_ylabel(_words(rng, 1))
        ax.set_title(_words(rng, int(rng.integers(2, 6))).title())
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def flowchart(rng: np.random.Generator) -> Image.Image:
    """A diagram: labelled boxes, diamonds and ellipses joined by arrows."""
    w, h = _size(rng, 400, 1100, (0.7, 1.6))
    img = Image.new("RGB", (w, h), (255, 255, 255) if rng.random() < 0.8 else _light(rng))
    draw = ImageDraw.Draw(img)
    font = _font(rng, int(rng.integers(10, 22)))
    n = int(rng.integers(3, 10))
    cols = int(rng.integers(1, 4))
    rows = math.ceil(n / cols)
    boxes = []
    for i in range(n):
        r, c = divmod(i, cols)
        cx, cy = int((c + 0.5) * w / cols), int((r + 0.5) * h / rows)
        bw, bh = int(w / cols * rng.uniform(0.4, 0.7)), int(h / rows * rng.uniform(0.3, 0.55))
        boxes.append((cx, cy, bw, bh))
    line = _dark(rng)
    for (x1, y1, _, b1), (x2, y2, _, b2) in zip(boxes, boxes[1:]):
        draw.line([x1, y1 + b1 // 2, x2, y2 - b2 // 2], fill=line, width=2)
        draw.polygon([(x2, y2 - b2 // 2), (x2 - 6, y2 - b2 // 2 - 10), (x2 + 6, y2 - b2 // 2 - 10)], fill=line)
    fill = _colour(rng, 160, 256)
    for cx, cy, bw, bh in boxes:
        shape = rng.integers(3)
        box = [cx - bw // 2, cy - bh // 2, cx + bw // 2, cy + bh // 2]
        if shape == 0:
            draw.rectangle(box, fill=fill, outline=line, width=2)
        elif shape == 1:
            draw.ellipse(box, fill=fill, outline=line, width=2)
        else:
            draw.polygon([(cx, box[1]), (box[2], cy), (cx, box[3]), (box[0], cy)], fill=fill, outline=line)
        text = _words(rng, int(rng.integers(1, 3)))
        draw.text((cx - _text_width(draw, text, font) // 2, cy - 8), text, font=font, fill=(0, 0, 0))
    return img


def line_drawing(rng: np.random.Generator) -> Image.Image:
    """Line art: random curves and shapes, or a child-like sketch (house, sun, tree, stick figure)."""
    w, h = _size(rng, 300, 1000)
    bg = (255, 255, 255) if rng.random() < 0.7 else _light(rng)
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    ink = _dark(rng) if rng.random() < 0.7 else _colour(rng)
    width = int(rng.integers(1, 6))
    if rng.random() < 0.5:
        for _ in range(int(rng.integers(3, 25))):
            pts = np.cumsum(rng.normal(0, min(w, h) / 12, (int(rng.integers(3, 30)), 2)), axis=0)
            pts += [rng.uniform(0, w), rng.uniform(0, h)]
            draw.line([tuple(p) for p in pts], fill=ink if rng.random() < 0.7 else _colour(rng), width=width)
        for _ in range(int(rng.integers(0, 8))):
            x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(10, min(w, h) / 4)
            draw.ellipse([x - r, y - r, x + r, y + r], outline=ink, width=width)
    else:  # a sketch of a scene
        ground = int(h * rng.uniform(0.65, 0.85))
        draw.line([0, ground, w, ground], fill=ink, width=width)
        hx, hw = int(w * rng.uniform(0.1, 0.4)), int(w * rng.uniform(0.15, 0.3))
        top = ground - hw
        draw.rectangle([hx, top, hx + hw, ground], outline=ink, width=width)
        draw.polygon([(hx - 10, top), (hx + hw // 2, top - hw // 2), (hx + hw + 10, top)], outline=ink)
        draw.rectangle([hx + hw // 3, ground - hw // 2, hx + 2 * hw // 3, ground], outline=ink, width=width)
        sx, sy, sr = int(w * rng.uniform(0.6, 0.9)), int(h * 0.15), int(min(w, h) * 0.07)
        draw.ellipse([sx - sr, sy - sr, sx + sr, sy + sr], outline=ink, width=width)
        for a in np.linspace(0, 2 * np.pi, 9)[:-1]:
            draw.line([sx + 1.4 * sr * np.cos(a), sy + 1.4 * sr * np.sin(a), sx + 2 * sr * np.cos(a),
                       sy + 2 * sr * np.sin(a)], fill=ink, width=width)
        px = int(w * rng.uniform(0.55, 0.85))
        head = int(h * 0.05)
        body_top = ground - int(h * 0.3)
        draw.ellipse([px - head, body_top - 2 * head, px + head, body_top], outline=ink, width=width)
        draw.line([px, body_top, px, ground - int(h * 0.12)], fill=ink, width=width)
        draw.line([px, ground - int(h * 0.12), px - head, ground], fill=ink, width=width)
        draw.line([px, ground - int(h * 0.12), px + head, ground], fill=ink, width=width)
        draw.line([px - 2 * head, body_top + head, px + 2 * head, body_top + head], fill=ink, width=width)
    return img


def screenshot(rng: np.random.Generator) -> Image.Image:
    """A UI screenshot: a desktop window, a web page, a code editor or a phone screen."""
    kind = int(rng.integers(4))
    font = _font(rng, int(rng.integers(11, 18)))
    lh = _line_height(font)
    if kind == 3:  # phone
        w = int(rng.integers(300, 500))
        h = int(w * rng.uniform(1.8, 2.2))
    else:
        w, h = _size(rng, 600, 1400, (1.2, 1.9))
    dark = rng.random() < 0.25
    bg = (30, 30, 34) if dark else (250, 250, 250)
    ink = (220, 220, 220) if dark else (30, 30, 30)
    accent = _colour(rng, 30, 220)
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    if kind == 2:  # code editor
        draw.rectangle([0, 0, w, 28], fill=(60, 60, 64) if dark else (225, 225, 230))
        mono = _font(rng, int(rng.integers(11, 16)), mono=True)
        y, indent = 36, 0
        palette = [ink, accent, _colour(rng, 100, 240), (106, 153, 85), (206, 145, 120)]
        for number in range(1, 200):
            if y > h - lh:
                break
            draw.text((6, y), f"{number:>3}", font=mono, fill=(120, 120, 120))
            x = 50 + indent * 24
            for token in _words(rng, int(rng.integers(1, 7))).split():
                colour = palette[int(rng.integers(len(palette)))]
                draw.text((x, y), token, font=mono, fill=colour)
                x += _text_width(draw, token + " ", mono)
            indent = int(np.clip(indent + rng.integers(-1, 2), 0, 4))
            y += _line_height(mono)
        return img
    # title bar / browser chrome / status bar
    top = 30 if kind != 3 else 24
    draw.rectangle([0, 0, w, top], fill=(200, 200, 205) if not dark else (50, 50, 55))
    if kind != 3:
        for i, c in enumerate([(255, 95, 87), (255, 189, 46), (39, 201, 63)]):
            draw.ellipse([10 + i * 20, 9, 22 + i * 20, 21], fill=c)
        draw.text((90, 7), _words(rng, 3), font=font, fill=ink)
    if kind == 1:  # browser: address bar and a header band
        draw.rounded_rectangle([90, top + 6, w - 20, top + 30], radius=10,
                               fill=(255, 255, 255) if not dark else (60, 60, 60))
        draw.text((104, top + 10), "https://www." + _words(rng, 1) + ".com/" + _words(rng, 1), font=font, fill=ink)
        top += 36
        draw.rectangle([0, top, w, top + 60], fill=accent)
        draw.text((20, top + 20), _words(rng, 2).title(), font=_font(rng, 24), fill=(255, 255, 255))
        top += 60
    left = 0
    if kind == 0 and rng.random() < 0.7:  # sidebar with a list
        left = int(w * rng.uniform(0.18, 0.3))
        draw.rectangle([0, top, left, h], fill=(235, 235, 240) if not dark else (40, 40, 44))
        for i, y in enumerate(range(top + 12, h - lh, lh + 8)):
            if i == 2:
                draw.rectangle([0, y - 4, left, y + lh], fill=accent)
            draw.text((16, y), _words(rng, int(rng.integers(1, 3))), font=font, fill=ink)
    x0, y = left + 20, top + 16
    while y < h - 60:
        r = rng.random()
        if r < 0.3:  # a labelled text field
            draw.text((x0, y), _words(rng, 1).title() + ":", font=font, fill=ink)
            fw = int((w - x0) * rng.uniform(0.3, 0.8))
            draw.rectangle([x0 + 110, y - 4, x0 + 110 + fw, y + lh + 2], outline=(160, 160, 160),
                           fill=(255, 255, 255) if not dark else (45, 45, 50))
            y += lh + 18
        elif r < 0.5:  # a row of buttons
            x = x0
            for _ in range(int(rng.integers(1, 4))):
                label = _words(rng, 1).title()
                bw = _text_width(draw, label, font) + 30
                draw.rounded_rectangle([x, y, x + bw, y + lh + 12], radius=6, fill=accent)
                draw.text((x + 15, y + 6), label, font=font, fill=(255, 255, 255))
                x += bw + 12
            y += lh + 28
        elif r < 0.6:  # checkbox / toggle
            draw.rectangle([x0, y, x0 + 14, y + 14], outline=ink, width=2)
            if rng.random() < 0.5:
                draw.line([x0 + 3, y + 7, x0 + 6, y + 11, x0 + 12, y + 2], fill=accent, width=2)
            draw.text((x0 + 24, y - 1), _words(rng, int(rng.integers(2, 6))), font=font, fill=ink)
            y += lh + 12
        elif r < 0.7 and kind != 3:  # an image placeholder / card
            cw, ch = int((w - x0) * rng.uniform(0.2, 0.5)), int(rng.integers(60, 160))
            draw.rectangle([x0, y, x0 + cw, y + ch], fill=_colour(rng, 180, 240), outline=(180, 180, 180))
            draw.line([x0, y, x0 + cw, y + ch], fill=(160, 160, 160))
            draw.line([x0, y + ch, x0 + cw, y], fill=(160, 160, 160))
            y += ch + 16
        else:  # paragraph
            for line in _wrap(draw, _sentence(rng, int(rng.integers(6, 30))), font, w - x0 - 20):
                draw.text((x0, y), line, font=font, fill=ink)
                y += lh
            y += 10
    draw.rectangle([0, h - 24, w, h], fill=(220, 220, 225) if not dark else (45, 45, 50))
    draw.text((10, h - 20), _words(rng, 4), font=font, fill=ink)
    return img


def flat(rng: np.random.Generator) -> Image.Image:
    """One flat colour, sometimes with a faint vignette or a little sensor-like noise."""
    w, h = _size(rng)
    arr = np.empty((h, w, 3), np.float32)
    arr[:] = _colour(rng)
    if rng.random() < 0.4:
        arr += rng.normal(0, rng.uniform(1, 6), arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def gradient(rng: np.random.Generator) -> Image.Image:
    """A linear or radial gradient between two or three colours."""
    w, h = _size(rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 0.6:
        angle = rng.uniform(0, 2 * np.pi)
        t = xx / w * np.cos(angle) + yy / h * np.sin(angle)
    else:
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        t = np.hypot(xx - cx, yy - cy)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    a, b = np.array(_colour(rng), np.float32), np.array(_colour(rng), np.float32)
    arr = a + (b - a) * t[..., None]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def noise(rng: np.random.Generator) -> Image.Image:
    """Uniform, Gaussian, salt-and-pepper or blotchy (low-frequency) noise, colour or grey."""
    w, h = _size(rng, 200, 900)
    kind = int(rng.integers(4))
    grey = rng.random() < 0.3
    shape = (h, w, 1) if grey else (h, w, 3)
    if kind == 0:
        arr = rng.uniform(0, 255, shape)
    elif kind == 1:
        arr = rng.normal(rng.uniform(60, 200), rng.uniform(20, 80), shape)
    elif kind == 2:
        arr = np.full(shape, rng.uniform(0, 255))
        mask = rng.random((h, w))
        p = rng.uniform(0.02, 0.3)
        arr[mask < p / 2] = 0
        arr[mask > 1 - p / 2] = 255
    else:  # blotches: coarse random grid, upsampled
        cells = int(rng.integers(3, 24))
        small = rng.uniform(0, 255, (cells, max(2, int(cells * w / h)), shape[2])).astype(np.uint8)
        small_img = Image.fromarray(small.squeeze(-1) if grey else small)
        arr = np.asarray(small_img.resize((w, h), Image.Resampling.BICUBIC), np.float32)
        arr = arr.reshape(h, w, -1)
    arr = np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def barcode(rng: np.random.Generator) -> Image.Image:
    """A 1-D barcode (random bar widths), with digits under it and a quiet zone."""
    module = int(rng.integers(2, 5))
    bars = rng.integers(1, 5, int(rng.integers(30, 70)))
    width = int(bars.sum()) * module + 40 * module
    height = int(width * rng.uniform(0.3, 0.7))
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    x, black = 20 * module, True
    bottom = int(height * 0.8)
    for b in bars:
        if black:
            draw.rectangle([x, int(height * 0.08), x + b * module - 1, bottom], fill=(0, 0, 0))
        x += b * module
        black = not black
    font = _font(rng, max(10, int(height * 0.12)), mono=True)
    draw.text((20 * module, bottom + 2), "".join(str(d) for d in rng.integers(0, 10, 13)), font=font, fill=(0, 0, 0))
    if rng.random() < 0.4:  # on a label in a frame
        frame = Image.new("RGB", (int(width * 1.3), int(height * 1.4)), _light(rng))
        frame.paste(img, (int(width * 0.15), int(height * 0.2)))
        img = frame
    return img


def block_code(rng: np.random.Generator) -> Image.Image:
    """A QR-like code: a random module grid with three finder squares (or a DataMatrix-like grid)."""
    n = int(rng.choice([21, 25, 29, 33, 37, 41]))
    grid = rng.random((n, n)) < 0.5
    if rng.random() < 0.75:  # QR finder patterns
        for r, c in ((0, 0), (0, n - 7), (n - 7, 0)):
            grid[r:r + 7, c:c + 7] = False
            grid[r:r + 7, c] = grid[r:r + 7, c + 6] = True
            grid[r, c:c + 7] = grid[r + 6, c:c + 7] = True
            grid[r + 2:r + 5, c + 2:c + 5] = True
    else:  # DataMatrix "L" border
        grid[:, 0] = True
        grid[-1, :] = True
        grid[0, ::2] = True
        grid[0, 1::2] = False
        grid[1::2, -1] = True
        grid[::2, -1] = False
    quiet = 4
    padded = np.pad(~grid, quiet, constant_values=True)
    scale = int(rng.integers(4, 16))
    arr = np.kron(padded, np.ones((scale, scale), bool))
    ink, paper = (np.array(_dark(rng)) if rng.random() < 0.3 else np.zeros(3)), np.full(3, 255)
    img = Image.fromarray(np.where(arr[..., None], paper, ink).astype(np.uint8))
    if rng.random() < 0.4:  # on a poster with a caption
        w, h = img.size
        poster = Image.new("RGB", (int(w * 1.6), int(h * 1.8)), _light(rng))
        poster.paste(img, (int(w * 0.3), int(h * 0.2)))
        draw = ImageDraw.Draw(poster)
        draw.text((int(w * 0.3), int(h * 1.35)), _words(rng, 3).title(), font=_font(rng, max(12, h // 10)),
                  fill=(0, 0, 0))
        img = poster
    return img


KINDS: dict[str, Callable[[np.random.Generator], Image.Image]] = {
    "text page": text_page, "slide": slide, "table": table, "chart": chart, "flowchart": flowchart,
    "line drawing": line_drawing, "screenshot": screenshot, "flat colour": flat, "gradient": gradient,
    "noise": noise, "barcode": barcode, "block code": block_code,
}


def _finish(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Some pictures arrive re-compressed, slightly blurred or downscaled, as shared images do."""
    r = rng.random()
    if r < 0.25:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(rng.integers(40, 90)))
        buf.seek(0)
        img = Image.open(buf).convert("RGB")
    elif r < 0.35:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    elif r < 0.45:
        img = img.resize((max(32, img.width // 2), max(32, img.height // 2)), Image.Resampling.BILINEAR)
    return img


def generate(n: int, seed: int = THRESHOLD_SEED, kinds: list[str] | None = None) -> Iterator[tuple[str, Image.Image]]:
    """``n`` (kind, RGB image) pairs, cycling through ``kinds`` (default: all) so each gets its share.

    Image ``i`` depends only on ``(seed, i)``: a set is reproducible and two seeds give disjoint sets.
    """
    kinds = list(kinds or KINDS)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown non-photo kinds {unknown}; known: {', '.join(KINDS)}")
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        kind = kinds[i % len(kinds)]
        yield kind, _finish(KINDS[kind](rng), rng)


def write_set(folder: str | Path, n: int, seed: int, fmt: str = "png") -> list[tuple[str, Path]]:
    """Write ``generate(n, seed)`` into ``folder`` as ``nonphoto-<seed>-<i>-<kind>.<fmt>``; (kind, path) pairs."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (kind, img) in enumerate(generate(n, seed)):
        path = folder / f"nonphoto-{seed}-{i:04d}-{kind.replace(' ', '-')}.{fmt}"
        if not path.is_file():
            img.save(path)
        written.append((kind, path))
    return written


SAMPLE_KINDS = ("text page", "chart", "screenshot", "block code")
SAMPLE_SEED = 3003  # neither the threshold set nor the report set


def write_samples(folder: str | Path, kinds=SAMPLE_KINDS, seed: int = SAMPLE_SEED) -> list[Path]:
    """A few example non-photos for the app (``sample-<kind>.png``), drawn on demand, never committed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, kind in enumerate(kinds):
        img = KINDS[kind](np.random.default_rng([seed, i]))
        path = folder / f"sample-{kind.replace(' ', '-')}.png"
        img.save(path)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Write generated non-photo pictures into a folder.")
    parser.add_argument("folder")
    parser.add_argument("-n", type=int, default=48)
    parser.add_argument("--seed", type=int, default=THRESHOLD_SEED)
    parser.add_argument("--samples", action="store_true", help="write the app's few sample pictures instead")
    args = parser.parse_args(argv)
    if args.samples:
        for path in write_samples(args.folder):
            print(path)
    else:
        for kind, path in write_set(args.folder, args.n, args.seed):
            print(f"{kind}\t{path}")


if __name__ == "__main__":
    main()
