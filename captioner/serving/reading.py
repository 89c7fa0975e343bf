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
2. in "auto" the ``TextGate`` first: the bundled detector run at ``GATE_SIDE`` straight on OpenVINO, with
   RapidOCR's preprocessing and a numpy version of its box finding, so a text-free picture never imports
   rapidocr or cv2 (their imports and set-up cost more than a caption); where the gate finds text, or in
   "on", RapidOCR's ``detect`` at ``DETECT_SIDE`` and ``recognise`` the detected lines;
3. ``postprocess``: drop what is not real text (small, low-score, stray characters, texture read as
   letters; rules chosen on held-out training photos and generated text pictures), put the lines in
   reading order and tell a page or sign from a photo with some text.
"""
from __future__ import annotations

import contextlib
import importlib.util
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
# RapidOCR's detector settings (its config.yaml, Det), which the gate reproduces without importing it:
DET_THRESH = 0.3  # probability above which a pixel is text
DET_BOX_THRESH = 0.5  # a region's mean probability must reach this
DET_UNCLIP = 1.6  # a region is grown by area * this / perimeter on every side
DET_MIN_SIZE = 3  # regions whose shorter side is under this (+2 after growing) are dropped
# The gate's box score is an approximation, so it leans to reading: a borderline region costs one full read
# of a text-free picture, a missed one loses the text (with 0.01 it agrees with RapidOCR's own detector on
# 379 of 380 held-out training photos and generated text pictures; experiments/text_gate.py):
GATE_BOX_MARGIN = 0.01
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


def _rapidocr_dir() -> Path:
    """rapidocr's package folder, found without importing it; ReadingError when it is not installed."""
    spec = importlib.util.find_spec("rapidocr")
    if spec is None or not spec.submodule_search_locations:
        raise ReadingError("reading text needs rapidocr (not installed): pip install -r requirements.txt")
    return Path(list(spec.submodule_search_locations)[0])


def model_paths() -> dict[str, Path]:
    """The bundled detector and recogniser files; ReadingError when rapidocr or a file is missing. Nothing
    is imported: the gate needs the detector's path alone."""
    root = _rapidocr_dir() / "models"
    paths = {stage: root / name for stage, name in MODEL_FILES.items()}
    for stage, path in paths.items():
        if not path.is_file():
            raise ReadingError(f"the text {stage} model {path} is missing; reinstall rapidocr "
                               f"(pip install --force-reinstall -r requirements.txt)")
    return paths


class TextGate:
    """Is there text worth reading? The bundled detector compiled straight with OpenVINO, RapidOCR's
    detector preprocessing reproduced (longest side at most ``side``, both sides rounded to a multiple of 32,
    bilinear as cv2.resize, BGR scaled to [-1, 1], NCHW) and its box finding approximated in numpy (the map
    above DET_THRESH, grown by one pixel up and left as its 2x2 dilation, 8-connected regions, each region's
    smallest rotated rectangle, DET_BOX_THRESH on its mean probability, grown by DET_UNCLIP, scaled back to
    the picture); ``worth_reading`` then judges the boxes as on RapidOCR's own. Imports neither rapidocr nor
    cv2, so a text-free picture costs one small inference."""

    def __init__(self, threads: int = THREADS):
        path = model_paths()["det"]
        try:
            import openvino as ov
        except ImportError as err:
            raise ReadingError(f"reading text needs openvino ({err}): pip install -r requirements.txt") from None
        try:  # the threads RapidOCR's own OpenVINO session gets (EngineConfig.openvino.inference_num_threads)
            compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": str(max(1, int(threads)))})
        except Exception as err:
            raise ReadingError(f"could not compile the text detector {path}: {type(err).__name__}: {err}") from err
        self._request = compiled.create_infer_request()

    def probability(self, bgr: np.ndarray, side: int = GATE_SIDE) -> np.ndarray | None:
        """The detector's text probability map (H, W) for a BGR picture seen at longest side ``side``, or
        None when the picture is too thin to resize (RapidOCR then finds nothing either)."""
        pixels = det_input(bgr, side)
        if pixels is None:
            return None
        self._request.infer([pixels])
        return np.array(self._request.get_output_tensor().data[0, 0], np.float32)

    def boxes(self, bgr: np.ndarray, side: int = GATE_SIDE) -> np.ndarray:
        """Text line boxes (N, 4, 2) in the picture's pixels, as RapidOCR's detector would give them."""
        prob = self.probability(bgr, side)
        if prob is None:
            return np.zeros((0, 4, 2), np.float32)
        return boxes_from_map(prob, bgr.shape[:2])

    def passes(self, bgr: np.ndarray) -> bool:
        """True when the picture has a box ``worth_reading`` at ``GATE_SIDE``."""
        return worth_reading(self.boxes(bgr, GATE_SIDE))


