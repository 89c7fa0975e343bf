"""End to end in a real headless Chromium: start `streamlit run app.py`, upload, read the caption,
press speak, check the <audio> element is playable, and keep a screenshot in artifacts/."""
from __future__ import annotations

import pytest

from browser_session import ARTIFACTS, caption_in_browser, new_browser, streamlit_server
from conftest import ASSETS


@pytest.fixture(scope="module")
def server(xception_weights):
    with streamlit_server() as (url, log_path):
        yield url, log_path


def test_upload_caption_and_listen_in_chromium(server):
    from captioner import Captioner

    url, _ = server
    [expected] = Captioner.load(allow_download=False).caption([ASSETS / "cat.jpg"])
    driver = new_browser()
    try:
        shown = caption_in_browser(driver, url, ASSETS / "cat.jpg")
        assert shown["caption"] == expected.hedged.rstrip(".").lower()  # "maybe a man …": the band in words
        assert shown["alt"].rstrip(".").lower() == expected.sentence.lower()  # warning and hedged caption
        assert shown["warning"] and shown["warning"].startswith("This doesn't look like the photos")
        assert shown["audio_src"] and shown["audio_duration_s"] > 0.3, "the <audio> element has no playable source"
        assert shown["voice"].startswith("Voice used:")
        ARTIFACTS.mkdir(exist_ok=True)
        assert driver.save_screenshot(str(ARTIFACTS / "app-screenshot.png"))
    finally:
        driver.quit()


def test_german_caption_and_german_audio_in_chromium(server):
    """Pick "Deutsch" in the real page: the caption is the German model's, and the audio the page plays is
    the German voice reading it."""
    from captioner import Captioner
    from captioner.serving.speech import espeak_speak

    url, _ = server
    german = Captioner.load(lang="de", allow_download=False)
    [expected] = german.caption([ASSETS / "dog-field.jpg"])
    driver = new_browser()
    try:
        shown = caption_in_browser(driver, url, ASSETS / "dog-field.jpg", language="Deutsch")
        assert shown["heading"] == expected.hedged  # e.g. "Ein Hund läuft über eine Wiese."
        assert shown["alt"] == expected.sentence
        assert shown["voice"].startswith("Stimme:") and "Deutsch" in shown["voice"]  # the page speaks German too
        assert shown["audio_duration_s"] > 0.3
        if "espeak" in shown["voice"]:  # offline: as long as the German voice takes to say that sentence
            from test_app import wav_seconds

            assert abs(wav_seconds(shown["audio"]) / wav_seconds(espeak_speak(expected.sentence, "de")) - 1) < 0.03
        ARTIFACTS.mkdir(exist_ok=True)
        assert driver.save_screenshot(str(ARTIFACTS / "app-screenshot-de.png"))
    finally:
        driver.quit()
