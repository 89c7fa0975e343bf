"""How well the photo-quality checks (captioner/serving/quality.py) catch blurred, dark and blown-out photos.

Each photo is measured as it is and as degraded copies made here: defocus (Gaussian and disk), motion blur
from a shaking hand (a line at a random angle), underexposure (fewer stops of light, with sensor noise),
overexposure (stops above what a phone's meter
sets: the photo's median at middle grey; clipped), the photo as taken with more stops of light, and glare (a bright veil from a light source), each at three strengths.

    # choose thresholds: measures of the 300 held-out TRAINING photos and their copies (never dev)
    python experiments/photo_quality.py tune --out /tmp/quality-tune.json
    # the report: detection per kind and strength, clean dev photos flagged (named), time per photo
    python experiments/photo_quality.py report --out docs/photo-quality.json --save-measures /tmp/dev-measures.json
    # the same report again from saved measures under the thresholds now in quality.py (seconds, not minutes)
    python experiments/photo_quality.py report --out docs/photo-quality.json --from-measures /tmp/dev-measures.json
    # the checks' time per photo (wall-clock and CPU) on 200 dev photos, into the report
    python experiments/photo_quality.py time --out docs/photo-quality.json

The report runs the checks exactly as ``Captioner.caption`` does (on ``images.preprocess_image``'s pixels).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from captioner.serving.images import load_image, preprocess_image  # noqa: E402
from captioner.serving.quality import (PROBLEMS, THRESHOLDS, PhotoQuality, check_pixels, grey_copy,  # noqa: E402
                                       verdict)

DATA = ROOT.parent / "shared" / "flickr8k"
TUNE_LIST = ROOT / "models" / "merge-ensemble" / "tune_images.txt"
STRENGTHS = ("mild", "medium", "strong")
# kind -> (the problem it should raise, its parameter at each strength); sizes in pixels of a 224-px photo
DEGRADATIONS = {
    "defocus_gaussian": ("blurry", {"mild": 1.0, "medium": 2.0, "strong": 3.0}),  # sigma
    "defocus_disk": ("blurry", {"mild": 2.0, "medium": 3.5, "strong": 5.0}),  # radius
    "motion": ("blurry", {"mild": 5, "medium": 9, "strong": 15}),  # length of the shake
    "underexposed": ("dark", {"mild": -1.5, "medium": -2.5, "strong": -3.5}),  # stops (EV)
    "overexposed": ("bright", {"mild": 1.0, "medium": 2.0, "strong": 3.0}),  # stops above a metered exposure
    "brightened": ("bright", {"mild": 1.0, "medium": 2.0, "strong": 3.0}),  # stops above the photo as taken
    "glare": ("bright", {"mild": 0.35, "medium": 0.55, "strong": 0.75}),  # veil strength at its centre
}
GAMMA = 2.2  # sRGB <-> linear light, near enough for exposure changes
MIDDLE_GREY = 0.18  # the linear luminance a camera's meter puts a scene's median at
LUMA = np.array([0.2126, 0.7152, 0.0722])  # linear-light luminance weights (Rec. 709)


def _convolve(rgb: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Each channel convolved with ``kernel`` (edges reflected; by FFT, which is fast for long kernels)."""
    from scipy.signal import fftconvolve

    kernel = kernel / kernel.sum()
    r = kernel.shape[0] // 2
    padded = np.pad(rgb, ((r, r), (r, r), (0, 0)), mode="reflect")
    return fftconvolve(padded, kernel[..., None], mode="valid", axes=(0, 1))


def disk_kernel(radius: float) -> np.ndarray:
    """A defocused lens's blur: a uniform disk."""
    r = int(np.ceil(radius))
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    return (x * x + y * y <= radius * radius + 0.5).astype(np.float64)


def motion_kernel(length: int, angle: float) -> np.ndarray:
    """A shake: a straight line of ``length`` pixels at ``angle`` degrees, drawn with sub-pixel samples."""
    size = length + 2
    kernel = np.zeros((size, size))
    c = (size - 1) / 2
    for t in np.linspace(-(length - 1) / 2, (length - 1) / 2, 4 * length):
        x, y = c + t * np.cos(np.radians(angle)), c + t * np.sin(np.radians(angle))
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - x0, y - y0
        for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            kernel[y0 + dy, x0 + dx] += w
    return kernel


