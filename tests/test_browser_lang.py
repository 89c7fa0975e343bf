"""The page tells assistive technology which language it reads, checked in a real headless Chromium: after
choosing Deutsch, the document's <html lang> and the element around the caption (heading, alternatives,
alt text) say "de", so a screen reader switches to a German voice."""
from __future__ import annotations

import pytest

from browser_session import caption_in_browser, new_browser, streamlit_server
from conftest import ASSETS

LANG_OF = """
const el = document.querySelector(arguments[0]);
return el ? (el.closest('[lang]') || document.documentElement).getAttribute('lang') : null;"""


@pytest.fixture(scope="module")
def server(xception_weights):
    with streamlit_server("streamlit-lang.log") as (url, log_path):
        yield url


def test_choosing_deutsch_marks_the_document_and_the_caption_german(server):
    driver = new_browser()
    try:
        driver.get(server)
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(driver, 120).until(lambda d: d.execute_script("return document.documentElement.lang") == "en")
        shown = caption_in_browser(driver, server, ASSETS / "dog-field.jpg", speak=False, language="Deutsch")
        assert shown["heading"][0].isupper() and shown["heading"].endswith(".")  # the German caption is shown
        WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.documentElement.lang") == "de")
        WebDriverWait(driver, 30).until(lambda d: d.execute_script(  # set once the page's last element is drawn
            "const e = document.querySelector('.st-key-said-0'); return e && e.getAttribute('lang');") == "de")
        for selector in ("[data-testid='stMarkdownContainer'] h3", "[data-testid='stImage'] img",
                         "[data-testid='stTable']"):  # the caption, its alt text and the alternatives
            WebDriverWait(driver, 30).until(lambda d: d.execute_script(LANG_OF, selector) is not None)  # drawn
            assert driver.execute_script(LANG_OF, selector) == "de", selector
        assert driver.execute_script("return document.querySelector('.st-key-said-0 h3') !== null")
    finally:
        driver.quit()
