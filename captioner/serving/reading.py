"""Reading the text in a picture (signs, labels, letters, screens) with RapidOCR's bundled models.

    from captioner.serving.reading import Reader
    reading = Reader.shared().read(pil_image, mode="auto")
    reading.text     # every line, top to bottom (columns kept apart), joined by newlines; "" when none
    reading.kind     # "photo", "document" (a page or screen) or "sign" (a sign or label filling the frame)

RapidOCR (Apache-2.0, pinned in requirements.txt) ships the PP-OCRv6 text detector and multilingual
recogniser (Chinese, English, German, French, Spanish, ...) inside its wheel; they run on OpenVINO (our
runtime; it measured twice as fast as ONNX Runtime on this project's CPU, docs/READING-TEXT.md). The
models are named by path, so RapidOCR never reaches its download code; should any part of it try, the
attempt raises ``ReadingError`` at once (no network wait). Nothing here is imported by ``import
captioner``: the engine is built on the first read, so runs that never read pay nothing.

The stages are kept apart, as in a Hugging Face pipeline:

1. ``preprocess``: the upright PIL picture -> a BGR array of bounded size;
2. ``detect`` (a cheap pass at ``GATE_SIDE`` first in "auto": no text there, no recognition) and
   ``recognise`` the detected lines;
3. ``postprocess``: drop what is not real text (small, low-score, stray characters, texture read as
   letters; rules chosen on held-out training photos and generated text pictures), put the lines in
   reading order and tell a page or sign from a photo with some text.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

READ_MODES = ("auto", "on", "off")  # auto: read when the cheap pass finds text; on: always; off: never
MODEL_FILES = {"det": "PP-OCRv6_det_small.onnx", "rec": "PP-OCRv6_rec_small.onnx"}  # inside rapidocr/models
THREADS = min(2, os.cpu_count() or 1)  # OpenVINO inference threads, as the encoder's steps use
MAX_SIDE = 1600  # pictures are shrunk to this longest side before anything else (a phone photo is 4000)
GATE_SIDE = 480  # longest side of the cheap detection pass that decides whether to recognise at all
GATE_ASPECT = 1.5  # a box the cheap pass counts as a line is at least this many times as wide as tall
DETECT_SIDE = 960  # longest side of the full detection pass (small text on a page needs the pixels)
# What counts as real text (docs/READING-TEXT.md gives the measurement behind each number):
MIN_LINE_SCORE = 0.75  # recogniser's mean character confidence of a line
MIN_LINE_HEIGHT = 8  # pixels (in the picture as read): smaller lines are texture or unreadable
MIN_CHARS = 2  # letters or digits in a line; a lone character is nearly always texture ("米", "l")
LONE_LINE_SCORE = 0.93  # a picture whose only text is one short line keeps it only at this confidence
SHORT_LINE = 4  # letters/digits: what "short" means above
# What a mostly-text picture is (chosen on generated pictures and held-out training photos; see the doc):
MOSTLY_TEXT_BLOCK = 0.12  # the rectangle around all lines takes at least this share of the picture...
MOSTLY_TEXT_BUSY = 2.0  # ...and away from the text the picture is flat (busy_outside below this)
DOCUMENT_TEXT = 0.062  # a page or screen's median line is under this share of the shorter side; a label's over
KINDS = ("photo", "document", "sign")


class ReadingError(RuntimeError):
    """The text reader could not be set up or run (missing models, a download attempt, a broken image)."""


def check_mode(mode: str | None) -> str:
    """A valid read mode ("auto", "on", "off"; None: "auto"), or ValueError naming them."""
    mode = (mode or "auto").strip().lower()
    if mode not in READ_MODES:
        raise ValueError(f"read_text must be one of {', '.join(READ_MODES)}, not {mode!r}")
    return mode


@dataclass
class TextLine:
    """One line of text read in the picture."""

    text: str
    score: float  # the recogniser's confidence, 0-1
    box: list[list[int]]  # four corners (x, y) in the picture's pixels, clockwise from top left

    def to_json(self) -> dict:
        return {"text": self.text, "score": round(float(self.score), 4), "box": self.box}


@dataclass
class Reading:
    """What was read in one picture."""

    lines: list[TextLine] = field(default_factory=list)
    kind: str = "photo"  # KINDS: "photo" (with or without some text), "document", "sign"
    seconds: float = 0.0
    gated: bool = False  # True: the cheap pass found no text, so nothing was recognised

    @property
    def text(self) -> str:
        """All lines, in reading order, joined by newlines ("" when nothing was read)."""
        return "\n".join(line.text for line in self.lines)

    @property
    def mostly_text(self) -> bool:
        return self.kind != "photo"


@contextlib.contextmanager
def no_downloads():
    """Within this context any RapidOCR download raises ReadingError at once instead of reaching the
    network (the bundled models are all this project uses)."""
    from rapidocr.utils import download_file

    def refuse(cls, params):
        raise ReadingError(f"RapidOCR tried to download {getattr(params, 'file_url', '?')}; captioner only "
                           f"uses the models inside the rapidocr wheel (reinstall rapidocr if they are missing)")

    original = download_file.DownloadFile.__dict__["run"]
    download_file.DownloadFile.run = classmethod(refuse)
    try:
        yield
    finally:
        download_file.DownloadFile.run = original


def model_paths() -> dict[str, Path]:
    """The bundled detector and recogniser files; ReadingError when rapidocr or a file is missing."""
    try:
        import rapidocr
    except ImportError as err:
        raise ReadingError(f"reading text needs rapidocr ({err}): pip install -r requirements.txt") from None
    root = Path(rapidocr.__file__).parent / "models"
    paths = {stage: root / name for stage, name in MODEL_FILES.items()}
    for stage, path in paths.items():
        if not path.is_file():
            raise ReadingError(f"the text {stage} model {path} is missing; reinstall rapidocr "
                               f"(pip install --force-reinstall -r requirements.txt)")
    return paths


class Reader:
    """RapidOCR's detector and recogniser on OpenVINO, built on first use and shared by every caller."""

    _shared: "Reader | None" = None
    _shared_lock = threading.Lock()

    def __init__(self, threads: int = THREADS):
        self.threads = max(1, int(threads))
        self._ocr = None
        self._lock = threading.Lock()  # one read at a time: the engine's requests are not re-entrant

    @classmethod
    def shared(cls) -> "Reader":
        """The process-wide reader (models compiled once)."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def _engine(self):
        if self._ocr is None:
            paths = model_paths()
            from rapidocr import RapidOCR
            from rapidocr.utils.typings import EngineType

            params = {"Global.log_level": "error", "Global.use_cls": False,  # upright pictures: no 180° check
                      "Global.max_side_len": MAX_SIDE, "Global.text_score": 0.0,  # postprocess filters
                      "Det.engine_type": EngineType.OPENVINO, "Rec.engine_type": EngineType.OPENVINO,
                      "Cls.engine_type": EngineType.OPENVINO,
                      "Det.model_path": str(paths["det"]), "Rec.model_path": str(paths["rec"]),
                      "Det.limit_type": "max", "Det.limit_side_len": DETECT_SIDE,
                      "EngineConfig.openvino.inference_num_threads": self.threads}
            logging.getLogger("RapidOCR").setLevel(logging.ERROR)
            with no_downloads():
                try:
                    import cv2

                    cv2.setNumThreads(self.threads)
                    self._ocr = RapidOCR(params=params)
                    self._ocr._load_det_model()  # compile now, under the download guard
                except ReadingError:
                    raise
                except Exception as err:
                    raise ReadingError(f"could not set up the text reader: {type(err).__name__}: {err}") from err
        return self._ocr

    # ----------------------------------------------------------------------------- 1. preprocess
    @staticmethod
    def preprocess(image) -> np.ndarray:
        """An upright PIL picture -> a BGR uint8 array whose longest side is at most MAX_SIDE."""
        from PIL import Image

        img = image.convert("RGB")
        if max(img.size) > MAX_SIDE:
            img = img.copy()
            img.thumbnail((MAX_SIDE, MAX_SIDE), Image.BILINEAR)
        return np.ascontiguousarray(np.asarray(img)[:, :, ::-1])

    # ----------------------------------------------------------------------------- 2. detect, recognise
    def detect(self, bgr: np.ndarray, side: int = DETECT_SIDE) -> tuple[np.ndarray, list[float]]:
        """Text line boxes (N, 4, 2) found with the picture's longest side at ``side`` px, and their scores."""
        det = self._engine()._load_det_model()
        det.limit_type, det.limit_side_len = "max", side
        out = det(bgr)
        if out.boxes is None or len(out.boxes) == 0:
            return np.zeros((0, 4, 2), np.float32), []
        return np.asarray(out.boxes, np.float32), [float(s) for s in out.scores]

    def recognise(self, bgr: np.ndarray, boxes: np.ndarray) -> list[tuple[str, float]]:
        """(text, confidence) for each box, cut out of ``bgr`` and straightened."""
        if len(boxes) == 0:
            return []
        from rapidocr.ch_ppocr_rec import TextRecInput
        from rapidocr.utils.process_img import get_rotate_crop_image

        crops = [get_rotate_crop_image(bgr, box.copy()) for box in boxes]
        engine = self._engine()
        if engine.text_rec is None:  # compiled on the first picture with text: text-free runs never pay for it
            with no_downloads():
                try:
                    engine._load_rec_model()
                except ReadingError:
                    raise
                except Exception as err:
                    raise ReadingError(f"could not set up the text recogniser: {type(err).__name__}: {err}") from err
        out = engine._load_rec_model()(TextRecInput(img=crops))
        return [(str(t), float(s)) for t, s in zip(out.txts or (), out.scores or ())]

    # ----------------------------------------------------------------------------- the pipeline
    def read(self, image, mode: str = "auto") -> Reading:
        """Read the text in a PIL picture: ``mode`` "auto" recognises only when a cheap detection pass
        finds text, "on" always, "off" never (an empty Reading). ReadingError when the reader fails."""
        mode = check_mode(mode)
        if mode == "off":
            return Reading()
        start = time.perf_counter()
        bgr = self.preprocess(image)
        with self._lock:
            try:
                boxes = None
                if mode == "auto":
                    boxes, _ = self.detect(bgr, GATE_SIDE)
                    if not worth_reading(boxes):
                        return Reading(seconds=time.perf_counter() - start, gated=True)
                if boxes is None or max(bgr.shape[:2]) > GATE_SIDE:  # a small picture was already seen whole
                    boxes, _ = self.detect(bgr)
                found = self.recognise(bgr, boxes)
            except ReadingError:
                raise
            except Exception as err:  # an engine failure on one picture: its own error, never a crash
                raise ReadingError(f"could not read the text: {type(err).__name__}: {err}") from err
        reading = postprocess(boxes, found, bgr.shape[:2], bgr)
        reading.seconds = time.perf_counter() - start
        return reading


