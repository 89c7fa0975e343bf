"""Caption datasets on disk: Flickr8k, the Kaggle Flickr8k layout and Flickr30k.

Which folder: ``--data DIR`` (``load_dataset(root)``), else ``CAPTIONER_DATA``, else ``../shared/flickr8k``
beside a source checkout when it exists; otherwise a DataError naming ``--data`` and ``CAPTIONER_DATA``.

Readers never stop for one bad line or one missing image: they skip it, count it, and report it in
``CaptionDataset.problems`` so the user sees what was dropped.
"""
from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..serving.languages import DEFAULT_LANG, language, truecase_table

IMAGE_DIR_NAMES = ("images", "Images", "Flicker8k_Dataset", "Flickr8k_Dataset", "flickr30k_images")
SPLIT_FILES = {"train": "Flickr_8k.trainImages.txt", "dev": "Flickr_8k.devImages.txt",
               "test": "Flickr_8k.testImages.txt"}
# The caption files understood, in the order looked for: (file, delimiter or None for the token format,
# the dataset that ships it).
CAPTION_FILES = (("Flickr8k.token.txt", None, "Flickr8k"), ("results_20130124.token", None, "Flickr30k"),
                 ("captions.txt", ",", "Flickr8k"), ("results.csv", "|", "Flickr30k"))
DATA_ENV = "CAPTIONER_DATA"
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the source checkout (site-packages when installed)
SIBLING_DATA = PROJECT_ROOT.parent / "shared" / "flickr8k"  # ../shared/flickr8k beside the project


class DataError(ValueError):
    """A dataset that cannot be used at all; the message names the path and the problem."""


def clean_caption(text: str, lang: str = DEFAULT_LANG) -> str:
    """A raw caption -> its tokens joined by spaces, as ``lang`` cleans them (``serving/languages.py``).

    >>> clean_caption("A dog's ball, in 2 parks!")
    'a dogs ball in parks'
    >>> clean_caption("Ein Hund läuft über die Straße.", "de")
    'ein hund läuft über die straße'
    """
    return language(lang).clean(text)


@dataclass
class CaptionDataset:
    """Images with their captions and an image-level split."""

    image_dir: Path
    captions: dict[str, list[str]]  # image file name -> cleaned captions
    splits: dict[str, list[str]]  # "train" / "dev" / "test" -> image names (only images that exist)
    problems: list[str] = field(default_factory=list)  # human-readable notes on what was skipped
    missing_images: int = 0  # captions skipped because their image file is absent
    malformed_lines: int = 0
    name: str = ""  # the dataset, from its caption file ("Flickr8k", "Flickr30k"); "" when built in code
    lang: str = DEFAULT_LANG  # the captions' language (ISO 639-1)
    truecase: dict[str, str] = field(default_factory=dict)  # lower-case token -> written form (German)

    def image_path(self, name: str) -> Path:
        return self.image_dir / name

    def split_names(self, split: str) -> list[str]:
        if split not in self.splits:
            raise DataError(f"no {split!r} split in {self.image_dir.parent} "
                            f"(available: {', '.join(sorted(self.splits)) or 'none'})")
        return self.splits[split]

    def facts(self, held_out: list[str] | tuple[str, ...] = ()) -> dict:
        """Name, caption language and sizes, as recorded in training summaries and model cards.

        ``held_out``: training images held out to choose decoding settings (counted under "held_out").
        """
        def size(names) -> dict:
            names = [n for n in names if n in self.captions]
            return {"images": len(names), "captions": sum(len(self.captions[n]) for n in names)}

        facts = {"name": self.name or self.image_dir.parent.name, "lang": self.lang,
                 **size(self.captions), "splits": {split: size(names) for split, names in self.splits.items()}}
        if held_out:
            facts["held_out"] = size(held_out)
        return facts

    def summary(self) -> str:
        parts = [f"{len(self.captions)} images", f"{sum(map(len, self.captions.values()))} captions"]
        parts += [f"{k}={len(v)}" for k, v in self.splits.items()]
        if self.missing_images:
            parts.append(f"{self.missing_images} captions skipped (image missing)")
        if self.malformed_lines:
            parts.append(f"{self.malformed_lines} malformed lines skipped")
        return ", ".join(parts)


