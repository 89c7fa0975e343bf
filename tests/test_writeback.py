"""Writing captions back (`write xmp|exif|alt`, `caption --write`): every description written is read back
with a second, independent reader (minidom for XMP, Pillow for EXIF/PNG text, lxml and markdown-it for
pages); pixels never change; a description a person wrote is never replaced without --force."""
from __future__ import annotations

import json
import os
import shutil
import stat
import struct
from pathlib import Path
from xml.dom import minidom

import numpy as np
import pytest
from PIL import Image

from captioner.cli import main
from captioner.serving import writeback as wb

ROOT = Path(__file__).resolve().parents[1]
DC = "http://purl.org/dc/elements/1.1/"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
OURS = "urn:x-captioner:xmp:1.0/"


def record(image, caption="Probably a dog runs on the grass.", **extra) -> dict:
    return {"image": str(image), "caption": caption, "confidence": 0.61, "band": "medium", "in_domain": True,
            "reason": None, "model_caption": caption.removeprefix("Probably ").rstrip(".").lower(),
            "score": -0.52, **extra}


def captions_file(tmp_path, *records) -> Path:
    path = tmp_path / "captions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def photo(tmp_path, name="photo.jpg", seed=0, **save) -> Path:
    """A noisy picture (so that any re-encoding would change its pixels)."""
    pixels = np.random.RandomState(seed).randint(0, 256, (48, 64, 3), dtype=np.uint8)
    path = tmp_path / name
    Image.fromarray(pixels).save(path, **save)
    return path


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def xmp_read(data: bytes | str) -> dict:
    """dc:description (text, lang) and our marker, read with minidom (the writer uses ElementTree)."""
    dom = minidom.parseString(data.strip() if isinstance(data, bytes) else data.strip().encode("utf-8"))
    [desc] = dom.getElementsByTagNameNS(DC, "description") or [None]
    li = desc.getElementsByTagNameNS(RDF, "li")[0] if desc else None
    marker = dom.getElementsByTagNameNS(OURS, "generated")
    conf = dom.getElementsByTagNameNS(OURS, "confidence")
    return {"description": li.firstChild.data if li else None, "lang": li.getAttribute("xml:lang") if li else None,
            "generated": marker[0].firstChild.data if marker else None,
            "confidence": float(conf[0].firstChild.data) if conf else None}


def jpeg_scan(path) -> bytes:
    """The compressed image data of a JPEG (from its start-of-scan marker): must never change."""
    data = Path(path).read_bytes()
    return data[data.index(b"\xff\xda"):]


def png_image_chunks(path) -> list[bytes]:
    return [whole for kind, _, whole in wb._png_chunks(Path(path).read_bytes()) if kind in (b"IHDR", b"IDAT")]


# ------------------------------------------------------------------------------------------ xmp sidecars

def test_xmp_sidecar_round_trip_leaves_the_photo_alone(tmp_path):
    image = photo(tmp_path)
    before = image.read_bytes()
    result = wb.write_xmp(image, record(image))
    assert result.status == "written" and result.path == tmp_path / "photo.jpg.xmp"
    read = xmp_read((tmp_path / "photo.jpg.xmp").read_bytes())
    assert read == {"description": "Probably a dog runs on the grass.", "lang": "en", "generated": "True",
                    "confidence": 0.61}
    assert image.read_bytes() == before
    assert wb.write_xmp(image, record(image)).status == "skipped"  # already there
    assert wb.write_xmp(image, record(image, "A cat.")).status == "written"  # ours: replaced
    assert xmp_read((tmp_path / "photo.jpg.xmp").read_bytes())["description"] == "A cat."


def test_xmp_uses_the_records_language(tmp_path):
    image = photo(tmp_path)
    wb.write_xmp(image, record(image, "Un chien.", lang="fr"))
    assert xmp_read((tmp_path / "photo.jpg.xmp").read_bytes())["lang"] == "fr"


HUMAN_SIDECAR = """<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/"
 xmp:Rating="4"><dc:description><rdf:Alt><rdf:li xml:lang="x-default">Grandma's garden, 1998</rdf:li></rdf:Alt>
</dc:description></rdf:Description></rdf:RDF></x:xmpmeta>"""


def test_xmp_never_replaces_a_persons_description_without_force(tmp_path):
    image = photo(tmp_path)
    side = tmp_path / "photo.jpg.xmp"
    side.write_text(HUMAN_SIDECAR)
    result = wb.write_xmp(image, record(image))
    assert result.status == "skipped" and "person" in result.reason
    assert side.read_text() == HUMAN_SIDECAR
    assert wb.write_xmp(image, record(image), wb.WriteOptions(force=True)).status == "written"
    text = side.read_text()
    assert xmp_read(text)["description"] == "Probably a dog runs on the grass."
    dom = minidom.parseString(text.strip().encode())  # the sidecar's other properties are kept
    assert any(d.getAttributeNS("http://ns.adobe.com/xap/1.0/", "Rating") == "4"
               for d in dom.getElementsByTagNameNS(RDF, "Description"))


