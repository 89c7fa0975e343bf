# Two commands for a newcomer: `make demo` (the web app) and `make test` (the whole suite).
# Both set everything up first and are quick when it is already there.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test setup weights browser train evaluate clean

demo: setup weights
	$(VENV)/bin/streamlit run app.py

test: setup weights browser
	$(PY) -m pytest -q

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt requirements-ray.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

# Xception ImageNet weights: cached in ~/.cache/captioner after the first run (see README).
weights: setup
	$(PY) -m captioner weights

# Headless Chromium + ChromeDriver for the browser tests, a CJK font so tests/test_reading.py can draw
# Chinese text, and ExifTool, the independent reader of the metadata write-back writes (Debian packages;
# needs root or sudo).
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null && fc-list :lang=zh | grep -q . \
	  && command -v exiftool >/dev/null; then :; \
	else SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver fonts-noto-cjk libimage-exiftool-perl >/dev/null; fi

train: setup weights
	$(PY) -m captioner train --out runs/merge-lstm

evaluate: setup weights
	$(PY) -m captioner evaluate --split dev --beam-width 3

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
