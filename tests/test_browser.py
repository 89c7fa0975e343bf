"""End to end in a real headless Chromium: start `streamlit run app.py`, upload, read the caption,
press speak, check the <audio> element says the sentence, and keep a screenshot in artifacts/. Also: the
camera (Chromium's fake camera fed a photo), keyboard-only use, and several files at once."""
from __future__ import annotations

import pytest

from audio_checks import sounds_alike, wav_seconds
from browser_session import (ARTIFACTS, caption_in_browser, choose_radio, click_button, element_bytes, new_browser,
                             streamlit_server)
from conftest import ASSETS

WAIT_S = 300  # captioning on a busy 2-core machine; every wait ends as soon as its condition holds


@pytest.fixture(scope="module")
def server(xception_weights):
    with streamlit_server() as (url, log_path):
        yield url, log_path


@pytest.fixture(scope="module")
def library():
    from captioner import Captioner

    return Captioner.load(allow_download=False)


def test_upload_caption_and_listen_in_chromium(server, library):
    """The offline voice picked in the sidebar; catches audio that is not the sentence shown (the warning
    left out or said last, another caption): the page's <audio> lasts what espeak-ng takes for
    result.sentence, starts as the warning alone does and ends as the hedged caption alone does."""
    from captioner.serving.sentence import finish
    from captioner.serving.speech import espeak_speak

    url, _ = server
    [expected] = library.caption([ASSETS / "cat.jpg"])
    driver = new_browser()
    try:
        shown = caption_in_browser(driver, url, ASSETS / "cat.jpg", voice="espeak")
        assert shown["heading"] == expected.hedged  # "Maybe a man ….": the band in words, as prose
        assert shown["alt"] == expected.sentence  # the warning, then the hedged caption
        assert shown["warning"] and shown["warning"].startswith("This doesn't look like the photos")
        assert shown["audio_src"] and shown["audio_duration_s"] > 0.3, "the <audio> element has no playable source"
        assert shown["voice"].startswith("Voice used: espeak-ng")
        said = espeak_speak(expected.sentence, "en")
        assert wav_seconds(shown["audio"]) == pytest.approx(wav_seconds(said), rel=0.03)
        assert shown["audio_duration_s"] == pytest.approx(wav_seconds(said), rel=0.03)  # as the browser decoded it
        warning, hedged = espeak_speak(finish(expected.warning, "en"), "en"), espeak_speak(expected.hedged, "en")
        assert sounds_alike(shown["audio"], warning) > 0.9 and sounds_alike(shown["audio"], hedged, end=True) > 0.5  # 0.68-1.0 seen
        ARTIFACTS.mkdir(exist_ok=True)
        assert driver.save_screenshot(str(ARTIFACTS / "app-screenshot.png"))
    finally:
        driver.quit()


def test_german_caption_and_german_audio_in_chromium(server):
    """Pick "Deutsch" and the offline voice in the real page: the caption is the German model's, and the
    audio the page plays is the German voice reading it (as long as, and sounding like, espeak-ng's German
    voice saying result.sentence)."""
    from captioner import Captioner
    from captioner.serving.speech import espeak_speak

    url, _ = server
    german = Captioner.load(lang="de", allow_download=False)
    [expected] = german.caption([ASSETS / "dog-field.jpg"])
    driver = new_browser()
    try:
        shown = caption_in_browser(driver, url, ASSETS / "dog-field.jpg", language="Deutsch", voice="espeak")
        assert shown["heading"] == expected.hedged  # e.g. "Ein Hund läuft über eine Wiese."
        assert shown["alt"] == expected.sentence
        assert shown["voice"].startswith("Stimme:") and "Deutsch" in shown["voice"]  # the page speaks German too
        assert "espeak-ng" in shown["voice"]
        german_voice = espeak_speak(expected.sentence, "de")
        assert wav_seconds(shown["audio"]) == pytest.approx(wav_seconds(german_voice), rel=0.03)
        assert sounds_alike(shown["audio"], german_voice) > 0.9
        ARTIFACTS.mkdir(exist_ok=True)
        assert driver.save_screenshot(str(ARTIFACTS / "app-screenshot-de.png"))
    finally:
        driver.quit()


