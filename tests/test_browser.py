"""End to end in a real headless Chromium: start `streamlit run app.py`, upload, read the caption,
press speak, check the <audio> element is playable, and keep a screenshot in artifacts/."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import ASSETS, ROOT

ARTIFACTS = ROOT / "artifacts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(xception_weights):
    port = _free_port()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / "streamlit.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true",
                             "--browser.gatherUsageStats", "false"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("streamlit did not start within 120 s (see artifacts/streamlit.log)")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.fail("Chromium and ChromeDriver are needed: `make browser` installs them (Debian packages)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--window-size=1400,1800", "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def _click_button(driver, wait, text: str):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    button = wait.until(EC.element_to_be_clickable((By.XPATH, f"//button[contains(., '{text}')]")))
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
    button.click()


def test_upload_caption_and_listen_in_chromium(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from captioner import Captioner

    wait = WebDriverWait(browser, 240)
    browser.get(server)
    upload = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "input[type='file']")))
    upload.send_keys(str(ASSETS / "cat.jpg"))
    wait.until(EC.presence_of_element_located((By.XPATH, "//*[contains(text(), 'cat.jpg')]")))
    _click_button(browser, wait, "Describe the image")
    heading = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "[data-testid='stMarkdownContainer'] h3")))
    shown = heading.text.strip().rstrip(".").lower()
    expected = Captioner.load(allow_download=False).caption([ASSETS / "cat.jpg"], beam_width=3)[0].text
    assert shown == expected
    image = browser.find_element(By.CSS_SELECTOR, "[data-testid='stImage'] img, [data-testid='stFullScreenFrame'] img")
    assert image.get_attribute("alt") == expected  # the caption is the picture's alt text

    _click_button(browser, wait, "Speak caption")
    audio = wait.until(EC.presence_of_element_located((By.TAG_NAME, "audio")))
    assert audio.get_attribute("src")
    duration = 0.0
    for _ in range(60):  # wait until the browser has decoded the audio's metadata
        duration = browser.execute_script(
            "const a = document.querySelector('audio'); return a.readyState >= 1 ? a.duration : 0;") or 0.0
        if duration > 0:
            break
        time.sleep(0.5)
    assert duration > 0.3, "the <audio> element has no playable source"
    assert browser.find_elements(By.XPATH, "//*[contains(text(), 'Voice used:')]")
    time.sleep(1)
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "app-screenshot.png"))