def degrade(img: Image.Image, kind: str, value: float, rng: np.random.Generator) -> Image.Image:
    """A degraded copy of ``img`` (RGB): ``kind`` from DEGRADATIONS at parameter ``value``."""
    if kind == "defocus_gaussian":
        return img.filter(ImageFilter.GaussianBlur(value))
    rgb = np.asarray(img, dtype=np.float64) / 255.0
    if kind == "defocus_disk":
        out = _convolve(rgb, disk_kernel(value))
    elif kind == "motion":
        out = _convolve(rgb, motion_kernel(int(value), rng.uniform(0, 180)))
    elif kind in ("underexposed", "overexposed", "brightened"):
        linear = rgb ** GAMMA * 2.0 ** value
        if kind == "overexposed":  # metered: a night shot +3 stops is a normal exposure, not a blown-out one
            linear = linear * MIDDLE_GREY / max(float(np.median(rgb ** GAMMA @ LUMA)), 1e-4)
        if kind == "underexposed":  # a dark shot is a noisy one: read noise, then the phone's own gain
            linear = linear + rng.normal(0, 0.002, linear.shape)
        out = np.clip(linear, 0, 1) ** (1 / GAMMA)
    elif kind == "glare":  # a light source at a random spot washes the picture out around it
        h, w = rgb.shape[:2]
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        y, x = np.mgrid[0:h, 0:w]
        veil = value * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * (0.8 * max(h, w)) ** 2))[..., None]
        out = rgb * (1 - veil) + veil
    else:
        raise ValueError(f"unknown degradation {kind!r}")
    return Image.fromarray(np.clip(np.round(out * 255), 0, 255).astype(np.uint8))


def measure(names: list[str], folder: Path, seed: int = 0) -> dict:
    """Every check's measures on each photo and on each of its degraded copies, plus the checks' time."""
    rng = np.random.default_rng(seed)
    rows: dict = {"clean": {}, **{kind: {s: {} for s in STRENGTHS} for kind in DEGRADATIONS}}
    seconds = []
    for i, name in enumerate(names):
        img = load_image(folder / name)
        pixels = preprocess_image(img)
        start = time.perf_counter()
        rows["clean"][name] = check_pixels(pixels).to_json()
        seconds.append(time.perf_counter() - start)
        for kind, (_, values) in DEGRADATIONS.items():
            for strength, value in values.items():
                copy = degrade(img, kind, value, rng)
                rows[kind][strength][name] = check_pixels(preprocess_image(copy)).to_json()
        if (i + 1) % 50 == 0:
            print(f"  {i + 1}/{len(names)}", file=sys.stderr, flush=True)
    return {"rows": rows, "seconds": seconds}


def rejudge(measured: dict) -> dict:
    """Saved measures with their problems judged again under the thresholds now in quality.py."""
    def again(row: dict) -> dict:
        q = PhotoQuality(**{k: v for k, v in row.items() if k != "problems"})
        return {**row, "problems": verdict(q)}

    rows = measured["rows"]
    out = {"clean": {n: again(r) for n, r in rows["clean"].items()}}
    out.update({kind: {s: {n: again(r) for n, r in rows[kind][s].items()} for s in STRENGTHS} for kind in DEGRADATIONS})
    return {**measured, "rows": out}


def detected(rows: dict, problem: str) -> float:
    """Share of ``rows`` (name -> measures) whose problems include ``problem``."""
    return sum(problem in r["problems"] for r in rows.values()) / max(len(rows), 1)


def summary(measured: dict) -> dict:
    """Detection per kind and strength, and the clean photos flagged (by problem, named)."""
    rows = measured["rows"]
    table = {kind: {s: round(detected(rows[kind][s], problem), 4) for s in STRENGTHS}
             for kind, (problem, _) in DEGRADATIONS.items()}
    flagged = {name: r["problems"] for name, r in rows["clean"].items() if r["problems"]}
    clean = {"photos": len(rows["clean"]), "flagged": len(flagged), "flagged_share": round(len(flagged) / max(len(rows["clean"]), 1), 4),
             "by_problem": {p: sum(p in v for v in flagged.values()) for p in PROBLEMS}, "flagged_photos": flagged}
    ms = sorted(1000 * s for s in measured["seconds"])
    timing = {"median_ms": round(statistics.median(ms), 3), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 3),
              "max_ms": round(ms[-1], 3)}
    return {"detected": table, "clean": clean, "checks_time_per_photo": timing}