# --------------------------------------------------------------------------------- 3. postprocess
def worth_reading(boxes: np.ndarray) -> bool:
    """The cheap pass's verdict on its boxes: is one tall enough to read and at least GATE_ASPECT times as
    wide as tall (texture comes out as square blobs; so does a lone character, which is dropped anyway)?"""
    return any(_height(b) >= MIN_LINE_HEIGHT and _width(b) >= GATE_ASPECT * _height(b) for b in boxes)


_ALNUM = re.compile(r"[^\W_]", re.UNICODE)


def _height(box: np.ndarray) -> float:
    """A line box's height: the shorter of its two side lengths (boxes may be slanted)."""
    box = np.asarray(box, np.float32)
    a = np.linalg.norm(box[1] - box[0])
    b = np.linalg.norm(box[3] - box[0])
    return float(min(a, b))


def _width(box: np.ndarray) -> float:
    """A line box's length: the longer of its two side lengths."""
    box = np.asarray(box, np.float32)
    return float(max(np.linalg.norm(box[1] - box[0]), np.linalg.norm(box[3] - box[0])))


def _chars(text: str) -> int:
    return len(_ALNUM.findall(text))


def clean_line(text: str) -> str:
    """A recognised line as plain text: NFC, runs of spaces collapsed, stray edge punctuation trimmed."""
    text = unicodedata.normalize("NFC", text)
    text = " ".join(text.split())
    return text.strip(" |_~`'\"·•-—") if _chars(text) else ""


