"""Shared helpers for driving the real app in headless Chromium: start the server, open sessions,
upload, caption, speak. Used by test_browser.py, test_load.py and reliability_report.py."""
from __future__ import annotations

import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"


@contextmanager
def streamlit_server(log_name: str = "streamlit.log", start_timeout: float = 120.0):
    """Run ``streamlit run app.py`` on a free loopback port; yields (url, log path)."""
    from captioner.testing import ServerError, free_port, running_server

    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / log_name
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
               "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
               # no source watching: a served page never reloads, and watching the whole checkout can
               # overflow inotify while tests write files (the server then spins)
               "--server.fileWatcherType", "none"]
    try:
        server = running_server(command, f"http://127.0.0.1:{port}", "/_stcore/health", lambda body: body == b"ok",
                                start_timeout, log_path, {"TF_CPP_MIN_LOG_LEVEL": "2"}, cwd=ROOT, poll_s=0.5)
        with server as running:
            yield running.url, log_path
    except ServerError as err:
        raise RuntimeError(f"streamlit did not start (see {log_path}): {str(err).splitlines()[0]}") from err


def new_browser(extra_args: tuple[str, ...] = ()):
    """Headless Debian Chromium driven by Selenium (the flags keep it off the network); ``extra_args``: more
    Chromium flags (e.g. a fake camera: ``--use-fake-device-for-media-stream``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        raise RuntimeError("Chromium and ChromeDriver are needed: `make browser` installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--window-size=1400,1800", *extra_args):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver_path), options=options)


def click(driver, element, tries: int = 40) -> None:
    """Click ``element`` as a person would: scrolled into view, and again a moment later while something
    passing covers it (a redraw's fading element, a toast); one that stays covered still fails."""
    from selenium.common.exceptions import ElementClickInterceptedException

    for attempt in range(tries):
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
        try:
            element.click()
            return
        except ElementClickInterceptedException:
            if attempt == tries - 1:
                raise
            time.sleep(0.25)


def click_button(driver, wait, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    click(driver, wait.until(EC.element_to_be_clickable((By.XPATH, f"//button[contains(., '{text}')]"))))


def choose_option(driver, wait, label: str, option: str) -> None:
    """Pick ``option`` (its shown text) in the selectbox labelled ``label``, as a person would: open the
    list with its button, click the entry, and wait until the box shows it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    box = f"//div[@data-testid='stSelectbox'][.//input[@role='combobox' and @aria-label='{label}']]"
    opener = wait.until(EC.element_to_be_clickable((By.XPATH, f"{box}//button[@aria-label='Open']")))
    click(driver, opener)
    click(driver, wait.until(EC.element_to_be_clickable((By.XPATH, f"//*[@role='option'][contains(., '{option}')]"))))
    wait.until(lambda d: _some_selectbox_shows(d, option))


def _some_selectbox_shows(driver, option: str) -> bool:
    """True once a selectbox shows ``option``. Any box: choosing a language redraws the page in it, so the
    box's own label may have changed ("Language" -> "Sprache") by the time it shows the choice."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return any(option in (box.get_attribute("value") or "")
                   for box in driver.find_elements(By.XPATH, "//div[@data-testid='stSelectbox']//input"))
    except StaleElementReferenceException:  # redrawn while read: look again
        return False


def choose_radio(driver, wait, option: str) -> None:
    """Pick the radio option whose shown text is ``option`` (e.g. the offline voice), and wait until it is
    checked."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    label = f"//label[@data-testid='stRadioOption'][.//p[text()=\"{option}\"]]"
    click(driver, wait.until(EC.element_to_be_clickable((By.XPATH, label))))
    wait.until(lambda d: d.find_element(By.XPATH, f"{label}//input").is_selected())


def element_bytes(driver, selector: str) -> bytes:
    """The bytes behind the ``src`` of the first element matching the CSS ``selector`` (an <audio> or an
    <img>), fetched by the browser itself."""
    import base64

    encoded = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(document.querySelector(arguments[0]).src).then(r => r.arrayBuffer()).then(buf => {
            let s = ''; const b = new Uint8Array(buf);
            for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]);
            done(btoa(s));
        }).catch(e => done(''));""", selector)
    return base64.b64decode(encoded or "")


def audio_bytes(driver) -> bytes:
    """The bytes behind the page's first <audio> element, fetched by the browser itself."""
    return element_bytes(driver, "audio")


def caption_in_browser(driver, url: str, image: Path, speak: bool = True, timeout: float = 300,
                       language: str | None = None, voice: str | None = None) -> dict:
    """Open the page, (pick the caption ``language`` by its shown name), upload ``image``, caption it,
    optionally speak it (with ``voice``: "auto", "gtts" or "espeak", as picked in the sidebar; None leaves
    the page's default). Returns what the page showed and how long each part took."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from captioner.serving.languages import LANGUAGES
    from captioner.serving.page_words import page_words

    codes = {spec.native: code for code, spec in LANGUAGES.items()}
    w = page_words(codes[language] if language else "en")  # the page speaks the chosen language
    wait = WebDriverWait(driver, timeout)
    driver.get(url)
    if language:
        choose_option(driver, wait, page_words("en")["language"], language)  # the page opens in English
        # then it is drawn again in that language: upload only once it has been (the file input is new)
        wait.until(EC.presence_of_element_located((By.XPATH, f"//button[contains(., \"{w['describe_one']}\")]")))
    if voice:
        choose_radio(driver, wait, w[f"voice_{voice}"])
    upload = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "input[type='file']")))
    upload.send_keys(str(image))
    wait.until(EC.presence_of_element_located((By.XPATH, f"//*[contains(text(), '{image.name}')]")))
    start = time.perf_counter()
    click_button(driver, wait, w["describe_one"])
    heading = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "[data-testid='stMarkdownContainer'] h3")))
    result = {"caption": heading.text.strip(), "heading": heading.text.strip(),
              "caption_s": time.perf_counter() - start}
    img = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "[data-testid='stImage'] img")))
    result["alt"] = img.get_attribute("alt")
    warnings = driver.find_elements(By.XPATH, "//p[contains(text(), \"doesn't look like the photos\")]")
    result["warning"] = warnings[0].text if warnings else ""  # the out-of-domain warning above the caption
    if speak:
        start = time.perf_counter()
        click_button(driver, wait, w["speak"])
        audio = wait.until(EC.presence_of_element_located((By.TAG_NAME, "audio")))
        result["audio_src"] = audio.get_attribute("src")
        duration = 0.0
        for _ in range(120):  # until the browser has decoded the audio's metadata
            duration = driver.execute_script(
                "const a = document.querySelector('audio'); return a && a.readyState >= 1 ? a.duration : 0;") or 0.0
            if duration > 0:
                break
            time.sleep(0.25)
        result["audio_duration_s"] = duration
        result["speech_s"] = time.perf_counter() - start
        voice_line = w["voice_used"].split("{")[0].strip()  # "Voice used:", "Stimme:", ...
        voices = driver.find_elements(By.XPATH, f"//*[contains(text(), '{voice_line}')]")
        result["voice"] = voices[0].text if voices else ""
        result["audio"] = audio_bytes(driver)
    return result