def cpu() -> str:
    """The CPU's model name (docs name the machine behind every figure)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def check_times(names: list[str], folder: Path) -> dict:
    """The checks' time per photo as ``Captioner.caption`` runs them (on pixels it has already computed):
    wall-clock, and the CPU time of this process (which a busy shared machine does not inflate)."""
    wall, busy = [], []
    for name in names:
        pixels = preprocess_image(load_image(folder / name))
        start, start_cpu = time.perf_counter(), time.process_time()
        check_pixels(pixels)
        busy.append(1000 * (time.process_time() - start_cpu))
        wall.append(1000 * (time.perf_counter() - start))
    wall, busy = sorted(wall), sorted(busy)
    return {"photos": len(names), "wall_median_ms": round(statistics.median(wall), 3),
            "wall_p95_ms": round(wall[int(0.95 * (len(wall) - 1))], 3),
            "cpu_median_ms": round(statistics.median(busy), 3), "cpu_p95_ms": round(busy[int(0.95 * (len(busy) - 1))], 3)}


def big_photo_time(repeats: int = 20) -> dict:
    """The checks on a 12-megapixel photo (4032x3024): the same work, since they read the encoder's copy."""
    img = Image.open(DATA / "images" / "1000268201_693b08cb0e.jpg").convert("RGB").resize((4032, 3024))
    pixels = preprocess_image(img)
    ms, busy = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        check_pixels(pixels)
        busy.append(1000 * (time.process_time() - start_cpu))
        ms.append(1000 * (time.perf_counter() - start))
    return {"photo": "4032x3024", "wall_median_ms": round(statistics.median(ms), 3),
            "cpu_median_ms": round(statistics.median(busy), 3)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["tune", "report", "time"],
                        help="tune: held-out training photos; report: dev; time: only the checks' time (dev), "
                             "written into an existing report")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=None, help="only the first N photos (a quick look)")
    parser.add_argument("--save-measures", type=Path, help="also write every photo's measures here")
    parser.add_argument("--from-measures", type=Path, help="judge measures saved by --save-measures again")
    args = parser.parse_args(argv)
    command = "python experiments/photo_quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.mode == "time":  # a busy machine inflates the report's own wall-clock times; CPU time does not
        report = json.loads(args.out.read_text())
        names = (DATA / "Flickr_8k.devImages.txt").read_text().split()[: args.limit or 200]
        report.pop("checks_time_per_photo", None)
        report.update(checks_time=check_times(names, DATA / "images"), checks_time_12mp=big_photo_time(),
                      time_command=command)
        args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
        print(report["checks_time"], report["checks_time_12mp"])
        return
    if args.mode == "tune":
        names, split = TUNE_LIST.read_text().split(), "300 held-out training photos (models/merge-ensemble/tune_images.txt)"
    else:
        names, split = (DATA / "Flickr_8k.devImages.txt").read_text().split(), "Flickr8k dev (1,000 photos)"
    names = names[: args.limit] if args.limit else names
    if args.from_measures:
        measured = rejudge(json.loads(args.from_measures.read_text()))
    else:
        measured = measure(names, DATA / "images")
        if args.save_measures:
            args.save_measures.write_text(json.dumps(measured))
    report = {"split": split, "photos": len(names), "cpu": cpu(),
              "command": command,
              "thresholds": dataclasses.asdict(THRESHOLDS), "degradations": {k: {"problem": p, "values": v}
                                                                 for k, (p, v) in DEGRADATIONS.items()},
              **summary(measured)}
    if args.mode == "report":
        report["checks_time"] = check_times(names[:200], DATA / "images")
        report["checks_time_12mp"] = big_photo_time()
        originals = sorted(p.name for p in (DATA / "originals").glob("*.jpg"))
        flagged = {}
        for name in originals:  # the same dev photos at their real resolution: the checks must agree
            problems = check_pixels(preprocess_image(load_image(DATA / "originals" / name))).problems
            if problems:
                flagged[name] = problems
        report["originals"] = {"photos": len(originals), "flagged": flagged}
    else:
        report["measures"] = measured["rows"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps({k: report[k] for k in ("detected", "clean")}, indent=1)[:4000])


if __name__ == "__main__":
    main()
