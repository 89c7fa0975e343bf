"""Writing captions back where other software reads them: XMP sidecars, the photo's own EXIF/XMP, alt text.

Three targets, one function each, and ``write`` to dispatch:

* ``xmp`` (the default, the safest): a sidecar ``photo.jpg.xmp`` beside the photo; the photo is not touched.
* ``exif``: the description inside the file (EXIF ImageDescription and an XMP packet), JPEG and PNG only,
  by rewriting metadata segments/chunks: the compressed pixel data is copied byte for byte, never
  re-encoded. A backup ``photo.jpg.bak`` is kept unless ``backup=False``.
* ``alt``: missing or empty ``alt`` of ``<img>`` (HTML, and inline in Markdown) and ``![](path)`` (Markdown)
  whose image is a local file with a caption; only those bytes of the page change. An HTML ``<img>`` whose
  caption is in another language than the page (``<html lang>``; undeclared counts as English) also gets
  ``lang="de"`` (etc.), so a screen reader reads it with the right voice; Markdown's ``![]()`` has no
  place for one.

The caption written is the record's ``"caption"``: the sentence as it is said to users (hedged by its
band, after the out-of-domain warning). In XMP it is marked as ours (``captioner:generated``) with its
confidence, band, in-domain flag, the decoder's own words and the text read in the picture
(``captioner:readText``, ``captioner:kind``), so that a later run can replace it while a description a
person wrote is never overwritten unless ``force``. Alt text takes the record's ``"short_caption"`` when it
has one (the sentence quoting only the first line of text read in the picture).

We do not set IPTC ``DigitalSourceType`` to ``trainedAlgorithmicMedia``: that property describes the
picture, and would label the photo itself as AI-generated. Only the caption is machine-made.

Every file gets a ``WriteResult``: written, skipped (why) or failed (why); one file failing never stops
the others.
"""
from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import os
import re
import shutil
import stat
import struct
import tempfile
import zlib
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import unquote, urlsplit
from xml.etree import ElementTree as ET

from .batch import iter_images

TARGETS = ("xmp", "exif", "alt")
PAGE_SUFFIXES = {".html", ".htm", ".xhtml", ".md", ".markdown"}

WRITTEN, WOULD_WRITE, SKIPPED, FAILED = "written", "would write", "skipped", "failed"

NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "Iptc4xmpCore": "http://iptc.org/std/Iptc4xmpCore/1.0/xmlns/",
    "captioner": "urn:x-captioner:xmp:1.0/",
}
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
XMP_APP1_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
EXIF_APP1_HEADER = b"Exif\x00\x00"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Placeholders cameras write into ImageDescription: no person wrote them, so they may be replaced.
CAMERA_PLACEHOLDERS = {"olympus digital camera", "sony dsc", "digital camera", "default", "samsung camera pictures"}


@dataclass
class WriteOptions:
    force: bool = False  # replace a description or alt text a person wrote
    dry_run: bool = False  # report what would change, write nothing
    backup: bool = True  # exif: keep photo.jpg.bak (the first original is never overwritten)
    follow_links: bool = False  # write through symbolic links that stay inside the folder given (never out of it)


@dataclass
class WriteResult:
    path: Path
    status: str  # written, would write (dry run), skipped, failed
    reason: str = ""
    backup: Path | None = None

    @property
    def failed(self) -> bool:
        return self.status == FAILED

    def __str__(self) -> str:
        return f"{self.status}: {self.path}" + (f" ({self.reason})" if self.reason else "")


class _Skip(Exception):
    """Nothing to write for this file, and that is not an error."""


class _Fail(Exception):
    """This file could not be written."""


class _Refuse(_Fail):
    """Writing this file would follow a link out of its folder, or write through a link not allowed to."""


# ------------------------------------------------------------------------------------------ captions

def load_captions(path: Path) -> dict[Path, dict]:
    """The records of a ``caption --out`` file (.jsonl or .csv), keyed by resolved image path (relative
    image paths are resolved against the current folder, where ``caption`` was run). Later lines win."""
    path = Path(path)
    records: dict[Path, dict] = {}
    with open(path, encoding="utf-8", newline="") as fh:
        if path.suffix.lower() == ".csv":
            rows = [{k: v for k, v in row.items() if v not in (None, "")} for row in csv.DictReader(fh)]
        else:
            rows = []
            for line in fh:
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue  # a line cut short by an interrupted run
    for row in rows:
        if isinstance(row, dict) and row.get("image"):
            records[_key(row["image"])] = row
    return records


def _key(path) -> Path:
    return Path(os.path.abspath(os.path.expanduser(str(path))))


def _caption_of(record: dict | None, short: bool = False) -> str:
    """The sentence to write (``short``: the record's short form, which quotes only the first line of
    text read in the picture, when it has one), or _Skip saying why there is none."""
    if record is None:
        raise _Skip("no caption for it in the captions file")
    if record.get("error"):
        raise _Skip(f"captioning failed: {record['error']}")
    caption = ((short and record.get("short_caption")) or record.get("caption") or "").strip()
    if not caption:
        raise _Skip("empty caption")
    return caption


# C0 and C1 controls (tab and newlines too: captions are one line), lone surrogates and the non-characters
# XML forbids: none of them may reach XMP, EXIF, PNG text or a page.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_NOT_TEXT = re.compile("[\ud800-\udfff\ufffe\uffff]")
# A BCP 47 language tag's shape: a 2-3 letter language (or i-/x- forms), then subtags of 1-8 letters/digits.
_LANG_TAG = re.compile(r"^(?:[A-Za-z]{2,3}|[ix])(?:-[A-Za-z0-9]{1,8})*$")