def default_data_dir() -> Path | None:
    """``CAPTIONER_DATA``, else ``../shared/flickr8k`` beside a source checkout if it exists, else None."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    if (PROJECT_ROOT / "pyproject.toml").is_file() and SIBLING_DATA.is_dir():
        return SIBLING_DATA
    return None


def resolve_data_dir(root: str | Path | None = None) -> Path:
    """The dataset folder: ``root`` (``--data``), else ``default_data_dir()``; DataError when none is found."""
    if root is not None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(f"{root}: data directory not found")
        return root
    found = default_data_dir()
    if found is None:
        raise DataError(f"no dataset folder: pass --data DIR or set {DATA_ENV}=DIR (a folder holding e.g. "
                        f"Flickr8k.token.txt and images/); the default {SIBLING_DATA} does not exist")
    if not found.is_dir():
        raise DataError(f"{found}: data directory not found (from {DATA_ENV}; pass --data DIR or fix {DATA_ENV})")
    return found


def find_image_dir(root: Path) -> Path:
    for name in IMAGE_DIR_NAMES:
        if (root / name).is_dir():
            return root / name
    raise DataError(f"{root}: no images folder (looked for {', '.join(IMAGE_DIR_NAMES)})")


def load_dataset(root: str | Path | None = None, lang: str = DEFAULT_LANG) -> CaptionDataset:
    """Read whichever supported layout ``root`` (default: ``resolve_data_dir()``) holds; DataError if none.

    ``lang`` other than English reads ``i18n/<lang>/Flickr8k.token.txt`` (same photos, same splits) and
    cleans the captions the way that language is modelled."""
    root = resolve_data_dir(root)
    lang_spec = language(lang)
    if lang_spec.code == DEFAULT_LANG:
        found = next(((f, d, n) for f, d, n in CAPTION_FILES if (root / f).is_file()), None)
        if found is None:
            raise DataError(f"{root}: no caption file (expected {', '.join(f for f, _, _ in CAPTION_FILES)})")
    else:
        found = (lang_spec.captions_file, None, "Flickr8k")
        if not (root / lang_spec.captions_file).is_file():
            raise DataError(f"{root}: no {lang_spec.name} captions ({lang_spec.captions_file} is missing); "
                            f"see ../shared/flickr8k/i18n/README.md for the expected layout")
    caption_file, delimiter, dataset_name = found
    if delimiter is None:
        raw, bad, problems = _read_token_file(root / caption_file)
    else:
        raw, bad, problems = _read_csv_captions(root / caption_file, delimiter=delimiter)
    image_dir = find_image_dir(root)
    present = {p.name for p in image_dir.iterdir()}
    captions: dict[str, list[str]] = {}
    missing = 0
    for name, caps in raw.items():
        if name not in present:
            missing += len(caps)
            continue
        cleaned = [c for c in map(lang_spec.clean, caps) if c]
        if cleaned:
            captions[name] = cleaned
    if missing:
        problems.append(f"{missing} captions skipped: their image is not in {image_dir}")
    if not captions:
        raise DataError(f"{root}: no usable captions (every caption line was malformed or had no image)")
    splits = _read_splits(root, captions, problems)
    truecase = {}
    if lang_spec.restores_case:  # written forms learned from the training captions only
        truecase = truecase_table((c for n in splits.get("train", []) for c in raw[n]), lang_spec)
    return CaptionDataset(image_dir, captions, splits, problems, missing, bad, name=dataset_name,
                          lang=lang_spec.code, truecase=truecase)


def _read_token_file(path: Path) -> tuple[dict[str, list[str]], int, list[str]]:
    """``IMAGE#N<TAB>caption`` lines (Flickr8k.token.txt and Flickr30k's results_20130124.token)."""
    captions: dict[str, list[str]] = {}
    bad_lines: list[int] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            image_id, sep, caption = line.partition("\t")
            name, hash_sep, _ = image_id.rpartition("#")
            if not sep or not hash_sep or not caption.strip():
                bad_lines.append(lineno)
                continue
            captions.setdefault(name.strip(), []).append(caption.strip())
    return captions, len(bad_lines), _bad_line_note(path, bad_lines)


def _read_csv_captions(path: Path, delimiter: str) -> tuple[dict[str, list[str]], int, list[str]]:
    """Kaggle ``captions.txt`` (``image,caption``) or Flickr30k ``results.csv`` (``image| n| caption``)."""
    captions: dict[str, list[str]] = {}
    bad_lines: list[int] = []
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter, skipinitialspace=True)
        header = [h.strip().lower() for h in next(reader, [])]
        image_col = next((i for i, h in enumerate(header) if h.startswith("image")), None)
        caption_col = next((i for i, h in enumerate(header) if h in ("caption", "comment")), None)
        if image_col is None or caption_col is None:
            raise DataError(f"{path}: header {header!r} lacks an image and a caption/comment column")
        for row in reader:
            lineno = reader.line_num
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) <= max(image_col, caption_col) or not row[caption_col].strip():
                bad_lines.append(lineno)
                continue
            # A caption containing the delimiter splits into extra cells: join them back.
            caption = delimiter.join(row[caption_col:]) if caption_col == len(header) - 1 else row[caption_col]
            captions.setdefault(row[image_col].strip(), []).append(caption.strip())
    return captions, len(bad_lines), _bad_line_note(path, bad_lines)


def _bad_line_note(path: Path, bad_lines: list[int]) -> list[str]:
    if not bad_lines:
        return []
    shown = ", ".join(map(str, bad_lines[:10])) + (" …" if len(bad_lines) > 10 else "")
    return [f"{path.name}: {len(bad_lines)} malformed lines skipped (lines {shown})"]


def _read_splits(root: Path, captions: dict[str, list[str]], problems: list[str]) -> dict[str, list[str]]:
    """Official split files when present; otherwise a deterministic 80/10/10 split by image hash.

    Images in no official split join ``train`` (they are neither dev nor test images).
    """
    named = {split: root / fname for split, fname in SPLIT_FILES.items() if (root / fname).is_file()}
    if named:
        splits: dict[str, list[str]] = {}
        for split, path in named.items():
            listed = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
            kept = [n for n in listed if n in captions]
            if len(kept) < len(listed):
                problems.append(f"{path.name}: {len(listed) - len(kept)} listed images have no captions or file")
            splits[split] = kept
        assigned = {n for names in splits.values() for n in names}
        extra = sorted(n for n in captions if n not in assigned)
        splits.setdefault("train", [])
        splits["train"] = splits["train"] + extra
        return splits

    def bucket(name: str) -> int:
        return int(hashlib.md5(name.encode()).hexdigest(), 16) % 10

    names = sorted(captions)
    problems.append("no split files: using a deterministic 80/10/10 split by image-name hash")
    return {"train": [n for n in names if bucket(n) < 8], "dev": [n for n in names if bucket(n) == 8],
            "test": [n for n in names if bucket(n) == 9]}