# ------------------------------------------------------------------------------------------ exif

def test_exif_jpeg_round_trip_keeps_pixels_and_other_metadata(tmp_path):
    image = tmp_path / "photo.jpg"
    exif = Image.Exif()
    exif[0x010F] = "TestCam"  # Make
    Image.fromarray(pixels(photo(tmp_path, "src.jpg"))).save(image, exif=exif, quality=90)
    before, scan, decoded = image.read_bytes(), jpeg_scan(image), pixels(image)

    result = wb.write_exif(image, record(image))
    assert result.status == "written" and result.backup == tmp_path / "photo.jpg.bak"
    assert (tmp_path / "photo.jpg.bak").read_bytes() == before
    with Image.open(image) as im:  # read with Pillow; written with piexif and our own segment code
        assert im.getexif()[0x010E] == "Probably a dog runs on the grass."
        assert im.getexif()[0x010F] == "TestCam"
        assert xmp_read(im.info["xmp"])["description"] == "Probably a dog runs on the grass."
        assert im.info.get("jfif")  # the JFIF header survives
    assert jpeg_scan(image) == scan
    assert np.array_equal(pixels(image), decoded)


def test_exif_png_round_trip_keeps_pixels(tmp_path):
    image = photo(tmp_path, "photo.png")
    decoded, chunks = pixels(image), png_image_chunks(image)
    assert wb.write_exif(image, record(image)).status == "written"
    with Image.open(image) as im:
        im.load()
        assert im.getexif()[0x010E] == "Probably a dog runs on the grass."
        assert im.text["Description"] == "Probably a dog runs on the grass."
        assert xmp_read(im.text["XML:com.adobe.xmp"])["generated"] == "True"
    assert png_image_chunks(image) == chunks  # image data copied, not re-encoded
    assert np.array_equal(pixels(image), decoded)
    assert wb.write_exif(image, record(image, "A cat.")).status == "written"  # ours: replaced
    with Image.open(image) as im:
        assert im.getexif()[0x010E] == "A cat."