def det_input(bgr: np.ndarray, side: int) -> np.ndarray | None:
    """RapidOCR's DetPreProcess (limit_type "max"): a (1, 3, h, w) float32 tensor, h and w multiples of 32;
    None when a side rounds to 0."""
    h, w = bgr.shape[:2]
    ratio = float(side) / max(h, w) if max(h, w) > side else 1.0
    out_h, out_w = int(round(int(h * ratio) / 32) * 32), int(round(int(w * ratio) / 32) * 32)
    if out_h <= 0 or out_w <= 0:
        return None
    img = resize_bilinear(bgr, out_h, out_w).astype(np.float32)
    img = (img * np.float32(1 / 255.0) - np.float32(0.5)) / np.float32(0.5)
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None])


def _taps(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of cv2's INTER_LINEAR along one axis (half-pixel centres, edges clamped)."""
    f = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    i0 = np.floor(f)
    frac = f - i0
    frac[i0 < 0], i0[i0 < 0] = 0.0, 0
    last = i0 >= n_in - 1
    frac[last], i0[last] = 0.0, n_in - 1
    i0 = i0.astype(np.intp)
    return i0, np.minimum(i0 + 1, n_in - 1), frac.astype(np.float32)


def resize_bilinear(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """cv2.resize(img, (out_w, out_h)) (bilinear, no antialiasing) in numpy, uint8 out; PIL's BILINEAR
    averages over the whole footprint when shrinking and would change what the detector sees."""
    h, w = img.shape[:2]
    if (h, w) == (out_h, out_w):
        return img
    y0, y1, fy = _taps(out_h, h)
    x0, x1, fx = _taps(out_w, w)
    src = img.astype(np.float32)
    rows = src[y0] * (1 - fy)[:, None, None] + src[y1] * fy[:, None, None]
    out = rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _regions(mask: np.ndarray) -> list[np.ndarray]:
    """8-connected regions of a boolean map, each as its row runs' end pixels (K, 2) in (x, y): enough
    for the region's convex hull, so for its smallest rotated rectangle."""
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), np.int8)
    padded[:, 1:-1] = mask
    step = np.diff(padded, axis=1)
    starts, ends = np.nonzero(step == 1), np.nonzero(step == -1)  # row-major, so paired run by run
    rows, x0, x1 = starts[0], starts[1], ends[1] - 1  # inclusive columns
    n = len(rows)
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    bounds = np.searchsorted(rows, np.arange(mask.shape[0] + 1))
    for r in range(mask.shape[0] - 1):  # join runs on neighbouring rows that touch, corners included
        a, a_end, b, b_end = bounds[r], bounds[r + 1], bounds[r + 1], bounds[r + 2]
        while a < a_end and b < b_end:
            if x0[b] <= x1[a] + 1 and x0[a] <= x1[b] + 1:
                ra, rb = root(a), root(b)
                if ra != rb:
                    parent[rb] = ra
            if x1[a] < x1[b]:
                a += 1
            else:
                b += 1
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    out = []
    for idx in groups.values():
        idx = np.asarray(idx)
        ys = rows[idx].astype(np.float32)
        out.append(np.concatenate([np.stack([x0[idx], ys], 1), np.stack([x1[idx], ys], 1)]).astype(np.float32))
    return out


_ANGLES = np.deg2rad(np.arange(0.0, 90.0, 0.5))
_AXES_U = np.stack([np.cos(_ANGLES), np.sin(_ANGLES)], 1)
_AXES_V = np.stack([-np.sin(_ANGLES), np.cos(_ANGLES)], 1)