def clean_text(text: str) -> str:
    """``text`` with control characters turned into spaces and the code points XML forbids (lone
    surrogates, U+FFFE, U+FFFF) left out, runs of whitespace made one space: what is written into any file."""
    return " ".join(_CONTROL.sub(" ", _NOT_TEXT.sub("", text)).split())


def _clean_record(record: dict | None) -> dict | None:
    """A copy of a captions-file record fit to write: every text field through ``clean_text``; _Skip
    when its ``lang`` is not shaped like a language tag (a hand-made file could put markup there)."""
    if record is None:
        return None
    clean = {k: clean_text(v) if isinstance(v, str) else v for k, v in record.items()}
    if isinstance(record.get("read_text"), str):  # its lines stay lines (XML takes a newline)
        clean["read_text"] = "\n".join(filter(None, map(clean_text, record["read_text"].splitlines())))
    lang = clean.get("lang")
    if lang not in (None, "") and not (isinstance(lang, str) and _LANG_TAG.match(lang)):
        raise _Skip(f"the captions file gives {str(record.get('lang'))[:40]!r} as the language, "
                    "which is not a language tag (like en or de-CH)")
    return clean


# ------------------------------------------------------------------------------------------ XMP packets

def _register_namespaces(extra: dict[str, str] = {}) -> None:
    for prefix, uri in {**extra, **NS}.items():
        try:
            ET.register_namespace(prefix, uri)
        except ValueError:
            pass  # ns0-style prefixes ElementTree reserves


def _q(prefix: str, name: str) -> str:
    return f"{{{NS[prefix]}}}{name}"


def _parse_packet(data: bytes) -> ET.Element:
    """An XMP packet (with or without its <?xpacket?> wrapper), prefixes registered so they survive."""
    found: dict[str, str] = {}
    try:
        for _, (prefix, uri) in ET.iterparse(io.BytesIO(data), events=("start-ns",)):
            if prefix:
                found.setdefault(prefix, uri)
        root = ET.fromstring(data)
    except ET.ParseError as err:
        raise _Fail(f"existing XMP is not valid XML ({err}); left as is") from err
    _register_namespaces(found)
    return root


def _lang_alt_text(element: ET.Element | None) -> str:
    if element is None:
        return ""
    return " ".join(t.strip() for t in element.itertext() if t.strip())


def xmp_description(root: ET.Element) -> tuple[str, bool]:
    """(dc:description or Iptc4xmpCore:AltTextAccessibility text, whether captioner wrote it)."""
    text, ours = "", False
    for desc in root.iter(_q("rdf", "Description")):
        for name in (_q("dc", "description"), _q("Iptc4xmpCore", "AltTextAccessibility")):
            text = text or (desc.get(name) or "").strip() or _lang_alt_text(desc.find(name))
        flag = desc.get(_q("captioner", "generated")) or _lang_alt_text(desc.find(_q("captioner", "generated")))
        ours = ours or flag.strip().lower() == "true"
    return text, ours


def _lang_alt(parent: ET.Element, tag: str, text: str, lang: str) -> None:
    alt = ET.SubElement(ET.SubElement(parent, tag), _q("rdf", "Alt"))
    li = ET.SubElement(alt, _q("rdf", "li"), {XML_LANG: lang})
    li.text = text


def xmp_packet(record: dict, existing: bytes | None = None, force: bool = False) -> bytes:
    """The XMP packet describing ``record``'s caption, merged into ``existing`` (its other properties
    kept). _Skip when ``existing`` holds a description a person wrote and not ``force``."""
    caption = _caption_of(record)
    lang = record.get("lang") or "en"
    _register_namespaces()
    if existing and existing.strip():
        root = _parse_packet(existing)
        text, ours = xmp_description(root)
        if text and not ours and not force:
            raise _Skip("has a description a person wrote (use --force to replace it)")
        if text == caption and ours:
            raise _Skip("already has this caption")
        rdf = root if root.tag == _q("rdf", "RDF") else root.find(f".//{_q('rdf', 'RDF')}")
        if rdf is None:
            rdf = ET.SubElement(root, _q("rdf", "RDF"))
        ours_tags = {_q("dc", "description"), _q("Iptc4xmpCore", "AltTextAccessibility")}
        for desc in rdf.iter(_q("rdf", "Description")):
            for child in list(desc):
                if child.tag in ours_tags or child.tag.startswith(f"{{{NS['captioner']}}}"):
                    desc.remove(child)
            for name in list(desc.attrib):
                if name in ours_tags or name.startswith(f"{{{NS['captioner']}}}"):
                    del desc.attrib[name]
    else:
        root = ET.Element(_q("x", "xmpmeta"))
        rdf = ET.SubElement(root, _q("rdf", "RDF"))
    desc = ET.SubElement(rdf, _q("rdf", "Description"), {_q("rdf", "about"): ""})
    _lang_alt(desc, _q("dc", "description"), caption, lang)
    _lang_alt(desc, _q("Iptc4xmpCore", "AltTextAccessibility"), caption, lang)
    fields = {"generated": "True", "confidence": record.get("confidence"), "band": record.get("band"),
              "inDomain": record.get("in_domain"), "modelCaption": record.get("model_caption"),
              "readText": record.get("read_text"), "kind": record.get("kind")}
    for name, value in fields.items():
        if value is not None and value != "":
            value = str(value) if not isinstance(value, bool) else ("True" if value else "False")
            ET.SubElement(desc, _q("captioner", name)).text = value
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n' + body
            + '\n<?xpacket end="w"?>\n').encode("utf-8")