def keep_line(text: str, score: float, height: float) -> bool:
    """Whether a recognised line is real text: tall enough, confident enough, and more than a stray
    character."""
    return height >= MIN_LINE_HEIGHT and score >= MIN_LINE_SCORE and _chars(text) >= MIN_CHARS


def postprocess(boxes: np.ndarray, found: list[tuple[str, float]], shape: tuple[int, int],
                bgr: np.ndarray | None = None) -> Reading:
    """Filter the recognised lines, order them for reading and say what kind of picture it is (``bgr``,
    the picture, tells a page or label from a photo; without it every picture is a photo)."""
    lines = []
    for box, (text, score) in zip(boxes, found):
        text = clean_line(text)
        if keep_line(text, score, _height(box)):
            lines.append(TextLine(text, score, [[int(round(x)), int(round(y))] for x, y in box]))
    if len(lines) == 1 and _chars(lines[0].text) <= SHORT_LINE and lines[0].score < LONE_LINE_SCORE:
        lines = []  # one short, not quite sure word alone in a photo: nearly always texture ("REM", "1ol")
    lines = reading_order(lines)
    return Reading(lines, kind_of(lines, bgr) if bgr is not None else "photo")


def _extent(line: TextLine) -> tuple[float, float, float, float]:
    xs = [p[0] for p in line.box]
    ys = [p[1] for p in line.box]
    return min(xs), min(ys), max(xs), max(ys)


