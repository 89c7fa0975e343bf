"""Photo-quality checks (captioner/serving/quality.py): blur, darkness and glare on pictures of known sharpness
and exposure, thresholds from one place, the advice in every caption language, the band cap, and a real
Captioner telling a person that a dark photo is dark."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw, ImageFilter

from captioner import Caption, CaptionResult
from captioner.serving import quality
from captioner.serving.confidence import Assessment
from captioner.serving.images import preprocess_image
from captioner.serving.languages import LANGUAGES
from captioner.serving.quality import (PROBLEMS, THRESHOLDS, Thresholds, cap_assessment, check_photo,
                                       check_pixels)
from captioner.serving.sentence import finish


def scene(side: int = 224, seed: int = 0, low: int = 30, high: int = 230) -> Image.Image:
    """A sharp, photo-like test picture: overlapping rectangles and discs of random greys between ``low``
    and ``high``, drawn with hard edges at any size (so it is as sharp at 2,000 px as at 224)."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (side, side), (128, 128, 128))
    draw = ImageDraw.Draw(img)
    for _ in range(60):
        x0, y0 = rng.uniform(0, side, 2)
        w, h = rng.uniform(side / 20, side / 4, 2)
        grey = int(rng.integers(low, high + 1))
        box = [x0, y0, x0 + w, y0 + h]
        (draw.ellipse if rng.random() < 0.4 else draw.rectangle)(box, fill=(grey, grey, grey))
    return img


