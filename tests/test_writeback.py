"""Writing captions back (`write xmp|exif|alt`, `caption --write`): every description written is read back
with a second, independent reader (minidom for XMP, Pillow for EXIF/PNG text, lxml and markdown-it for
pages); pixels never change; a description a person wrote is never replaced without --force."""
from __future__ import annotations

import json
import shutil
import stat
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
        assert im.getexif()[0x010E] == "Caption 0."
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