def test_exif_heic_is_not_supported_clearly_and_the_sidecar_works(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    image = tmp_path / "phone.heic"
    Image.new("RGB", (32, 32), (10, 120, 200)).save(image)
    before = image.read_bytes()
    result = wb.write_exif(image, record(image))
    assert result.status == "skipped" and "not supported for this format" in result.reason
    assert image.read_bytes() == before and not (tmp_path / "phone.heic.bak").exists()
    assert wb.write_xmp(image, record(image)).status == "written"


def test_exif_never_replaces_a_persons_description_without_force(tmp_path):
    image = tmp_path / "photo.jpg"
    exif = Image.Exif()
    exif[0x010E] = "Our wedding, Lisbon"
    Image.fromarray(pixels(photo(tmp_path, "src.jpg"))).save(image, exif=exif)
    before = image.read_bytes()
    result = wb.write_exif(image, record(image))
    assert result.status == "skipped" and "person" in result.reason
    assert image.read_bytes() == before
    assert wb.write_exif(image, record(image), wb.WriteOptions(force=True)).status == "written"
    with Image.open(image) as im:
        assert im.getexif()[0x010E] == "Probably a dog runs on the grass."


def test_camera_placeholder_description_is_not_a_persons(tmp_path):
    image = tmp_path / "photo.jpg"
    exif = Image.Exif()
    exif[0x010E] = "OLYMPUS DIGITAL CAMERA         "
    Image.fromarray(pixels(photo(tmp_path, "src.jpg"))).save(image, exif=exif)
    assert wb.write_exif(image, record(image)).status == "written"


def test_no_backup(tmp_path):
    image = photo(tmp_path)
    assert wb.write_exif(image, record(image), wb.WriteOptions(backup=False)).backup is None
    assert not (tmp_path / "photo.jpg.bak").exists()


# ------------------------------------------------------------------------------------------ alt text

PAGE = """<!doctype html>
<html><head><title>Trip</title>
<script>var s = '<img src="img/a.jpg">';</script></head>
<body>
  <!-- <img src="img/a.jpg"> -->
  <p>Intro &amp; more</p>
  <img src="img/a.jpg">
  <IMG SRC='img/b%20c.png' ALT="" width=10/>
  <img title="x alt y" src="img/a.jpg" class="wide">
  <img src="img/a.jpg" alt="A person's own words">
  <img src="https://example.com/remote.jpg">
  <img src="img/unknown.jpg">
</body></html>
"""


@pytest.fixture
def site(tmp_path):
    img = tmp_path / "img"
    img.mkdir()
    a, b = photo(img, "a.jpg"), photo(img, "b c.png", seed=1)
    caps = {wb._key(a): record(a, 'A dog & a "ball".'), wb._key(b): record(b, "A cat.")}
    page = tmp_path / "page.html"
    page.write_bytes(PAGE.replace("\n", "\r\n").encode())  # CRLF pages keep their line endings
    return tmp_path, caps, page


def test_alt_in_html_round_trip_touches_only_the_img_tags(site):
    lxml_html = pytest.importorskip("lxml.html")
    root, caps, page = site
    result = wb.write_alt(page, caps)
    assert result.status == "written" and "3 filled" in result.reason and "1 kept" in result.reason
    alts = [(img.get("src"), img.get("alt")) for img in lxml_html.fromstring(page.read_bytes()).iter("img")]
    assert alts == [("img/a.jpg", 'A dog & a "ball".'), ("img/b%20c.png", "A cat."),
                    ("img/a.jpg", 'A dog & a "ball".'), ("img/a.jpg", "A person's own words"),
                    ("https://example.com/remote.jpg", None), ("img/unknown.jpg", None)]
    dog, cat = wb._alt_mark('A dog & a "ball".'), wb._alt_mark("A cat.")  # marks: this alt text is ours
    expected = (PAGE.replace('<img src="img/a.jpg">\n  <IMG',
                             f'<img src="img/a.jpg" alt="A dog &amp; a &quot;ball&quot;." data-captioner-alt="{dog}">\n  <IMG')
                .replace("ALT=\"\" width=10/>", f'alt="A cat." width=10 data-captioner-alt="{cat}" />')
                .replace('class="wide">', f'class="wide" alt="A dog &amp; a &quot;ball&quot;." data-captioner-alt="{dog}">'))
    assert page.read_bytes() == expected.replace("\n", "\r\n").encode()  # every other byte as it was


def test_alt_force_replaces_a_persons_alt(site):
    lxml_html = pytest.importorskip("lxml.html")
    root, caps, page = site
    wb.write_alt(page, caps, wb.WriteOptions(force=True))
    assert "A person's own words" not in page.read_text()
    assert all(img.get("alt") for img in lxml_html.fromstring(page.read_bytes()).iter("img")
               if "img/a.jpg" in img.get("src"))


def test_alt_in_another_language_than_the_page_is_marked_with_its_language(tmp_path):
    lxml_html = pytest.importorskip("lxml.html")
    a, b = photo(tmp_path, "a.jpg"), photo(tmp_path, "b.jpg", seed=1)
    caps = {wb._key(a): record(a, "Wahrscheinlich: Ein Hund läuft über das Gras.", lang="de"),
            wb._key(b): record(b, "Probably a dog runs on the grass.", lang="en")}
    page = tmp_path / "page.html"
    page.write_text('<html lang="en-GB"><body><img src="a.jpg"><img src="b.jpg">'
                    '<img src="a.jpg" lang="fr"><img src="a.jpg" lang="de-AT"></body></html>', encoding="utf-8")
    assert "4 filled" in wb.write_alt(page, caps).reason
    imgs = [(img.get("src"), img.get("lang")) for img in lxml_html.fromstring(page.read_bytes()).iter("img")]
    # German alt on an English page: marked; English: not; a wrong lang replaced; a right one kept
    assert imgs == [("a.jpg", "de"), ("b.jpg", None), ("a.jpg", "de"), ("a.jpg", "de-AT")]

    german = tmp_path / "seite.html"
    german.write_text('<html lang="de"><body><img src="a.jpg"><img src="b.jpg"></body></html>', encoding="utf-8")
    wb.write_alt(german, caps)
    assert [img.get("lang") for img in lxml_html.fromstring(german.read_bytes()).iter("img")] == [None, "en"]


MARKDOWN = """# Trip

![](../img/a.jpg)
![ ](<../img/b c.png> "The title")
![Mine](../img/a.jpg)
Code: `![](../img/a.jpg)`

```
![](../img/a.jpg)
```

<img src="../img/b%20c.png">

![](https://example.com/x.png)
"""


def test_alt_in_markdown_round_trip(site):
    markdown_it = pytest.importorskip("markdown_it")
    lxml_html = pytest.importorskip("lxml.html")
    root, caps, _ = site
    (root / "notes").mkdir()
    page = root / "notes" / "trip.md"  # image paths relative to the page's own folder
    page.write_text(MARKDOWN)
    result = wb.write_alt(page, caps)
    assert result.status == "written" and "3 filled" in result.reason
    text = page.read_text()
    assert "Code: `![](../img/a.jpg)`" in text and "```\n![](../img/a.jpg)\n```" in text  # code untouched
    md = markdown_it.MarkdownIt("commonmark")
    images = [(t.attrGet("src"), t.content) for tok in md.parse(text) if tok.children
              for t in tok.children if t.type == "image"]
    assert images == [("../img/a.jpg", 'A dog & a "ball".'), ("../img/b%20c.png", "A cat."),
                      ("../img/a.jpg", "Mine"), ("https://example.com/x.png", "")]
    inline = [img.get("alt") for img in lxml_html.fromstring(md.render(text)).iter("img") if "%20" in img.get("src")]
    assert "A cat." in inline


# ------------------------------------------------------------------------------------------ command line

def test_dry_run_writes_nothing(site, capsys):
    root, caps, page = site
    a = root / "img" / "a.jpg"
    captions = captions_file(root, *caps.values())
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    for target, paths in [("xmp", []), ("exif", []), ("alt", [str(page)])]:
        assert main(["write", target, "--captions", str(captions), *paths, "--dry-run"]) == 0
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    out = capsys.readouterr().out
    assert f"would write: {a}.xmp" in out and f"would write: {a} " in out and f"would write: {page}" in out


def test_a_file_that_cannot_be_written_is_reported_and_the_rest_go_on(tmp_path, capsys):
    locked, fine, broken = photo(tmp_path, "locked.jpg"), photo(tmp_path, "fine.jpg", 1), tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF")  # cut short
    missing = tmp_path / "missing.jpg"
    captions = captions_file(tmp_path, *(record(p) for p in (locked, fine, broken, missing)),
                             {"image": str(tmp_path / "failed.jpg"), "error": "cannot decode"})
    locked.chmod(stat.S_IRUSR | stat.S_IRGRP)
    try:
        before = locked.read_bytes()
        assert main(["write", "exif", "--captions", str(captions)]) == 1
        out = capsys.readouterr().out
    finally:
        locked.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert f"failed: {locked} (file is read-only)" in out
    assert f"failed: {broken} (not a valid JPEG" in out
    assert f"failed: {missing} (no such file)" in out
    assert "skipped: " in out and "captioning failed: cannot decode" in out
    assert f"written: {fine}" in out and "1 written" in out
    assert locked.read_bytes() == before
    with Image.open(fine) as im:
        assert im.getexif()[0x010E] == "Probably a dog runs on the grass."


def test_write_only_the_paths_given_and_relative_captions(tmp_path, monkeypatch, capsys):
    photo(tmp_path, "a.jpg"), photo(tmp_path, "b.jpg", 1)
    monkeypatch.chdir(tmp_path)  # caption ran here: relative image paths
    captions = captions_file(tmp_path, record("a.jpg"), record("b.jpg"))
    assert main(["write", "xmp", "--captions", str(captions), "a.jpg"]) == 0
    assert (tmp_path / "a.jpg.xmp").exists() and not (tmp_path / "b.jpg.xmp").exists()
    assert main(["write", "alt", "--captions", str(captions)]) == 2  # alt needs pages
    assert "needs the HTML or Markdown" in capsys.readouterr().err


def test_caption_write_with_a_fake_model(monkeypatch, tmp_path, capsys):
    """`caption --write exif` (printed, and with --out): the library writes each result."""
    from test_cli_decoding import RecordingCaptioner

    import captioner

    monkeypatch.setattr(captioner.Captioner, "load", classmethod(lambda cls, *a, **k: RecordingCaptioner()))
    a, b = photo(tmp_path, "a.jpg"), photo(tmp_path, "b.png", 1, format="PNG")
    assert main(["caption", str(a), "--write", "exif", "--no-backup"]) == 0
    with Image.open(a) as im:
        assert im.getexif()[0x010E] == "Caption 0."  # the sentence as shown and spoken
    assert not (tmp_path / "a.jpg.bak").exists()
    assert main(["caption", str(b), "--out", str(tmp_path / "c.jsonl"), "--write", "xmp"]) == 0
    assert xmp_read((tmp_path / "b.png.xmp").read_bytes())["description"] == "Caption 0."
    assert f"written: {b}.xmp" in capsys.readouterr().err


def test_caption_write_xmp_with_the_real_model(tmp_path, xception_weights):
    image = tmp_path / "cameraman.jpg"
    shutil.copy(ROOT / "assets" / "cameraman.jpg", image)
    before = image.read_bytes()
    assert main(["caption", str(image), "--json", "--write", "xmp", "--weights", str(xception_weights[0])]) == 0
    read = xmp_read((tmp_path / "cameraman.jpg.xmp").read_bytes())
    assert read["description"] and read["generated"] == "True" and 0 <= read["confidence"] <= 1
    assert image.read_bytes() == before


def test_alt_in_a_page_that_is_not_utf8_keeps_its_bytes(tmp_path):
    lxml_html = pytest.importorskip("lxml.html")
    image = photo(tmp_path, "a.jpg")
    page = tmp_path / "old.html"
    raw = '<meta charset="iso-8859-1"><p>Caf\xe9</p><img src="a.jpg">'.encode("latin-1")
    page.write_bytes(raw)
    assert wb.write_alt(page, {wb._key(image): record(image, "Un café.")}).status == "written"
    mark = wb._alt_mark("Un café.").encode()
    assert page.read_bytes() == raw.replace(b'"a.jpg">', b'"a.jpg" alt="Un caf&#233;." data-captioner-alt="' + mark + b'">')
    [img] = lxml_html.fromstring(page.read_bytes().decode("latin-1")).iter("img")
    assert img.get("alt") == "Un café."


def test_alt_follows_a_declared_charset_even_when_the_bytes_are_ascii(tmp_path):
    """Catches UTF-8 bytes written into a page that declares another charset (its ASCII bytes also decode
    as UTF-8, so only the declaration tells): the caption goes in as character references."""
    image = photo(tmp_path, "a.jpg")
    page = tmp_path / "old.html"
    raw = b'<html><head><meta http-equiv="Content-Type" content="text/html; charset=windows-1252"></head>' \
          b'<img src="a.jpg"></html>'
    page.write_bytes(raw)
    assert wb.write_alt(page, {wb._key(image): record(image, "Un café.")}).status == "written"
    written = page.read_bytes()
    assert written.isascii() and b'alt="Un caf&#233;."' in written
    assert written.startswith(raw[:raw.index(b'<img')])  # every byte before the tag kept


def test_markdown_alt_in_a_page_that_is_not_utf8_goes_in_as_references(tmp_path):
    """Catches raw UTF-8 put into a Latin-1 Markdown page: the alt text is ASCII with references, every
    other byte kept."""
    image = photo(tmp_path, "a.jpg")
    page = tmp_path / "notes.md"
    raw = "Caf\xe9 photo: ![](a.jpg)\n".encode("latin-1")
    page.write_bytes(raw)
    assert wb.write_alt(page, {wb._key(image): record(image, "Un café.")}).status == "written"
    assert page.read_bytes() == raw.replace(b"![](a.jpg)", b"![Un caf&#233;.](a.jpg)")
    utf8_page = tmp_path / "notes-utf8.md"
    utf8_page.write_text("![](a.jpg)\n", encoding="utf-8")
    wb.write_alt(utf8_page, {wb._key(image): record(image, "Un café.")})
    assert utf8_page.read_text(encoding="utf-8") == "![Un café.](a.jpg)\n"  # a UTF-8 page takes the letters


def test_exif_through_a_symbolic_link_updates_the_photo_and_keeps_the_link(tmp_path):
    real = photo(tmp_path, "real.jpg")
    link = tmp_path / "link.jpg"
    link.symlink_to(real)
    before = real.read_bytes()
    refused = wb.write_exif(link, record(link), wb.WriteOptions(backup=False))  # only when asked for
    assert refused.status == "failed" and "--follow-links" in refused.reason and real.read_bytes() == before
    assert wb.write_exif(link, record(link), wb.WriteOptions(backup=False, follow_links=True)).status == "written"
    assert link.is_symlink()
    with Image.open(real) as im:
        assert im.getexif()[0x010E] == "Probably a dog runs on the grass."


# ------------------------------------------------------------------------------------------ hostile folders

def test_links_out_of_the_folder_are_never_followed(tmp_path, capsys):
    """A sidecar, a backup or a photo that is a link out of the folder given is refused (and reported),
    with and without --force and --follow-links; nothing outside the folder changes or appears."""
    outside, photos = tmp_path / "outside", tmp_path / "photos"
    outside.mkdir()
    photos.mkdir()
    foreign_xml = outside / "settings.xml"
    foreign_xml.write_text(HUMAN_SIDECAR.replace("Grandma's garden, 1998", ""))
    secret = outside / "secret.txt"
    secret.write_text("do not touch")
    d, e, c = photo(photos, "d.png", format="PNG"), photo(photos, "e.jpg", 1), photo(photos, "c.jpg", 2)
    (photos / "d.png.xmp").symlink_to(foreign_xml)
    (photos / "e.jpg.xmp").symlink_to(secret)
    (photos / "c.jpg.bak").symlink_to(outside / "created-by-us.jpg")  # dangling
    (photos / "far.jpg").symlink_to(photo(outside, "far.jpg", 3))
    captions = captions_file(tmp_path, *(record(p) for p in (d, e, c, photos / "far.jpg")))
    before = {p: p.read_bytes() for p in outside.iterdir()}
    photos_before = {p: p.read_bytes() for p in (d, e, c)}
    for flags in ([], ["--force"], ["--force", "--follow-links"]):
        assert main(["write", "xmp", "--captions", str(captions), str(photos), *flags]) == 1
        assert main(["write", "exif", "--captions", str(captions), str(photos), *flags]) == 1
        out = capsys.readouterr().out
        assert f"failed: {photos / 'd.png.xmp'} (refused: d.png.xmp is a link to {foreign_xml}, outside {photos}" in out
        assert f"failed: {photos / 'e.jpg.xmp'} (refused: e.jpg.xmp is a link to {secret}" in out
        assert f"failed: {photos / 'c.jpg'} (refused: c.jpg.bak is a link to" in out
        assert f"failed: {photos / 'far.jpg'} (refused: far.jpg is a link to" in out
    assert {p: p.read_bytes() for p in outside.iterdir()} == before  # nothing rewritten, nothing created
    assert {p: p.read_bytes() for p in (d, e, c)} == photos_before | {d: d.read_bytes(), e: e.read_bytes()}
    assert c.read_bytes() == photos_before[c]  # its backup could not be made, so the photo was left alone


def test_links_inside_the_folder_only_with_follow_links(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    real = photo(photos, "real.jpg")
    (photos / "alias.jpg").symlink_to(real)
    (photos / "real.jpg.xmp").write_text("")
    captions = captions_file(tmp_path, record(photos / "alias.jpg"))
    assert main(["write", "exif", "--captions", str(captions), str(photos / "alias.jpg")]) == 1
    assert "is a symbolic link; not written through (pass --follow-links" in capsys.readouterr().out
    assert main(["write", "exif", "--captions", str(captions), str(photos / "alias.jpg"), "--follow-links"]) == 0
    assert (photos / "alias.jpg").is_symlink()
    with Image.open(real) as im:
        assert im.getexif()[0x010E] == "Probably a dog runs on the grass."


def _kill_during(monkeypatch, name: str):
    """Make the write-back's atomic write die (like a kill) just before the rename of a file called ``name``."""
    real_replace = wb.os.replace

    def dying(src, dst, *a, **k):
        if Path(dst).name == name:
            raise KeyboardInterrupt  # not an Exception: nothing may catch it and carry on
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(wb.os, "replace", dying)


def test_backup_is_atomic_and_an_empty_or_cut_backup_is_redone(tmp_path, monkeypatch):
    image = photo(tmp_path)
    original = image.read_bytes()
    backup = tmp_path / "photo.jpg.bak"
    with monkeypatch.context() as m:
        _kill_during(m, "photo.jpg.bak")
        with pytest.raises(KeyboardInterrupt):
            wb.write_exif(image, record(image))
    assert not backup.exists() and image.read_bytes() == original  # no half backup, photo untouched
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # temporary file removed
    for left_by_a_kill in (b"", original[:len(original) // 3]):  # what a non-atomic copy could leave
        backup.write_bytes(left_by_a_kill)
        image.write_bytes(original)
        assert wb.write_exif(image, record(image)).status == "written"
        assert backup.read_bytes() == original  # redone: the backup is the whole original again
    assert wb.write_exif(image, record(image, "A cat.")).status == "written"
    assert backup.read_bytes() == original  # the first original stays the backup
    assert stat.S_IMODE(backup.stat().st_mode) == stat.S_IMODE(image.stat().st_mode)


def test_a_backup_of_another_picture_stops_the_write(tmp_path):
    image = photo(tmp_path)
    other = photo(tmp_path, "other.jpg", seed=5).read_bytes()
    (tmp_path / "photo.jpg.bak").write_bytes(other)
    before = image.read_bytes()
    result = wb.write_exif(image, record(image))
    assert result.status == "failed" and "is not a backup of this photo (a different picture)" in result.reason
    assert image.read_bytes() == before and (tmp_path / "photo.jpg.bak").read_bytes() == other
    (tmp_path / "photo.jpg.bak").write_text("my notes")  # not even a picture: kept, the photo too
    assert "not a JPEG" in wb.write_exif(image, record(image)).reason and image.read_bytes() == before


def test_new_sidecars_get_ordinary_permissions(tmp_path):
    image = photo(tmp_path)
    old = os.umask(0o022)
    try:
        wb.write_xmp(image, record(image))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "photo.jpg.xmp").stat().st_mode) == 0o644


def _jpeg_with_iptc_caption(path: Path, text: str) -> Path:
    """A JPEG whose only description is an IPTC-IIM Caption-Abstract (2:120) in a Photoshop APP13 block."""
    data = photo(path.parent, "iptc-src.jpg").read_bytes()
    iptc = b"\x1c\x02\x78" + struct.pack(">H", len(text.encode())) + text.encode()
    block = b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(iptc)) + iptc + b"\x00" * (len(iptc) % 2)
    payload = b"Photoshop 3.0\x00" + block
    path.write_bytes(data[:2] + b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload + data[2:])
    return path


def test_a_persons_description_anywhere_in_the_photo_protects_it_from_every_target(tmp_path):
    exif = Image.Exif()
    exif[0x010E] = "Our wedding, Lisbon"
    exif_photo = tmp_path / "exif.jpg"
    Image.fromarray(pixels(photo(tmp_path, "src.jpg"))).save(exif_photo, exif=exif)
    iptc_photo = _jpeg_with_iptc_caption(tmp_path / "iptc.jpg", "Grandpa at the harbour")
    xmp_photo = tmp_path / "xmp.png"
    Image.fromarray(pixels(exif_photo)).save(xmp_photo, pnginfo=_png_info("XML:com.adobe.xmp", HUMAN_SIDECAR))
    text_photo = tmp_path / "text.png"
    Image.fromarray(pixels(exif_photo)).save(text_photo, pnginfo=_png_info("Description", "Mum in 1970"))
    with Image.open(iptc_photo) as im:  # Pillow reads the IPTC caption we built
        from PIL import IptcImagePlugin
        assert IptcImagePlugin.getiptcinfo(im)[(2, 120)] == b"Grandpa at the harbour"
    page = tmp_path / "page.html"
    page.write_text('<img src="exif.jpg"><img src="iptc.jpg"><img src="xmp.png"><img src="text.png">')
    caps = {wb._key(p): record(p) for p in (exif_photo, iptc_photo, xmp_photo, text_photo)}
    for p in (exif_photo, iptc_photo, xmp_photo, text_photo):
        before = p.read_bytes()
        for writer in (wb.write_xmp, wb.write_exif):
            result = writer(p, record(p))
            assert result.status == "skipped" and "a person wrote" in result.reason, (p, writer, result)
        assert p.read_bytes() == before and not sidecar_exists(p)
    result = wb.write_alt(page, caps)
    assert result.status == "skipped" and "4 described by a person in the photo" in result.reason
    assert wb.write_xmp(iptc_photo, record(iptc_photo), wb.WriteOptions(force=True)).status == "written"
    assert wb.write_alt(page, caps, wb.WriteOptions(force=True)).status == "written"


def sidecar_exists(p: Path) -> bool:
    return wb.sidecar_path(p).exists()


def _png_info(key, text):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_itxt(key, text)
    return info


def test_a_hand_made_language_never_reaches_a_page_or_a_file(tmp_path):
    lxml_html = pytest.importorskip("lxml.html")
    image = photo(tmp_path, "a.jpg")
    evil = record(image, "Ein Hund.", lang='de" onerror="alert(1)')
    page = tmp_path / "page.html"
    page.write_text('<html lang="en"><body><img src="a.jpg"></body></html>')
    result = wb.write_alt(page, {wb._key(image): evil})
    assert result.status == "skipped" and "1 invalid language tag" in result.reason and "onerror" not in page.read_text()
    for writer in (wb.write_xmp, wb.write_exif):
        result = writer(image, evil)
        assert result.status == "skipped" and "not a language tag" in result.reason
    assert wb.write_alt(page, {wb._key(image): record(image, "Ein Hund.", lang="de-CH")}).status == "written"
    [img] = lxml_html.fromstring(page.read_bytes()).iter("img")
    assert (img.get("alt"), img.get("lang")) == ("Ein Hund.", "de")


def test_control_characters_never_reach_a_file_and_later_runs_read_our_own_files(tmp_path):
    image = photo(tmp_path, "a.png", format="PNG")
    nasty = record(image, "A dog\x00 runs\x07 on\x1b[31m the\u0085 grass\ufffe.\r\n", lang="en")
    assert wb.write_xmp(image, nasty).status == "written"
    assert wb.write_exif(image, nasty).status == "written"
    side = (tmp_path / "a.png.xmp").read_bytes()
    assert xmp_read(side)["description"] == "A dog runs on [31m the grass."  # well-formed: minidom reads it
    with Image.open(image) as im:
        im.load()
        assert xmp_read(im.text["XML:com.adobe.xmp"])["description"] == "A dog runs on [31m the grass."
        assert im.getexif()[0x010E] == "A dog runs on [31m the grass."
    assert wb.write_xmp(image, nasty).status == "skipped"  # already ours, read back without complaint
    assert wb.write_exif(image, record(image, "A cat.")).status == "written"  # ours: replaced


def test_exif_tags_piexif_does_not_know_are_kept_or_the_file_is_left_alone(tmp_path):
    image = tmp_path / "photo.jpg"
    exif = Image.Exif()
    exif[0x010F] = "TestCam"
    exif[0x9999] = "a maker's private tag"
    Image.fromarray(pixels(photo(tmp_path, "src.jpg"))).save(image, exif=exif)
    before = image.read_bytes()
    result = wb.write_exif(image, record(image))
    assert result.status == "skipped" and "cannot keep (IFD0 0x9999)" in result.reason and "write xmp" in result.reason
    assert image.read_bytes() == before and not (tmp_path / "photo.jpg.bak").exists()
    assert wb.write_xmp(image, record(image)).status == "written"


def test_alt_text_we_wrote_is_ours_and_replaced_but_a_persons_edit_is_kept(tmp_path):
    lxml_html = pytest.importorskip("lxml.html")
    a, b = photo(tmp_path, "a.jpg"), photo(tmp_path, "b.jpg", 1)
    page = tmp_path / "page.html"
    page.write_text('<img src="a.jpg"><img src="b.jpg">')
    assert "2 filled" in wb.write_alt(page, {wb._key(a): record(a), wb._key(b): record(b)}).reason
    assert "2 already there" in wb.write_alt(page, {wb._key(a): record(a), wb._key(b): record(b)}).reason
    page.write_text(page.read_text().replace('alt="Probably a dog runs on the grass." data-captioner-alt',
                                             'alt="Rex, our dog" data-captioner-alt', 1))  # a person edits one
    newer = {wb._key(a): record(a, "A dog."), wb._key(b): record(b, "A cat.")}
    result = wb.write_alt(page, newer)
    assert "1 filled" in result.reason and "1 kept" in result.reason
    assert [img.get("alt") for img in lxml_html.fromstring(page.read_bytes()).iter("img")] == ["Rex, our dog", "A cat."]


def test_write_back_from_a_csv_captions_file(tmp_path):
    """Catches a CSV captions file read wrongly (columns shifted, quoted commas split, empty cells taken
    for values): `caption --out x.csv` then `write xmp --captions x.csv` writes each photo's own sentence."""
    from captioner.serving.batch import append_records

    a, b = photo(tmp_path, "a.jpg"), photo(tmp_path, "b.jpg", 1)
    table = tmp_path / "captions.csv"
    tricky = 'Maybe a dog, "Rex", runs; the grass is wet.'
    append_records(table, [[record(a, tricky, lang="en", photo_problems=["dark"]),
                            record(b, "Ein Hund läuft.", lang="de", photo_problems=[])]], progress=False)
    captions = wb.load_captions(table)
    assert captions[wb._key(a)]["caption"] == tricky and captions[wb._key(b)]["lang"] == "de"
    assert "reason" not in captions[wb._key(a)]  # an empty cell is no value
    results = list(wb.write("xmp", captions, [tmp_path]))
    assert [r.status for r in results] == ["written", "written"]
    assert xmp_read((tmp_path / "a.jpg.xmp").read_bytes())["description"] == tricky
    read_b = xmp_read((tmp_path / "b.jpg.xmp").read_bytes())
    assert (read_b["description"], read_b["lang"]) == ("Ein Hund läuft.", "de")


def test_xmp_inside_a_jpeg_is_read_by_exiftool_with_its_language(tmp_path):
    """Catches an XMP packet other software cannot find or parse (wrong APP1 header, bad RDF, the
    language on the wrong element): ExifTool, an independent reader, sees our description in German."""
    import subprocess

    exiftool = shutil.which("exiftool")
    if exiftool is None:
        pytest.fail("exiftool is missing: `make browser` installs Debian's libimage-exiftool-perl")
    image = photo(tmp_path, "hund.jpg")
    caption = "Wahrscheinlich: Ein Hund läuft über die Wiese."
    assert wb.write_exif(image, record(image, caption, lang="de"), wb.WriteOptions(backup=False)).status == "written"
    proc = subprocess.run([exiftool, "-json", "-lang", "de", "-XMP-dc:Description", "-EXIF:ImageDescription",
                           "-charset", "utf8", str(image)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    [tags] = json.loads(proc.stdout)
    assert tags["ImageDescription"] == caption
    full = subprocess.run([exiftool, "-json", "-XMP-dc:Description-de", str(image)], capture_output=True,
                          text=True, timeout=60)
    [lang_tags] = json.loads(full.stdout)
    assert lang_tags.get("Description-de") == caption, lang_tags  # the alternative is tagged xml:lang="de"