def _min_rect(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """The smallest rotated rectangle around the points (cv2.minAreaRect to half a degree): centre, its two
    unit axes, and the side lengths along them."""
    pu, pv = points @ _AXES_U.T, points @ _AXES_V.T
    lo_u, hi_u, lo_v, hi_v = pu.min(0), pu.max(0), pv.min(0), pv.max(0)
    k = int(np.argmin((hi_u - lo_u) * (hi_v - lo_v)))
    u, v = _AXES_U[k], _AXES_V[k]
    centre = u * (lo_u[k] + hi_u[k]) / 2 + v * (lo_v[k] + hi_v[k]) / 2
    return centre, u, v, float(hi_u[k] - lo_u[k]), float(hi_v[k] - lo_v[k])


def _rect_score(prob: np.ndarray, centre, u, v, wu: float, wv: float) -> float:
    """Mean probability inside the rectangle (RapidOCR's "fast" box score)."""
    h, w = prob.shape
    reach = (abs(u) * wu + abs(v) * wv) / 2
    x_lo, x_hi = (int(np.clip(f(centre[0] + s * reach[0]), 0, w - 1)) for f, s in ((np.floor, -1), (np.ceil, 1)))
    y_lo, y_hi = (int(np.clip(f(centre[1] + s * reach[1]), 0, h - 1)) for f, s in ((np.floor, -1), (np.ceil, 1)))
    ys, xs = np.mgrid[y_lo:y_hi + 1, x_lo:x_hi + 1]
    dx, dy = xs - centre[0], ys - centre[1]
    # pixel centres within half a pixel of the rectangle: cv2.fillPoly also fills the pixels its edges cross
    inside = (np.abs(dx * u[0] + dy * u[1]) <= wu / 2 + 0.5) & (np.abs(dx * v[0] + dy * v[1]) <= wv / 2 + 0.5)
    patch = prob[y_lo:y_hi + 1, x_lo:x_hi + 1]
    return float(patch[inside].mean()) if inside.any() else float(patch.mean())


def boxes_from_map(prob: np.ndarray, shape: tuple[int, int],
                   box_thresh: float = DET_BOX_THRESH - GATE_BOX_MARGIN) -> np.ndarray:
    """RapidOCR's DB postprocess in numpy (approximated: rectangles to half a degree, the rounded growth as
    a rectangle, holes in a region not boxed, ``box_thresh`` a little under RapidOCR's): boxes (N, 4, 2) in
    a picture of ``shape`` (h, w)."""
    seg = prob > DET_THRESH
    grown = seg.copy()
    grown[1:] |= seg[:-1]  # the 2x2 dilation: each pixel takes its upper and left neighbours
    grown[:, 1:] |= grown[:, :-1].copy()
    height, width = prob.shape
    dest_h, dest_w = shape
    boxes = []
    for points in _regions(grown):
        centre, u, v, wu, wv = _min_rect(points)
        if min(wu, wv) < DET_MIN_SIZE:
            continue
        if _rect_score(prob, centre, u, v, wu, wv) < box_thresh:
            continue
        grow = wu * wv * DET_UNCLIP / (2 * (wu + wv))  # the offset distance: area * ratio / perimeter
        wu, wv = wu + 2 * grow, wv + 2 * grow
        if min(wu, wv) < DET_MIN_SIZE + 2:
            continue
        corners = np.array([centre + su * u * wu / 2 + sv * v * wv / 2
                            for su, sv in ((-1, -1), (1, -1), (1, 1), (-1, 1))], np.float64)
        corners[:, 0] = np.clip(np.round(corners[:, 0] / width * dest_w), 0, dest_w - 1)
        corners[:, 1] = np.clip(np.round(corners[:, 1] / height * dest_h), 0, dest_h - 1)
        boxes.append(corners)
    return np.array(boxes, np.float32).reshape(-1, 4, 2)


class Reader:
    """RapidOCR's detector and recogniser on OpenVINO, built on first use and shared by every caller."""

    _shared: "Reader | None" = None
    _shared_lock = threading.Lock()

    def __init__(self, threads: int = THREADS):
        self.threads = max(1, int(threads))
        self._ocr = None
        self._gate: TextGate | None = None
        self._lock = threading.Lock()  # one read at a time: the engine's requests are not re-entrant

    @classmethod
    def shared(cls) -> "Reader":
        """The process-wide reader (models compiled once)."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def gate(self) -> TextGate:
        """The text gate (compiled on first use; never imports rapidocr or cv2)."""
        if self._gate is None:
            self._gate = TextGate(self.threads)
        return self._gate

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
        """Read the text in a PIL picture: ``mode`` "auto" reads only when the ``TextGate`` finds text, "on"
        always, "off" never (an empty Reading). ReadingError when the reader fails."""
        mode = check_mode(mode)
        if mode == "off":
            return Reading()
        start = time.perf_counter()
        bgr = self.preprocess(image)
        with self._lock:
            try:
                if mode == "auto" and not self.gate().passes(bgr):  # text-free: rapidocr is never imported
                    return Reading(seconds=time.perf_counter() - start, gated=True)
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