def _headings(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [h.text.strip() for h in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stMarkdownContainer'] h3")]


def test_several_files_at_once_get_one_caption_each(server, library):
    """Three photos chosen together in the file input: catches a page that captions only the first, repeats
    one caption, or shows them out of order: each heading is the library's caption of that file, in turn."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    files = [ASSETS / n for n in ("dog-field.jpg", "cameraman.jpg", "astronaut.jpg")]
    expected = [r.hedged for r in library.caption(files)]
    assert len(set(expected)) == 3  # three different captions, so a mix-up shows
    url, _ = server
    driver = new_browser()
    try:
        wait = WebDriverWait(driver, WAIT_S)
        driver.get(url)
        upload = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "input[type='file']")))
        assert upload.get_attribute("multiple") is not None
        upload.send_keys("\n".join(str(f) for f in files))  # one selection of three files
        click_button(driver, wait, "Describe 3 images")
        wait.until(lambda d: len(_headings(d)) == 3)
        assert _headings(driver) == expected
        names = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stCaptionContainer']")]
        assert [n for n in names if n in {f.name for f in files}] == [f.name for f in files]
    finally:
        driver.quit()


def test_keyboard_only_caption_and_speak(server, library):
    """No clicks: Tab moves the focus, Enter presses "Describe", arrow keys pick the offline voice and Space
    presses "Speak caption". Catches controls a keyboard cannot reach or press (a div made clickable, a
    focus trap): the caption is the library's and the audio says result.sentence."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from captioner.serving.speech import espeak_speak

    url, _ = server
    [expected] = library.caption([ASSETS / "dog-field.jpg"])
    driver = new_browser()
    try:
        wait = WebDriverWait(driver, WAIT_S)
        driver.get(url)
        upload = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "input[type='file']")))
        upload.send_keys(str(ASSETS / "dog-field.jpg"))  # choosing the file: the one step that is no key press
        wait.until(EC.presence_of_element_located((By.XPATH, "//*[contains(text(), 'dog-field.jpg')]")))
        wait.until(EC.element_to_be_clickable((By.XPATH, "//button[contains(., 'Describe the image')]")))

        def focus(matches: str, limit: int = 120) -> None:
            """Press Tab until the focused element satisfies the JS expression ``matches`` (on ``el``)."""
            driver.execute_script("document.activeElement && document.activeElement.blur(); window.focus();")
            for _ in range(limit):
                ActionChains(driver).send_keys(Keys.TAB).perform()
                if driver.execute_script(f"const el = document.activeElement; return !!(el && ({matches}));"):
                    return
            raise AssertionError(f"Tab never reached an element where {matches}")

        # the voice: Tab to the voice radio group (the focus lands on its checked option), then an arrow key
        # moves the choice on; the page redraws, so each step starts from a fresh Tab
        group = ("[...document.querySelectorAll('[role=radiogroup]')]"
                 ".find(g => g.innerText.includes('Offline (espeak-ng)'))")
        chosen = f"const g = {group}; const c = g && g.querySelector('input:checked'); return c ? c.closest('label').innerText : '';"
        for _ in range(3):
            before = driver.execute_script(chosen)
            if before == "Offline (espeak-ng)":
                break
            focus(f"el.type === 'radio' && {group} && {group}.contains(el)")
            ActionChains(driver).send_keys(Keys.ARROW_RIGHT).perform()
            wait.until(lambda d: d.execute_script(chosen) != before)
        assert driver.execute_script(chosen) == "Offline (espeak-ng)"
        focus("el.tagName === 'BUTTON' && el.innerText.includes('Describe the image') && !el.disabled")
        ActionChains(driver).send_keys(Keys.ENTER).perform()
        wait.until(lambda d: _headings(d) == [expected.hedged])
        focus("el.tagName === 'BUTTON' && el.innerText.includes('Speak caption')")
        ActionChains(driver).send_keys(Keys.SPACE).perform()
        wait.until(EC.presence_of_element_located((By.TAG_NAME, "audio")))
        wait.until(lambda d: d.execute_script("const a = document.querySelector('audio'); return a && a.readyState >= 1"))
        audio = element_bytes(driver, "audio")
        said = espeak_speak(expected.sentence, "en")
        assert wav_seconds(audio) == pytest.approx(wav_seconds(said), rel=0.03)
        assert sounds_alike(audio, said) > 0.9
    finally:
        driver.quit()


def _y4m(image, path, size=(640, 480)) -> None:
    """Write ``image`` as a one-frame YUV4MPEG2 video (4:2:0), the format Chromium's fake camera plays."""
    picture = image.convert("RGB").resize(size).convert("YCbCr")
    y, cb, cr = picture.split()
    half = (size[0] // 2, size[1] // 2)
    with open(path, "wb") as fh:
        fh.write(f"YUV4MPEG2 W{size[0]} H{size[1]} F30:1 Ip A1:1 C420jpeg\n".encode())
        fh.write(b"FRAME\n" + y.tobytes() + cb.resize(half).tobytes() + cr.resize(half).tobytes())


def test_camera_photo_is_captioned(server, library, tmp_path):
    """Chromium's fake camera plays a photo of a dog (a one-frame video): "Camera", take the photo, describe.
    Catches a camera path that captions nothing, a blank frame or another picture: the captured photo
    looks like the dog photo, and the caption is the library's caption of the very bytes the page sent."""
    import io

    import numpy as np
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    source = Image.open(ASSETS / "dog-field.jpg")
    video = tmp_path / "dog.y4m"
    _y4m(source, video)
    url, _ = server
    driver = new_browser(("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                          f"--use-file-for-fake-video-capture={video}"))
    try:
        wait = WebDriverWait(driver, WAIT_S)
        driver.get(url)
        choose_radio(driver, wait, "Camera")
        wait.until(lambda d: d.execute_script(
            "const v = document.querySelector(\"[data-testid='stCameraInput'] video\"); return v && v.readyState >= 2"))

        def photo_taken(d):
            """The captured photo once it is shown; until then press the shutter (a press before the stream is
            really live, or during a redraw, takes nothing, so it is pressed again on the next poll)."""
            from selenium.common.exceptions import WebDriverException

            photos = d.find_elements(By.CSS_SELECTOR, "[data-testid='stCameraInput'] img")
            if photos and photos[0].get_attribute("src"):
                return photos[0]
            try:
                button = d.find_element(By.CSS_SELECTOR, "[data-testid='stCameraInputButton']")
                if "Take Photo" in button.text:  # never "Clear photo"
                    button.click()
            except WebDriverException:  # not there yet, disabled or redrawn: try on the next poll
                pass
            return False

        WebDriverWait(driver, WAIT_S, poll_frequency=2).until(photo_taken)
        sent = element_bytes(driver, "[data-testid='stCameraInput'] img")
        captured = np.asarray(Image.open(io.BytesIO(sent)).convert("RGB").resize((64, 48)), dtype=float)
        original = np.asarray(source.convert("RGB").resize((64, 48)), dtype=float)
        assert np.abs(captured - original).mean() < 20, "the camera photo does not look like the video's picture"
        click_button(driver, wait, "Describe the image")
        wait.until(lambda d: len(_headings(d)) == 1)
        [expected] = library.caption([sent])
        assert _headings(driver) == [expected.hedged]
    finally:
        driver.quit()