# ------------------------------------------------------------------------------------------ files

def _check_writable(path: Path) -> None:
    if not path.exists():
        raise _Fail("no such file")
    if not path.is_file():
        raise _Fail("not a file")
    mode = path.stat().st_mode
    if not mode & stat.S_IWUSR or not os.access(path, os.W_OK):
        raise _Fail("file is read-only")


def _replace(path: Path, data: bytes, like: Path | None = None) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, flushed to disk, its
    length checked, renamed over ``path`` (never half a file). Permissions (and for a backup, times) come
    from ``like``, else from the file replaced; a new file gets ordinary ones (0666 less the umask).
    ``path`` is written as named: callers pass what ``_guard`` allowed (a link is never followed here)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if os.path.getsize(tmp) != len(data):
            raise _Fail(f"{path.name} was not written whole; left as it was")
        if like is not None:
            shutil.copystat(like, tmp)
        elif path.exists():
            shutil.copymode(path, tmp)
        else:
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        _sync_folder(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process's umask (read without changing it where Linux says it, else set back at once)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _sync_folder(folder: Path) -> None:
    """Flush a folder's entry list, so a rename survives a power cut (not possible everywhere: ignored)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _guard(path: Path, root: Path, options: WriteOptions, write: bool) -> Path:
    """The path to read (``write`` False) or write for ``path``, found under the folder ``root`` the person
    gave: _Refuse when it (or a folder on the way) is a symbolic link that leads out of ``root``, dangling
    ones included, and when writing through a link that stays inside without ``follow_links``."""
    path, root = Path(path), Path(root)
    if not path.is_relative_to(root):
        root = path.parent
    real, inside = os.path.realpath(path), os.path.realpath(root)
    parts = path.relative_to(root).parts
    linked = any(os.path.islink(root.joinpath(*parts[:i + 1])) for i in range(len(parts)))
    if not linked:
        return path
    if os.path.commonpath([real, inside]) != inside:
        raise _Refuse(f"refused: {path.name} is a link to {real}, outside {root}; links out of the folder "
                      "are never followed")
    if write and not options.follow_links:
        raise _Refuse(f"refused: {path.name} is a symbolic link; not written through "
                      "(pass --follow-links to write through links that stay inside the folder)")
    return Path(real)


def _kind(data: bytes) -> str | None:
    return "JPEG" if data[:3] == b"\xff\xd8\xff" else "PNG" if data[:8] == PNG_SIGNATURE else None


def _image_data(data: bytes) -> bytes:
    """The compressed picture of a JPEG (from start of scan) or PNG (IHDR and IDAT chunks): the bytes
    write-back never changes. _Fail when the file's structure is damaged."""
    if _kind(data) == "JPEG":
        _segments, rest = _jpeg_segments(data)
        if not rest.rstrip(b"\x00").endswith(b"\xff\xd9"):
            raise _Fail("not a valid JPEG (no end-of-image marker)")
        return rest
    chunks = _png_chunks(data)
    if chunks[-1][0] != b"IEND":
        raise _Fail("not a valid PNG (no IEND chunk)")
    return b"".join(whole for kind, _, whole in chunks if kind in (b"IHDR", b"IDAT"))


def _backup_problem(backup: bytes, photo: bytes) -> str | None:
    """Why ``backup`` (an existing photo.jpg.bak) is not a backup of ``photo``, None when it is: non-empty,
    the same kind (JPEG/PNG), structurally whole (every segment or chunk, CRCs, end marker) and holding
    the very same compressed picture (write-back changes only metadata, so the original's must match)."""
    if not backup:
        return "empty"
    if _kind(backup) != _kind(photo):
        return f"not a {_kind(photo)}"
    try:
        same = _image_data(backup) == _image_data(photo)
    except _Fail as why:
        return f"damaged: {why}"
    return None if same else "a different picture"


def _backup(image: Path, real: Path, data: bytes, root: Path, options: WriteOptions) -> Path | None:
    """``image.bak`` holding ``data`` (the photo at ``real`` before it is rewritten), written atomically.
    The first original stays the backup; one left empty or cut short by a killed run is written again;
    one that is not a backup of this photo stops the write (nothing is lost)."""
    if not options.backup:
        return None
    backup = image.with_name(image.name + ".bak")
    target = _guard(backup, root, options, write=True)
    if os.path.lexists(target):
        if not os.path.isfile(target):
            raise _Fail(f"{backup.name} exists and is not a file; move it away or use --no-backup")
        old = Path(target).read_bytes()
        problem = _backup_problem(old, data)
        if problem is None:
            return backup
        if old and not data.startswith(old):  # anything but a copy cut short is kept for the person
            raise _Fail(f"{backup.name} exists but is not a backup of this photo ({problem}); "
                        "move it away or use --no-backup")
    _replace(target, data, like=real)
    if _backup_problem(Path(target).read_bytes(), data) is not None:
        raise _Fail(f"{backup.name} did not read back as a copy of the photo; the photo was left as it was")
    return backup


def _run(path: Path, work) -> WriteResult:
    try:
        return work()
    except _Skip as why:
        return WriteResult(path, SKIPPED, str(why))
    except _Fail as why:
        return WriteResult(path, FAILED, str(why))
    except OSError as err:
        return WriteResult(path, FAILED, err.strerror or str(err))
    except Exception as err:  # a file no writer foresaw must not stop the others
        return WriteResult(path, FAILED, f"unexpected {type(err).__name__}: {err}")


# ------------------------------------------------------------------------------------------ xmp sidecar

def sidecar_path(image: Path) -> Path:
    return Path(image).with_name(Path(image).name + ".xmp")


def write_xmp(image: Path, record: dict | None, options: WriteOptions = WriteOptions(),
              root: Path | None = None) -> WriteResult:
    """A sidecar ``photo.jpg.xmp`` for ``image`` (the photo itself is not touched). An existing sidecar
    (from Lightroom, darktable, …) keeps its other properties; its description is replaced only if
    captioner wrote it, or with ``force``; a photo whose own metadata holds a person's description gets
    none without ``force``. ``root``: the folder the person gave (default the image's own); no link out
    of it is followed."""
    image = Path(image)
    side = sidecar_path(image)
    root = Path(root) if root is not None else image.parent

    def work() -> WriteResult:
        clean = _clean_record(record)
        _caption_of(clean)
        photo = _guard(image, root, options, write=False)
        if not photo.is_file():
            raise _Fail("no such image")
        _protect(photo, options.force)
        target = _guard(side, root, options, write=True)
        existing = target.read_bytes() if target.exists() else None
        try:
            packet = xmp_packet(clean, existing, options.force)
        except _Fail:
            if not options.force:
                raise
            packet = xmp_packet(clean, None, True)
        if options.dry_run:
            return WriteResult(side, WOULD_WRITE, "update sidecar" if existing else "new sidecar")
        if target.exists():
            _check_writable(target)
        _replace(target, packet)
        return WriteResult(side, WRITTEN, _describe(clean))

    return _run(side, work)


def photo_description(data: bytes | Path) -> tuple[str, bool]:
    """(a description the photo's own metadata holds, whether captioner wrote it), read from the EXIF
    ImageDescription (camera placeholders do not count), PNG text ``Description``, IPTC-IIM
    Caption-Abstract (2:120, JPEG APP13 / TIFF) and XMP dc:description; ("", False) when there is none.
    A description is ours only when the XMP is marked ``captioner:generated`` and holds the same text.
    ``data``: the file's bytes, or its path (then only the headers are read)."""
    from PIL import Image, IptcImagePlugin

    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
            exif_text = _exif_description({"0th": {270: im.getexif().get(270, b"")}})
            # (PNG text before the image data, where writers put it: Image.text would decode the pixels)
            png_text = str(im.info.get("Description", "") if im.format == "PNG" else "")
            iptc = IptcImagePlugin.getiptcinfo(im) or {}
            xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
    except Exception:  # not a picture Pillow reads: nothing we know how to look into
        return "", False
    caption = iptc.get((2, 120), b"")
    caption = b" ".join(caption) if isinstance(caption, list) else caption
    iptc_text = caption.decode("utf-8", "replace") if isinstance(caption, bytes) else str(caption)
    xmp_text, ours = "", False
    if xmp:
        try:
            xmp_text, ours = xmp_description(_parse_packet(xmp.encode("utf-8") if isinstance(xmp, str) else xmp))
        except _Fail:
            pass
    texts = [t.strip("\x00 \t\r\n") for t in (exif_text, png_text, iptc_text, xmp_text)]
    human = next((t for t in texts if t and not (ours and clean_text(t) == clean_text(xmp_text))), "")
    if human:
        return human, False
    return (xmp_text, True) if ours and xmp_text else ("", False)


def _protect(data: bytes | Path, force: bool) -> None:
    """_Skip when the photo's own metadata holds a description a person wrote, unless ``force``."""
    text, ours = photo_description(data)
    if text and not ours and not force:
        raise _Skip(f"the photo has a description a person wrote ({text[:60]!r}; use --force to add ours)")


def _describe(record: dict) -> str:
    band = record.get("band")
    return f"{band} confidence {record.get('confidence')}" if band else ""


# ------------------------------------------------------------------------------------------ exif (in the file)

def write_exif(image: Path, record: dict | None, options: WriteOptions = WriteOptions(),
               root: Path | None = None) -> WriteResult:
    """The caption inside ``image``: EXIF ImageDescription plus an XMP packet (dc:description, marked as
    ours). JPEG: the Exif and XMP APP1 segments are replaced or added, every other byte kept. PNG: eXIf,
    iTXt ``Description`` and iTXt ``XML:com.adobe.xmp`` chunks, the image data chunks copied as they are.
    Other formats (HEIC, WebP, …): not supported, say so (use the xmp sidecar). ``root``: the folder the
    person gave (default the image's own); the photo and its backup are never reached through a link out
    of it, nor through any link without ``follow_links``."""
    image = Path(image)
    root = Path(root) if root is not None else image.parent

    def work() -> WriteResult:
        clean = _clean_record(record)
        _caption_of(clean)
        real = _guard(image, root, options, write=True)
        _check_writable(real)
        data = real.read_bytes()
        if data[:3] == b"\xff\xd8\xff":
            _protect(data, options.force)
            new = _jpeg_with_caption(data, clean, options.force)
        elif data[:8] == PNG_SIGNATURE:
            _protect(data, options.force)
            new = _png_with_caption(data, clean, options.force)
        else:
            raise _Skip("not supported for this format: exif writes JPEG and PNG; "
                        "use `write xmp` (a sidecar) for HEIC and other formats")
        if options.dry_run:
            return WriteResult(image, WOULD_WRITE, "description inside the file")
        backup = _backup(image, real, data, root, options)
        _replace(real, new)
        return WriteResult(image, WRITTEN, _describe(clean), backup)

    return _run(image, work)


def _exif_description(exif: dict) -> str:
    raw = exif.get("0th", {}).get(270, b"")
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    text = text.strip("\x00 \t\r\n")
    return "" if text.lower() in CAMERA_PLACEHOLDERS else text


def _check_human(exif_text: str, xmp: bytes | None, caption: str, force: bool) -> None:
    """_Skip when the file already has a description a person wrote (EXIF or XMP), unless ``force``."""
    xmp_text, ours = ("", False)
    if xmp:
        try:
            xmp_text, ours = xmp_description(_parse_packet(xmp))
        except _Fail:
            if not force:
                raise
    human = (xmp_text and not ours) or (exif_text and not (ours and exif_text == xmp_text))
    if human and not force:
        raise _Skip("has a description a person wrote (use --force to replace it)")
    if ours and exif_text == xmp_text == caption:
        raise _Skip("already has this caption")


def _new_exif(exif_bytes: bytes | None, caption: str) -> bytes:
    """The Exif payload (``Exif\\0\\0`` + TIFF) of ``exif_bytes`` with ImageDescription set, all else kept."""
    import piexif

    try:
        exif = piexif.load(exif_bytes) if exif_bytes else {"0th": {}, "Exif": {}, "GPS": {}, "1st": {},
                                                            "Interop": {}, "thumbnail": None}
    except Exception as err:  # piexif raises several kinds on damaged EXIF
        raise _Fail(f"existing EXIF cannot be read ({err}); left as is") from err
    exif["0th"] = {**exif.get("0th", {}), 270: caption.encode("utf-8")}
    try:
        new = piexif.dump(exif)
    except Exception as err:
        raise _Fail(f"existing EXIF cannot be rewritten ({err}); left as is") from err
    lost = sorted(_exif_tags(exif_bytes) - _exif_tags(new) - {("IFD0", 270)}) if exif_bytes else []
    if lost:  # piexif drops tags it has no name for: rather no caption than a photo missing some
        names = ", ".join(f"{ifd} 0x{tag:04X}" for ifd, tag in lost[:6]) + (" …" if len(lost) > 6 else "")
        raise _Skip(f"its EXIF has tags this writer cannot keep ({names}); left as is: "
                    "use `write xmp` (a sidecar) instead")
    return new


def _exif_tags(payload: bytes) -> set[tuple[str, int]]:
    """(IFD, tag) of every entry in an Exif payload, read with Pillow (independently of piexif); the
    pointers to sub-IFDs are left out (they are rewritten, not kept)."""
    from PIL import ExifTags, Image

    exif = Image.Exif()
    exif.load(payload)
    pointers = {0x8769, 0x8825, 0xA005}
    tags = {("IFD0", t) for t in exif if t not in pointers}
    for name, ifd in (("Exif", ExifTags.IFD.Exif), ("GPS", ExifTags.IFD.GPSInfo), ("IFD1", ExifTags.IFD.IFD1)):
        tags |= {(name, t) for t in exif.get_ifd(ifd) if t not in pointers}
    tags |= {("Interop", t) for t in exif.get_ifd(ExifTags.IFD.Interop)}
    return tags


def _jpeg_segments(data: bytes) -> tuple[list[bytes], bytes]:
    """(the marker segments after SOI up to the first SOS, the rest of the file from SOS on, unchanged)."""
    segments, i = [], 2
    while True:
        if i + 4 > len(data) or data[i] != 0xFF:
            raise _Fail("not a valid JPEG (damaged marker segments)")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xDA or marker == 0xD9:  # start of scan / end of image: the rest is copied
            return segments, data[i:]
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            segments.append(data[i:i + 2])
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if length < 2 or i + 2 + length > len(data):
            raise _Fail("not a valid JPEG (a segment runs past the end of the file)")
        segments.append(data[i:i + 2 + length])
        i += 2 + length


def _app1(payload: bytes) -> bytes:
    if len(payload) + 2 > 0xFFFF:
        raise _Fail("metadata too large for one JPEG segment")
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def _jpeg_with_caption(data: bytes, record: dict | None, force: bool) -> bytes:
    caption = _caption_of(record)
    segments, rest = _jpeg_segments(data)
    exif_i = next((k for k, s in enumerate(segments) if s[:2] == b"\xff\xe1" and s[4:10] == EXIF_APP1_HEADER), None)
    xmp_i = next((k for k, s in enumerate(segments) if s[:2] == b"\xff\xe1" and s[4:33] == XMP_APP1_HEADER), None)
    exif_payload = segments[exif_i][4:] if exif_i is not None else None
    xmp_payload = segments[xmp_i][33:] if xmp_i is not None else None
    import piexif

    try:
        old = piexif.load(exif_payload) if exif_payload else {}
    except Exception as err:
        raise _Fail(f"existing EXIF cannot be read ({err}); left as is") from err
    _check_human(_exif_description(old) if old else "", xmp_payload, caption, force)
    new_exif = _new_exif(exif_payload, caption)
    try:
        packet = xmp_packet(record, xmp_payload, True)
    except _Fail:
        packet = xmp_packet(record, None, True)  # --force over a damaged packet
    new_exif_seg, new_xmp_seg = _app1(new_exif), _app1(XMP_APP1_HEADER + packet)
    if exif_i is not None:
        segments[exif_i] = new_exif_seg
    else:  # after JFIF APP0 if there is one, else first
        at = 1 if segments and segments[0][:2] == b"\xff\xe0" else 0
        segments.insert(at, new_exif_seg)
        if xmp_i is not None and xmp_i >= at:
            xmp_i += 1
    if xmp_i is not None:
        segments[xmp_i] = new_xmp_seg
    else:
        at = next(k for k, s in enumerate(segments) if s is new_exif_seg) + 1
        segments.insert(at, new_xmp_seg)
    return data[:2] + b"".join(segments) + rest


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """[(type, data, the whole chunk as in the file)], CRCs checked."""
    chunks, i = [], 8
    while i < len(data):
        if i + 12 > len(data):
            raise _Fail("not a valid PNG (cut short)")
        length = struct.unpack(">I", data[i:i + 4])[0]
        kind, body = data[i + 4:i + 8], data[i + 8:i + 8 + length]
        whole = data[i:i + 12 + length]
        if len(whole) != 12 + length or zlib.crc32(kind + body) != struct.unpack(">I", whole[-4:])[0]:
            raise _Fail(f"not a valid PNG (damaged {kind.decode('latin-1')} chunk)")
        chunks.append((kind, body, whole))
        i += 12 + length
        if kind == b"IEND":
            break
    if not chunks or chunks[0][0] != b"IHDR":
        raise _Fail("not a valid PNG (no IHDR)")
    return chunks


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _itxt(keyword: str, text: str, lang: str = "") -> bytes:
    return _chunk(b"iTXt", keyword.encode("latin-1") + b"\x00\x00\x00" + lang.encode("ascii") + b"\x00\x00"
                  + text.encode("utf-8"))


def _png_text(kind: bytes, body: bytes) -> tuple[str, str]:
    """(keyword, text) of a tEXt, zTXt or iTXt chunk."""
    keyword, _, rest = body.partition(b"\x00")
    if kind == b"tEXt":
        return keyword.decode("latin-1"), rest.decode("latin-1")
    if kind == b"zTXt":
        return keyword.decode("latin-1"), zlib.decompress(rest[1:]).decode("latin-1")
    compressed, rest = rest[0], rest[2:]
    _lang, _, rest = rest.partition(b"\x00")
    _translated, _, text = rest.partition(b"\x00")
    return keyword.decode("latin-1"), (zlib.decompress(text) if compressed else text).decode("utf-8")


def _png_with_caption(data: bytes, record: dict | None, force: bool) -> bytes:
    caption = _caption_of(record)
    chunks = _png_chunks(data)
    texts: dict[str, str] = {}
    exif_payload = None
    replaced = set()
    for k, (kind, body, _) in enumerate(chunks):
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            try:
                key, text = _png_text(kind, body)
            except (zlib.error, UnicodeDecodeError, IndexError):
                continue
            if key in ("XML:com.adobe.xmp", "Description"):
                texts[key] = text
                replaced.add(k)
        elif kind == b"eXIf":
            exif_payload = body
            replaced.add(k)
    xmp = texts.get("XML:com.adobe.xmp")
    xmp_bytes = xmp.encode("utf-8") if xmp else None
    old_desc = texts.get("Description", "").strip()
    import piexif

    try:
        old_exif = piexif.load(EXIF_APP1_HEADER + exif_payload) if exif_payload else {}
    except Exception as err:
        raise _Fail(f"existing EXIF cannot be read ({err}); left as is") from err
    exif_text = _exif_description(old_exif) if old_exif else ""
    _check_human(exif_text or old_desc, xmp_bytes, caption, force)
    if exif_text and old_desc and exif_text != old_desc and not force:
        raise _Skip("has a description a person wrote (use --force to replace it)")
    new_exif = _new_exif(EXIF_APP1_HEADER + exif_payload if exif_payload else None, caption)
    try:
        packet = xmp_packet(record, xmp_bytes, True)
    except _Fail:
        packet = xmp_packet(record, None, True)
    lang = record.get("lang") or "en"
    new = [_chunk(b"eXIf", new_exif[len(EXIF_APP1_HEADER):]), _itxt("Description", caption, lang),
           _itxt("XML:com.adobe.xmp", packet.decode("utf-8"))]
    out = [PNG_SIGNATURE, chunks[0][2], *new]  # after IHDR: eXIf must come before IDAT
    out += [whole for k, (_, _, whole) in enumerate(chunks[1:], 1) if k not in replaced]
    return b"".join(out)


# ------------------------------------------------------------------------------------------ alt text

class _ImgFinder(HTMLParser):
    """Every <img> start tag: (offset in the text, its exact source text, its attributes); the page's
    declared language."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.tags: list[tuple[int, str, list[tuple[str, str | None]]]] = []
        self.page_lang: str | None = None  # the <html lang="..."> the page declares

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            line, col = self.getpos()
            self.tags.append((self._line_starts[line - 1] + col, self.get_starttag_text(), attrs))
        elif tag == "html" and self.page_lang is None:
            self.page_lang = dict(attrs).get("lang") or None

    handle_startendtag = handle_starttag


_ATTR = re.compile(r"""(?P<space>[\s/]*)(?P<name>[^\s"'>/=]+)(?P<value>\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'=<>`]+))?""")


def _attr_span(source: str, name: str) -> tuple[int, int] | None:
    """Where attribute ``name`` (name and value) is in an <img> start tag's source text, else None."""
    pos = len("<img")
    while (m := _ATTR.match(source, pos)) and m.end() > pos:
        if m.group("name").lower() == name:
            return m.start("name"), m.end()
        pos = m.end()
    return None


def _set_attr(source: str, name: str, value: str) -> str:
    """An <img> start tag's source with ``name="value"`` (already escaped) in place of the attribute's
    old value, or added at the end of the tag."""
    span = _attr_span(source, name)
    if span:
        return source[:span[0]] + f'{name}="{value}"' + source[span[1]:]
    end = len(source) - (2 if source.endswith("/>") else 1)
    pad = "" if source[end - 1].isspace() else " "
    return source[:end] + f'{pad}{name}="{value}"' + (" " if source.endswith("/>") and pad else "") + source[end:]


def _primary(lang: str | None) -> str | None:
    """"de" of "de-CH" (what decides the voice), lower case."""
    return lang.split("-")[0].strip().lower() or None if lang else None


_MD_IMAGE = re.compile(r"""!\[(?P<alt>(?:[^\]\\]|\\.)*)\]\((?P<dest>\s*(?:<[^>\n]*>|[^\s)]+))"""
                       r"""(?P<title>\s+(?:"[^"]*"|'[^']*'|\([^)]*\)))?\s*\)""")
_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})[^\n]*\n.*?(?:^\1?\2[`~]*[ \t]*$|\Z)", re.M | re.S)
_CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.S)


def _local_image(src: str, page: Path) -> Path | None:
    """The file ``src`` names, relative to ``page``'s folder; None for remote, data: and root-relative."""
    src = src.strip()
    if src.startswith("<") and src.endswith(">"):
        src = src[1:-1]
    parts = urlsplit(src)
    if parts.scheme and len(parts.scheme) > 1 or src.startswith("//") or not parts.path or src.startswith("/"):
        return None
    return _key(page.parent / unquote(parts.path))


def _mask_code(text: str) -> str:
    """``text`` with Markdown code (fenced blocks, inline spans) blanked out, same length and lines."""
    def blank(m):
        return re.sub(r"[^\n]", " ", m.group(0))

    return _CODE_SPAN.sub(blank, _FENCE.sub(blank, text))


def _md_escape(text: str) -> str:
    return re.sub(r"([\\\[\]])", r"\\\1", " ".join(text.split()))


def _md_unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", " ".join(text.split()))


ALT_MARK = "data-captioner-alt"  # on an <img> whose alt text captioner wrote: a digest of that text


def _alt_mark(text: str) -> str:
    """The ``data-captioner-alt`` value for alt text ``text``: a person who edits the alt text breaks the
    match, so their words count as theirs again."""
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()[:12]


def alt_edits(text: str, page: Path, captions: dict[Path, dict], force: bool = False,
              markdown: bool = False, ascii_only: bool = False) -> tuple[list[tuple[int, int, str]], dict[str, int]]:
    """The edits (start, end, replacement) that fill alt text in ``text``, and counts of what was seen.
    ``ascii_only`` (a page that is not UTF-8): other characters go in as character references."""
    counts = {"filled": 0, "kept": 0, "no caption": 0, "not local": 0, "already there": 0,
              "described by a person in the photo": 0}
    edits: list[tuple[int, int, str]] = []
    scan = _mask_code(text) if markdown else text
    described: dict[Path, bool] = {}  # image -> its own metadata holds a person's description

    def caption_for(src: str) -> tuple[str, str] | None:
        """(caption, its primary language) for a local image with one, else None (counted)."""
        image = _local_image(src, page)
        if image is None:
            counts["not local"] += 1
            return None
        try:
            record = _clean_record(captions.get(image))
        except _Skip:
            counts["invalid language tag"] = counts.get("invalid language tag", 0) + 1
            return None
        try:
            found = _caption_of(record, short=True), _primary(record.get("lang")) or "en"
        except _Skip:
            counts["no caption"] += 1
            return None
        if not force and image not in described:
            try:
                text, ours = photo_description(image) if image.is_file() else ("", False)
            except OSError:
                text, ours = "", False
            described[image] = bool(text) and not ours
        if not force and described[image]:
            counts["described by a person in the photo"] += 1
            return None
        return found

    finder = _ImgFinder(scan)
    finder.feed(scan)
    finder.close()
    page_lang = _primary(finder.page_lang) or "en"
    for start, source, attrs in finder.tags:
        values = dict(attrs)
        alt = values.get("alt")
        ours = bool(alt and alt.strip()) and values.get(ALT_MARK) == _alt_mark(alt)
        if alt is not None and alt.strip() and not force and not ours:
            counts["kept"] += 1
            continue
        if not values.get("src") or (found := caption_for(values["src"])) is None:
            continue
        caption, caption_lang = found
        if text[start:start + len(source)] != source:
            continue  # a position we cannot trust: leave the tag alone
        tag_lang = _primary(values.get("lang")) or page_lang
        if ours and " ".join(alt.split()) == caption and tag_lang == caption_lang:
            counts["already there"] += 1
            continue
        value = html.escape(caption, quote=True)
        if ascii_only:
            value = value.encode("ascii", "xmlcharrefreplace").decode("ascii")
        new = _set_attr(_set_attr(source, "alt", value), ALT_MARK, _alt_mark(caption))
        # A screen reader reads alt text in the element's language: mark a caption in another language
        # than the page's (an undeclared page counts as English) so it switches voice.
        if tag_lang != caption_lang:
            new = _set_attr(new, "lang", html.escape(caption_lang, quote=True))
        edits.append((start, start + len(source), new))
        counts["filled"] += 1
    if markdown:
        for m in _MD_IMAGE.finditer(scan):
            alt = m.group("alt")
            if alt.strip() and not force:
                # Markdown has no place for a mark: alt text equal to the caption is taken for ours
                record = captions.get(_local_image(m.group("dest"), page) or Path("/"))
                if record and _md_unescape(alt) == clean_text(str(record.get("caption") or "")):
                    counts["already there"] += 1
                else:
                    counts["kept"] += 1
                continue
            if (found := caption_for(m.group("dest"))) is None:
                continue
            value = _md_escape(found[0])
            if ascii_only:  # Markdown reads character references in alt text as HTML does
                value = value.encode("ascii", "xmlcharrefreplace").decode("ascii")
            edits.append((m.start("alt"), m.end("alt"), value))
            counts["filled"] += 1
    return sorted(edits), counts


_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.I)


def page_is_utf8(raw: bytes) -> bool:
    """True when a page may take UTF-8 text: it decodes as UTF-8 and declares no other charset (a
    ``<meta charset>`` in its first 1024 bytes, HTML's own rule). Otherwise captions go in as ASCII with
    character references, which every ASCII-compatible charset reads the same."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    declared = _CHARSET.search(raw[:1024])
    return declared is None or declared.group(1).decode("ascii").lower().replace("_", "-") in ("utf-8", "utf8")


def write_alt(page: Path, captions: dict[Path, dict], options: WriteOptions = WriteOptions(),
              root: Path | None = None) -> WriteResult:
    """Fill missing or empty alt text (or alt text captioner wrote before, marked ``data-captioner-alt``)
    in one HTML or Markdown page; every other byte stays as it was. ``root``: the folder the person gave
    (default the page's own); a page reached through a link is written only as ``write_exif`` allows."""
    page = Path(page)
    root = Path(root) if root is not None else page.parent

    def work() -> WriteResult:
        if page.suffix.lower() not in PAGE_SUFFIXES:
            raise _Skip("not an HTML or Markdown page")
        real = _guard(page, root, options, write=True)
        _check_writable(real)
        raw = real.read_bytes()
        text = raw.decode("utf-8", "surrogateescape")  # bytes that are not UTF-8 come back unchanged
        utf8 = page_is_utf8(raw)
        markdown = page.suffix.lower() in (".md", ".markdown")
        edits, counts = alt_edits(text, page, captions, options.force, markdown, ascii_only=not utf8)
        summary = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
        if not edits:
            raise _Skip(summary or "no images")
        out, last = [], 0
        for start, end, new in edits:
            out += [text[last:start], new]
            last = end
        out.append(text[last:])
        if options.dry_run:
            return WriteResult(page, WOULD_WRITE, summary)
        _replace(real, "".join(out).encode("utf-8", "surrogateescape"))
        return WriteResult(page, WRITTEN, summary)

    return _run(page, work)


def iter_pages(inputs: Iterable[Path]) -> Iterator[Path]:
    """Pages given directly, and HTML/Markdown files found recursively (sorted) in folders given."""
    from .batch import iter_files

    return iter_files(inputs, PAGE_SUFFIXES)


# ------------------------------------------------------------------------------------------ dispatch

WRITERS = {"xmp": write_xmp, "exif": write_exif}


def write(target: str, captions: dict[Path, dict], paths: Iterable[Path] | None = None,
          options: WriteOptions = WriteOptions()) -> Iterator[WriteResult]:
    """Write ``captions`` (from ``load_captions``) to ``target`` (xmp, exif or alt), one result per file.

    xmp/exif: ``paths`` are images and folders (default: every image in ``captions``); an image without a
    caption is skipped. alt: ``paths`` are HTML/Markdown files and folders (required)."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
    if target == "alt":
        if not paths:
            raise ValueError("write alt needs the HTML or Markdown files (or folders) to fill in")
        for root, page in _under_roots(paths, iter_pages):
            yield write_alt(page, captions, options, root)
        return
    found = _under_roots(paths, iter_images) if paths else ((Path(i).parent, Path(i)) for i in sorted(captions))
    for root, image in found:
        yield WRITERS[target](image, captions.get(_key(image)), options, root)


def _under_roots(paths: Iterable[Path], walk) -> Iterator[tuple[Path, Path]]:
    """(the folder each file was given in, the file): a folder given is the root of what is found in it;
    a file given directly has its own folder as root. No link out of a root is ever followed."""
    for item in paths:
        item = Path(item)
        root = item if item.is_dir() else item.parent
        for found in walk([item]):
            yield root, found


def write_back(records: Iterable[dict], target: str, options: WriteOptions = WriteOptions()) -> Iterator[WriteResult]:
    """``caption --write``: write each ``result_record``'s caption back to its photo (an xmp sidecar or the
    photo's EXIF) as the records come; a failed image is skipped."""
    if target not in WRITERS:
        raise ValueError(f"caption --write takes {' or '.join(WRITERS)}, not {target!r}")
    for record in records:
        yield WRITERS[target](Path(record["image"]), record, options, Path(record["image"]).parent)
