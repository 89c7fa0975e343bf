"""Seeded, offline generator of pictures with known text, in five languages, for measuring text reading.

Four kinds, each as a plain picture and as a hard shot (turned, smaller, blurred, darker, compressed harder):

* ``sign``: a sign of one to three lines pasted in perspective onto a photo (a held-out training photo);
  the picture stays a photo with some text (kind "photo");
* ``label``: a product label filling the frame (kind "sign": a sign or label);
* ``document``: a letter's page of text photographed at an angle under uneven light (kind "document");
* ``screen``: a window or phone screen of text (kind "document").

The words are everyday text in English, German, Chinese, French and Spanish (below). Fonts are the
machine's own (``nonphotos.font_files``; Chinese needs a CJK font such as Debian's fonts-noto-cjk, and
``cjk_font`` says when there is none). Nothing generated here is committed.

    for sample in generate("de", 10, seed=7): sample.image, sample.text, sample.kind
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

from .nonphotos import _line_height, _text_width, _wrap, font_files

KINDS = ("sign", "label", "document", "screen")
EXPECTED_KIND = {"sign": "photo", "label": "sign", "document": "document", "screen": "document"}

SIGNS = {
    "en": ["PHARMACY", "Open until 9 pm", "EXIT", "No parking", "Bus stop", "Main Street", "Toilets", "Cash only",
           "Closed on Sunday", "Platform 2", "Fresh bread", "Welcome", "Push", "Keep right", "City Library"],
    "de": ["APOTHEKE", "Geöffnet bis 21 Uhr", "Ausgang", "Parken verboten", "Bahnhofstraße", "Bäckerei",
           "Nur Barzahlung", "Sonntag geschlossen", "Gleis 2", "Willkommen", "Ziehen", "Stadtbücherei", "Straße"],
    "zh": ["药店", "营业到晚上九点", "出口", "禁止停车", "公交车站", "中山路", "洗手间", "只收现金", "周日休息",
           "二号站台", "新鲜面包", "欢迎光临", "推", "靠右行", "市图书馆"],
    "fr": ["PHARMACIE", "Ouvert jusqu'à 21 h", "Sortie", "Stationnement interdit", "Arrêt de bus", "Rue de la Gare",
           "Boulangerie", "Espèces uniquement", "Fermé le dimanche", "Quai 2", "Bienvenue", "Tirez", "Bibliothèque"],
    "es": ["FARMACIA", "Abierto hasta las 21 h", "Salida", "Prohibido aparcar", "Parada de autobús", "Calle Mayor",
           "Panadería", "Solo efectivo", "Cerrado los domingos", "Andén 2", "Bienvenidos", "Empuje", "Biblioteca"],
}
LABELS = {
    "en": ["Ibuprofen 400 mg", "20 film-coated tablets", "Take one tablet with water", "Keep out of reach of children",
           "Whole milk", "Best before 12 May", "Organic tomato soup", "Store in a cool dry place", "Net weight 500 g"],
    "de": ["Ibuprofen 400 mg", "20 Filmtabletten", "Eine Tablette mit Wasser einnehmen", "Für Kinder unzugänglich",
           "Vollmilch", "Mindestens haltbar bis 12. Mai", "Tomatensuppe aus ökologischem Anbau", "Kühl und trocken lagern"],
    "zh": ["布洛芬缓释胶囊", "每盒二十粒", "每次一粒用水送服", "请放在儿童接触不到的地方", "全脂牛奶", "保质期至五月十二日",
           "有机番茄汤", "请存放在阴凉干燥处", "净含量五百克"],
    "fr": ["Ibuprofène 400 mg", "20 comprimés pelliculés", "Prendre un comprimé avec de l'eau", "Tenir hors de portée des enfants",
           "Lait entier", "À consommer avant le 12 mai", "Soupe de tomates bio", "Conserver au frais et au sec"],
    "es": ["Ibuprofeno 400 mg", "20 comprimidos recubiertos", "Tomar un comprimido con agua", "Mantener fuera del alcance de los niños",
           "Leche entera", "Consumir antes del 12 de mayo", "Sopa de tomate ecológica", "Conservar en lugar fresco y seco"],
}
SENTENCES = {
    "en": ["Dear Mrs Smith, your appointment at the eye clinic is on Tuesday at half past ten.",
           "Please bring your glasses and the letter from your doctor.", "The total amount due is 42 pounds.",
           "Call us if you need to change the date of your visit.", "Your new bank card will arrive within five days.",
           "The meeting will start at nine in the morning in room four.", "Thank you for your order and your patience."],
    "de": ["Sehr geehrte Frau Müller, Ihr Termin in der Augenklinik ist am Dienstag um halb elf.",
           "Bitte bringen Sie Ihre Brille und den Brief Ihres Arztes mit.", "Der fällige Gesamtbetrag beträgt 42 Euro.",
           "Rufen Sie uns an, wenn Sie den Termin ändern möchten.", "Ihre neue Bankkarte kommt in fünf Tagen.",
           "Die Besprechung beginnt um neun Uhr morgens in Raum vier.", "Vielen Dank für Ihre Bestellung und Geduld."],
    "zh": ["尊敬的王女士，您在眼科医院的预约时间是星期二上午十点半。", "请带上您的眼镜和医生的信。", "应付总金额为四十二元。",
           "如果您需要更改就诊日期，请给我们打电话。", "您的新银行卡将在五天内寄到。", "会议将于早上九点在四号房间开始。",
           "感谢您的订购和耐心等待。"],
    "fr": ["Chère Madame Martin, votre rendez-vous à la clinique des yeux est mardi à dix heures et demie.",
           "Veuillez apporter vos lunettes et la lettre de votre médecin.", "Le montant total dû est de 42 euros.",
           "Appelez-nous si vous devez changer la date de votre visite.", "Votre nouvelle carte bancaire arrivera sous cinq jours.",
           "La réunion commencera à neuf heures dans la salle quatre.", "Merci pour votre commande et votre patience."],
    "es": ["Estimada señora García, su cita en la clínica de los ojos es el martes a las diez y media.",
           "Por favor, traiga sus gafas y la carta de su médico.", "El importe total a pagar es de 42 euros.",
           "Llámenos si necesita cambiar la fecha de su visita.", "Su nueva tarjeta bancaria llegará en cinco días.",
           "La reunión empezará a las nueve de la mañana en la sala cuatro.", "Gracias por su pedido y su paciencia."],
}


@dataclass
class TextPicture:
    image: Image.Image
    text: str  # the words drawn, lines joined by newlines
    kind: str  # KINDS
    lang: str
    hard: bool = False

    @property
    def expected_kind(self) -> str:
        return EXPECTED_KIND[self.kind]


@lru_cache(maxsize=1)
def cjk_font() -> str | None:
    """A font file that draws Chinese (Noto CJK, WenQuanYi, ...), or None when the machine has none."""
    import glob

    for pattern in ("/usr/share/fonts/**/NotoSansCJK*.tt[cf]", "/usr/share/fonts/**/NotoSerifCJK*.tt[cf]",
                    "/usr/share/fonts/**/wqy*.tt[cf]", "/usr/share/fonts/**/*CJK*.tt[cf]"):
        found = sorted(glob.glob(pattern, recursive=True))
        if found:
            return found[0]
    return None


def _fonts(lang: str) -> list[str]:
    if lang == "zh":
        import glob

        found = sorted(glob.glob("/usr/share/fonts/**/Noto*CJK-Regular.tt[cf]", recursive=True)
                       + glob.glob("/usr/share/fonts/**/Noto*CJK-Bold.tt[cf]", recursive=True))
        if not found and cjk_font():
            found = [cjk_font()]
        if not found:
            raise RuntimeError("no CJK font on this machine: install Debian's fonts-noto-cjk (make browser)")
        return found
    files = [f for f in font_files() if any(k in Path(f).name.lower() for k in ("dejavu", "liberation"))
             and "mono" not in Path(f).name.lower() and "condensed" not in Path(f).name.lower()
             and "light" not in Path(f).name.lower()]
    return files or list(font_files())


def _font(rng, lang: str, size: int):
    files = _fonts(lang)
    return ImageFont.truetype(files[int(rng.integers(len(files)))], size)


def _wrap_any(draw, text: str, font, width: int, lang: str) -> list[str]:
    """Words wrapped to ``width`` (Chinese: character by character)."""
    if lang != "zh":
        return _wrap(draw, text, font, width)
    lines, line = [], ""
    for ch in text:
        if line and _text_width(draw, line + ch, font) > width:
            lines.append(line)
            line = ch
        else:
            line += ch
    return lines + ([line] if line else [])


def _pick(rng, items: list[str], n: int) -> list[str]:
    return [items[i] for i in rng.choice(len(items), size=min(n, len(items)), replace=False)]


def _perspective(img: Image.Image, rng, strength: float) -> Image.Image:
    """``img`` seen at an angle: its corners moved inwards by up to ``strength`` of its size."""
    w, h = img.size
    d = lambda s: float(rng.uniform(0, strength * s))  # noqa: E731
    quad = (d(w), d(h), d(w), h - d(h), w - d(w), h - d(h), w - d(w), d(h))  # TL, BL, BR, TR in the source
    return img.transform((w, h), Image.QUAD, quad, Image.BICUBIC, fillcolor=None)


def sign_in_photo(rng, lang: str, photo: Image.Image) -> TextPicture:
    """A sign of 1-3 lines pasted in perspective onto ``photo`` (scaled to about 1000 px wide)."""
    base = photo.convert("RGB").resize((1000, 750), Image.BICUBIC)
    lines = _pick(rng, SIGNS[lang], int(rng.integers(1, 4)))
    size = int(rng.integers(44, 72))
    font = _font(rng, lang, size)
    probe = ImageDraw.Draw(base)
    width = max(_text_width(probe, t, font) for t in lines) + size
    lh = _line_height(font)
    bg = tuple(int(v) for v in rng.choice([[250, 250, 245], [20, 90, 40], [30, 60, 150], [200, 30, 30], [250, 210, 40]]))
    ink = (20, 20, 20) if sum(bg) > 500 else (250, 250, 250)
    sign = Image.new("RGB", (width, lh * len(lines) + size // 2), bg)
    draw = ImageDraw.Draw(sign)
    for i, t in enumerate(lines):
        draw.text((size // 2, size // 4 + i * lh), t, font=font, fill=ink)
    sign = _perspective(sign.convert("RGBA"), rng, 0.12)
    if sign.width > 900:
        sign = sign.resize((900, int(sign.height * 900 / sign.width)))
    x = int(rng.integers(0, max(1, 1000 - sign.width)))
    y = int(rng.integers(0, max(1, 750 - sign.height)))
    base.paste(sign, (x, y), sign)
    return TextPicture(base, "\n".join(lines), "sign", lang)


def label(rng, lang: str) -> TextPicture:
    """A product label filling the frame: a large name and two or three smaller lines."""
    w, h = 900, 650
    bg = tuple(int(v) for v in rng.integers(190, 256, 3))
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    lines = _pick(rng, LABELS[lang], int(rng.integers(3, 5)))
    y = 60
    for i, t in enumerate(lines):
        font = _font(rng, lang, 64 if i == 0 else 40)
        while _text_width(draw, t, font) > w - 100 and font.size > 20:
            font = _font(rng, lang, font.size - 6)
        draw.text((50, y), t, font=font, fill=(15, 15, 40))
        y += _line_height(font) + 20
    img = _perspective(img, rng, 0.04).convert("RGB")
    return TextPicture(img, "\n".join(lines), "label", lang)


def document(rng, lang: str) -> TextPicture:
    """A page of text (down to about 60% of it) photographed at an angle under uneven light."""
    w, h = 1000, 1300
    paper = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(235, 256, 3)))
    draw = ImageDraw.Draw(paper)
    font = _font(rng, lang, int(rng.integers(30, 38)))
    lh = _line_height(font)
    lines: list[str] = []
    for s in _pick(rng, SENTENCES[lang], len(SENTENCES[lang])):  # a letter's worth: down to about 60% of the page
        if 90 + len(lines) * lh * 1.3 > 0.6 * h:
            break
        lines += _wrap_any(draw, s, font, w - 160, lang)
    for i, t in enumerate(lines):
        draw.text((80, 90 + i * lh * 1.3), t, font=font, fill=(20, 20, 25))
    page = _perspective(paper, rng, 0.07)
    table = Image.new("RGB", (w, h), (90, 70, 50))
    table.paste(page, (0, 0), page.convert("L").point(lambda v: 255 if v > 0 else 0))
    light = np.linspace(rng.uniform(0.6, 0.8), 1.05, w)[None, :, None] * np.linspace(1.0, rng.uniform(0.75, 0.9), h)[:, None, None]
    img = Image.fromarray(np.clip(np.asarray(table, np.float32) * light, 0, 255).astype(np.uint8))
    return TextPicture(img, "\n".join(lines), "document", lang)


def screen(rng, lang: str) -> TextPicture:
    """A window of text: a title bar and lines, light or dark theme."""
    w, h = 1100, 800
    dark = rng.random() < 0.4
    img = Image.new("RGB", (w, h), (30, 32, 36) if dark else (250, 250, 252))
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, w, 70], fill=(60, 90, 160))
    title_font = _font(rng, lang, 36)
    title = _pick(rng, SIGNS[lang], 1)[0]
    draw.text((30, 14), title, font=title_font, fill=(255, 255, 255))
    font = _font(rng, lang, int(rng.integers(28, 34)))
    lines: list[str] = []
    for s in _pick(rng, SENTENCES[lang], len(SENTENCES[lang])):  # until the window is about half full
        if 110 + len(lines) * _line_height(font) * 1.2 > 0.5 * h:
            break
        lines += _wrap_any(draw, s, font, w - 120, lang)
    for i, t in enumerate(lines):
        draw.text((50, 110 + i * _line_height(font) * 1.2), t, font=font,
                  fill=(230, 230, 230) if dark else (25, 25, 25))
    return TextPicture(img, "\n".join([title] + lines), "screen", lang)


def hard_shot(picture: TextPicture, rng) -> TextPicture:
    """The same picture taken badly: turned 4-8°, two thirds the size, blurred, darker, JPEG quality 30."""
    img = picture.image.convert("RGB")
    angle = float(rng.uniform(4, 8)) * (1 if rng.random() < 0.5 else -1)
    img = img.rotate(angle, Image.BICUBIC, expand=True, fillcolor=(120, 120, 120))
    img = img.resize((int(img.width * 0.67), int(img.height * 0.67)), Image.BILINEAR)
    img = img.filter(ImageFilter.GaussianBlur(0.8))
    img = ImageEnhance.Brightness(img).enhance(0.65)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=30)
    buf.seek(0)
    return TextPicture(Image.open(buf).convert("RGB"), picture.text, picture.kind, picture.lang, hard=True)


def generate(lang: str, n: int, seed: int = 0, photos: list[Path] = (), hard: bool = False) -> list[TextPicture]:
    """``n`` pictures in ``lang``, the kinds in turn (signs need ``photos`` to paste onto; without them
    signs are left out); ``hard``: each as a hard shot."""
    rng = np.random.default_rng([seed, sum(map(ord, lang))])
    out = []
    kinds = [k for k in KINDS if k != "sign" or photos]
    for i in range(n):
        kind = kinds[i % len(kinds)]
        if kind == "sign":
            picture = sign_in_photo(rng, lang, Image.open(photos[int(rng.integers(len(photos)))]))
        else:
            picture = {"label": label, "document": document, "screen": screen}[kind](rng, lang)
        out.append(hard_shot(picture, np.random.default_rng([seed, i, 99])) if hard else picture)  # same pictures
    return out