def reading_order(lines: list[TextLine]) -> list[TextLine]:
    """Lines top to bottom, left to right on a line, and columns kept apart: a recursive XY cut that
    splits at a vertical gutter when it is narrow next to the columns on both sides (two page columns; a
    receipt's names and prices stay row by row), else at a horizontal gap (a heading over columns)."""
    if len(lines) <= 1:
        return list(lines)
    ext = [_extent(line) for line in lines]
    heights = sorted(e[3] - e[1] for e in ext)
    line_h = heights[len(heights) // 2] or 1.0
    cols = _groups([(e[0], e[2]) for e in ext], min_gap=line_h * 0.8)
    if len(cols) > 1:
        widths = [max(ext[i][2] for i in c) - min(ext[i][0] for i in c) for c in cols]
        gaps = [min(ext[i][0] for i in b) - max(ext[i][2] for i in a) for a, b in zip(cols, cols[1:])]
        if all(len(c) >= 2 for c in cols) and max(gaps) < 0.5 * min(widths):
            return [line for col in cols for line in reading_order([lines[i] for i in col])]
    rows = _groups([(e[1], e[3]) for e in ext], min_gap=0.0)
    if len(rows) > 1:  # cut at the widest horizontal gap only, so the part below can still split into columns
        tops = [min(ext[i][1] for i in row) for row in rows]
        bottoms = [max(ext[i][3] for i in row) for row in rows]
        cut = 1 + int(np.argmax([tops[k + 1] - bottoms[k] for k in range(len(rows) - 1)]))
        above = [lines[i] for row in rows[:cut] for i in row]
        below = [lines[i] for row in rows[cut:] for i in row]
        return reading_order(above) + reading_order(below)
    return _by_rows(lines, line_h)


def _groups(spans: list[tuple[float, float]], min_gap: float) -> list[list[int]]:
    """Indices grouped where their 1-D spans overlap (or are closer than ``min_gap``), in order."""
    order = sorted(range(len(spans)), key=lambda i: spans[i][0])
    groups, end = [], None
    for i in order:
        lo, hi = spans[i]
        if end is None or lo - end > min_gap:
            groups.append([i])
            end = hi
        else:
            groups[-1].append(i)
            end = max(end, hi)
    return groups


def _by_rows(lines: list[TextLine], line_h: float) -> list[TextLine]:
    """Lines sorted into rows (centres within half a line height) top to bottom, each left to right."""
    ext = {id(line): _extent(line) for line in lines}
    ordered = sorted(lines, key=lambda l: (ext[id(l)][1] + ext[id(l)][3]) / 2)
    rows: list[list[TextLine]] = []
    for line in ordered:
        centre = (ext[id(line)][1] + ext[id(line)][3]) / 2
        if rows:
            last = rows[-1][-1]
            if abs(centre - (ext[id(last)][1] + ext[id(last)][3]) / 2) < line_h / 2:
                rows[-1].append(line)
                continue
        rows.append([line])
    return [line for row in rows for line in sorted(row, key=lambda l: ext[id(l)][0])]


def block_cover(lines: list[TextLine], shape: tuple[int, int]) -> float:
    """The share of the picture the text block takes: the rectangle around every kept line."""
    if not lines:
        return 0.0
    ext = np.array([_extent(line) for line in lines])
    h, w = shape
    x0, y0 = max(0.0, ext[:, 0].min()), max(0.0, ext[:, 1].min())
    x1, y1 = min(float(w), ext[:, 2].max()), min(float(h), ext[:, 3].max())
    return float(max(0.0, x1 - x0) * max(0.0, y1 - y0) / (h * w))


def busy_outside(lines: list[TextLine], bgr: np.ndarray) -> float:
    """How busy the picture is away from its text: the mean absolute brightness step between neighbouring
    pixels (0-255, at 256 px) outside the lines' boxes (grown by half a line). Paper, labels and screens are
    flat there; a photo is not."""
    h, w = bgr.shape[:2]
    scale = 256.0 / max(h, w)
    gray = np.asarray(bgr, np.float32).mean(axis=2)
    step = max(1, int(round(1 / scale)))
    gray = gray[::step, ::step]
    gh, gw = gray.shape
    mask = np.zeros((gh, gw), bool)
    for line in lines:
        x0, y0, x1, y1 = _extent(line)
        pad = 0.5 * (y1 - y0)
        mask[max(0, int((y0 - pad) / step)):int((y1 + pad) / step) + 1,
             max(0, int((x0 - pad) / step)):int((x1 + pad) / step) + 1] = True
    dx = np.abs(np.diff(gray, axis=1))[:, :] * ~(mask[:, 1:] | mask[:, :-1])
    dy = np.abs(np.diff(gray, axis=0)) * ~(mask[1:, :] | mask[:-1, :])
    free = (~(mask[:, 1:] | mask[:, :-1])).sum() + (~(mask[1:, :] | mask[:-1, :])).sum()
    return float((dx.sum() + dy.sum()) / max(1, free))


def kind_of(lines: list[TextLine], bgr: np.ndarray) -> str:
    """"photo" unless the text block takes at least MOSTLY_TEXT_BLOCK of the picture and the rest of it is
    flat (``busy_outside`` below MOSTLY_TEXT_BUSY); then "document" (a page or screen: small print, the
    median line under DOCUMENT_TEXT of the picture's shorter side) or "sign" (a sign or label: large print)."""
    shape = bgr.shape[:2]
    if not lines or block_cover(lines, shape) < MOSTLY_TEXT_BLOCK or busy_outside(lines, bgr) >= MOSTLY_TEXT_BUSY:
        return "photo"
    heights = sorted(_height(np.asarray(line.box, np.float32)) for line in lines)  # across the line, if turned
    return "document" if heights[len(heights) // 2] / min(shape) < DOCUMENT_TEXT else "sign"