def motion_blur(img: Image.Image, length: int) -> Image.Image:
    """A horizontal shake of ``length`` pixels (a moving average along rows)."""
    a = np.asarray(img, dtype=np.float64)
    padded = np.pad(a, ((0, 0), (length // 2, length - 1 - length // 2), (0, 0)), mode="edge")
    c = np.cumsum(np.pad(padded, ((0, 0), (1, 0), (0, 0))), axis=1)
    return Image.fromarray(np.round((c[:, length:] - c[:, :-length]) / length).astype(np.uint8))


def exposed(img: Image.Image, stops: float) -> Image.Image:
    """``img`` with ``stops`` more (or, negative, fewer) stops of light, clipped at white."""
    linear = (np.asarray(img, dtype=np.float64) / 255) ** 2.2 * 2.0 ** stops
    return Image.fromarray(np.round(np.clip(linear, 0, 1) ** (1 / 2.2) * 255).astype(np.uint8))


# ------------------------------------------------------------------------------------------- blur

def test_a_sharp_scene_is_fine_and_blur_grows_with_the_blur():
    sharp = scene()
    assert check_photo(sharp).problems == []
    measures = [check_photo(sharp.filter(ImageFilter.GaussianBlur(s))).blur for s in (0.5, 1.5, 3, 5)]
    assert measures == sorted(measures) and measures[0] > check_photo(sharp).blur
    assert check_photo(sharp.filter(ImageFilter.GaussianBlur(4))).problems == ["blurry"]


def test_a_shaken_photo_is_blurry_in_any_direction():
    sharp = scene(seed=1)
    assert check_photo(sharp).problems == []
    for angle in (0, 45, 90, 135):  # the shake along rows, turned
        shaken = motion_blur(sharp.rotate(angle, resample=Image.Resampling.BICUBIC), 21).rotate(-angle)
        assert "blurry" in check_photo(shaken).problems, angle


def test_blur_is_judged_relative_to_the_photo_size():
    """A phone-sized photo with the same edges is as sharp as a small one; blur scaled with it is caught."""
    small, big = scene(224, seed=2), scene(1792, seed=2)
    assert check_photo(small).problems == check_photo(big).problems == []
    assert check_photo(big.filter(ImageFilter.GaussianBlur(4 * 1792 / 224))).problems == ["blurry"]
    assert check_photo(big.filter(ImageFilter.GaussianBlur(2))).problems == []  # 2 px of 1,792 is nothing


def test_a_flat_picture_is_not_called_blurry():
    wall = Image.new("RGB", (300, 200), (140, 120, 100))
    assert check_photo(wall).problems == []


# --------------------------------------------------------------------------------------- exposure

def test_an_underexposed_shot_is_dark_but_a_night_scene_with_lights_is_not():
    assert check_photo(exposed(scene(seed=3), -4)).problems == ["dark"]
    assert check_photo(Image.new("RGB", (640, 480), (4, 4, 6))).problems == ["dark"]
    night = scene(seed=3, low=5, high=40)  # dark surroundings ...
    ImageDraw.Draw(night).ellipse([100, 40, 140, 80], fill=(255, 240, 200))  # ... and a street light
    assert "dark" not in check_photo(night).problems


def test_a_blown_out_or_glared_shot_is_bright_but_snow_with_people_is_not():
    assert check_photo(exposed(scene(seed=4), 3)).problems == ["bright"]
    glare = Image.blend(scene(seed=4), Image.new("RGB", (224, 224), (255, 255, 255)), 0.75)
    assert check_photo(glare).problems == ["bright"]
    snow = scene(seed=4, low=230, high=250)  # a snowfield ...
    ImageDraw.Draw(snow).rectangle([60, 80, 120, 200], fill=(20, 25, 40))  # ... with a skier in dark clothes
    assert check_photo(snow).problems == []


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), factor=st.floats(0.02, 1.0), low=st.integers(0, 200))
def test_making_a_photo_darker_never_makes_it_less_dark(seed, factor, low):
    pixels = preprocess_image(scene(96, seed=seed, low=low, high=min(255, low + 55)))
    darker = (pixels + 1.0) * factor - 1.0  # every pixel's light times ``factor``
    before, after = check_pixels(pixels), check_pixels(darker)
    assert after.bright_end <= before.bright_end + 1e-3
    assert "dark" in after.problems or "dark" not in before.problems


# ------------------------------------------------------------------------------ one place for lines

def test_every_threshold_comes_from_the_one_thresholds_value():
    assert dataclasses.is_dataclass(THRESHOLDS) and THRESHOLDS == Thresholds()
    with pytest.raises(dataclasses.FrozenInstanceError):
        THRESHOLDS.blur = 0.9  # type: ignore[misc]
    blurred, dark = scene().filter(ImageFilter.GaussianBlur(4)), exposed(scene(), -4)
    bright, glared = exposed(scene(), 3), Image.blend(scene(), Image.new("RGB", (224, 224), "white"), 0.75)
    # moving one line moves the verdict, and nothing else decides it
    assert check_photo(blurred, dataclasses.replace(THRESHOLDS, blur=1.01)).problems == []
    assert check_photo(blurred, dataclasses.replace(THRESHOLDS, blur_min_contrast=300)).problems == []
    assert check_photo(dark, dataclasses.replace(THRESHOLDS, dark_bright_end=0)).problems == []
    assert check_photo(scene(), dataclasses.replace(THRESHOLDS, dark_bright_end=256)).problems == ["dark"]
    no_bright = dataclasses.replace(THRESHOLDS, bright_dark_end=256, bright_clipped=1.01)
    assert check_photo(bright, no_bright).problems == check_photo(glared, no_bright).problems == []
    assert check_photo(bright, dataclasses.replace(THRESHOLDS, bright_dark_end=256)).problems == ["bright"]
    assert check_photo(glared, dataclasses.replace(THRESHOLDS, bright_clipped=1.01)).problems == ["bright"]
    assert check_photo(glared, dataclasses.replace(THRESHOLDS, bright_bright_end=256)).problems == []


def test_rendered_pages_and_charts_are_not_photos_with_a_problem():
    """A generated text page and a chart are mostly pure white, yet crisper than any camera photo: no advice."""
    from conftest import ASSETS

    for name in ("text-page.png", "chart.png"):
        q = check_photo(Image.open(ASSETS / name))
        assert q.clipped > THRESHOLDS.bright_clipped and q.blur < THRESHOLDS.rendered_blur, name
        assert q.problems == [], name
        assert "bright" in check_photo(Image.open(ASSETS / name), dataclasses.replace(THRESHOLDS, rendered_blur=0)).problems


def test_the_checks_read_any_picture_mode_and_reject_wrong_shapes():
    assert check_photo(Image.new("L", (50, 80), 2), dataclasses.replace(THRESHOLDS, rendered_blur=0)).problems == ["dark"]
    white = Image.new("RGBA", (50, 80), (255, 255, 255, 255))
    assert check_photo(white, dataclasses.replace(THRESHOLDS, rendered_blur=0)).problems == ["bright"]
    with pytest.raises(ValueError, match="expected .height, width, 3. pixels"):
        check_pixels(np.zeros((299, 299)))


# ------------------------------------------------------------------------------- words and the band

def test_every_language_advises_on_every_problem():
    for code, spec in LANGUAGES.items():
        assert set(spec.photo_advice) == set(PROBLEMS), code
        assert len(set(spec.photo_advice.values())) == len(PROBLEMS), code
    for problem in PROBLEMS:  # five different languages, five different sentences
        assert len({spec.photo_advice[problem] for spec in LANGUAGES.values()}) == len(LANGUAGES)


@pytest.mark.parametrize("lang", list(LANGUAGES))
def test_the_sentence_starts_with_the_problem_and_the_advice(lang):
    spec = LANGUAGES[lang]
    text = {"en": "a dog runs", "de": "Ein Hund läuft.", "zh": "一只狗在跑。", "fr": "Un chien court.",
            "es": "Un perro corre."}[lang]
    fine = CaptionResult("x.jpg", [Caption(text, -1.0, -0.5)], lang=lang,
                         assessment=Assessment(0.5, "medium", True))
    flawed = dataclasses.replace(fine, photo_problems=["blurry", "dark"])
    advice = [finish(spec.photo_advice["blurry"], lang), finish(spec.photo_advice["dark"], lang)]
    separator = "" if spec.separator == "" else " "
    assert flawed.sentence == separator.join(advice) + separator + fine.sentence
    assert flawed.sentence.startswith(advice[0]) and fine.hedged in flawed.sentence
    assert fine.advice == [] and flawed.advice == [spec.photo_advice["blurry"], spec.photo_advice["dark"]]


def test_a_flawed_photo_never_gets_a_high_band():
    high = 0.58
    sure = Assessment(0.91, "high", True)
    capped = cap_assessment(sure, ["blurry"], high)
    assert capped.band == quality.BAND_CAP == "medium"
    assert round(capped.confidence, 3) < high and capped.confidence >= 0.5  # under the line even when rounded
    assert cap_assessment(sure, [], high) is sure
    assert cap_assessment(None, ["dark"], high) is None
    low = Assessment(0.1, "low", False, "unlike the training photos")
    assert cap_assessment(low, ["dark"], high) is low


# ------------------------------------------------------------------------------- the real captioner

@pytest.mark.usefixtures("xception_weights")
def test_the_captioner_tells_a_person_the_photo_is_too_dark():
    from conftest import ASSETS

    from captioner import Captioner

    cap = Captioner.load(allow_download=False)
    photo = Image.open(ASSETS / "dog-field.jpg").convert("RGB")
    fine, dark, blurred = cap.caption([photo, exposed(photo, -4), photo.filter(ImageFilter.GaussianBlur(12))],
                                      cap.default_decode(beam_width=1))
    assert fine.photo_problems == [] and not fine.sentence.startswith("The photo")
    assert dark.photo_problems == ["dark"] and "blurry" in blurred.photo_problems
    for result in (dark, blurred):
        assert result.sentence.startswith(result.advice[0])
        assert result.assessment.band != "high"
        assert round(result.assessment.confidence, 3) < cap.confidence.calibrator.high
