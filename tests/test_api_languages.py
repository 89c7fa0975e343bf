"""Every caption language from one API process: ``?lang=`` on /v1/captions and /v1/speech, models loaded on
first use with the default's encoder and kept to ``max_languages``, /v1/models per language, and a real
``serve --lang de`` process answering in German by default and in English when asked."""
from __future__ import annotations

import json
import urllib.request

import pytest

from conftest import ASSETS

pytestmark = pytest.mark.usefixtures("xception_weights")


def _bytes(name: str) -> bytes:
    return (ASSETS / name).read_bytes()


@pytest.fixture(scope="module")
def english():
    from captioner import Captioner

    return Captioner.load(allow_download=False)


def _records(captioner, names, decode=None):
    from captioner.serving.batch import result_record

    results = captioner.caption([_bytes(n) for n in names], decode, names=names)
    return [result_record(n, r) for n, r in zip(names, results)]


def test_two_languages_from_one_process_share_one_encoder(english):
    from fastapi.testclient import TestClient

    from captioner import Captioner
    from captioner.serving.api import create_app

    german = Captioner.load(lang="de", allow_download=False)
    app = create_app(english, max_languages=2)
    with TestClient(app, base_url="http://localhost") as c:
        body = c.post("/v1/captions?lang=de", content=_bytes("dog-field.jpg"),
                      headers={"Content-Type": "image/jpeg"}).json()
        [got] = body["results"]
        [want] = _records(german, ["dog-field.jpg"])
        assert got["lang"] == "de" and got["caption"] == want["caption"] and got["model_caption"] == want["model_caption"]
        [default] = c.post("/v1/captions", content=_bytes("dog-field.jpg"),
                           headers={"Content-Type": "image/jpeg"}).json()["results"]
        assert default["lang"] == "en" and default["caption"] == _records(english, ["dog-field.jpg"])[0]["caption"]

        service = app.state.service
        assert service.load("de").encoder is english.encoder  # one Xception for every language
        models = c.get("/v1/models").json()
        rows = {row["lang"]: row for row in models["languages"]}
        assert set(rows) == {"en", "de", "zh", "fr", "es"} and models["max_languages"] == 2
        assert rows["en"]["default"] and rows["en"]["loaded"] and rows["de"]["loaded"] and not rows["fr"]["loaded"]
        assert rows["de"]["model"] == "merge-de"

        # a third language: the least recently used other one (German) is let go, English stays
        [french] = c.post("/v1/captions?lang=FR&wording=neutral", content=_bytes("dog-field.jpg"),
                          headers={"Content-Type": "image/jpeg"}).json()["results"]
        assert french["lang"] == "fr" and french["caption"].endswith(".")
        assert set(service.loaded_languages) == {"en", "fr"}

        r = c.post("/v1/captions?lang=xx", content=_bytes("cat.jpg"), headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 422 and "choose one of en, de, zh, fr, es" in r.json()["error"]
        r = c.post("/v1/captions?wording=genderless", content=_bytes("cat.jpg"), headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 422 and "wording must be one of as-learned, neutral" in r.json()["error"]


def test_neutral_wording_over_the_api_is_the_library_s(english):
    from fastapi.testclient import TestClient

    from captioner.serving.api import create_app

    names = ["dog-field.jpg", "cat.jpg", "astronaut.jpg"]
    with TestClient(create_app(english), base_url="http://localhost") as c:
        got = c.post("/v1/captions?wording=neutral&n_best=3",
                     files=[("images", (n, _bytes(n), "image/jpeg")) for n in names]).json()["results"]
    want = _records(english, names, english.default_decode(n_best=3, wording="neutral"))
    assert [g["caption"] for g in got] == [w["caption"] for w in want]
    assert [[a["caption"] for a in g["alternatives"]] for g in got] == [[a["caption"] for a in w["alternatives"]]
                                                                         for w in want]


def test_speech_takes_lang_as_a_query_parameter(english, monkeypatch):
    from fastapi.testclient import TestClient

    from captioner.serving import speech
    from captioner.serving.api import create_app

    heard, real = [], speech.speak

    def fake(text, lang="en", engine="auto"):
        heard.append(lang)
        return real(text, lang, "espeak")  # offline: the test needs no network

    monkeypatch.setattr(speech, "speak", fake)
    with TestClient(create_app(english, preload=False), base_url="http://localhost") as c:
        r = c.post("/v1/speech?lang=de", json={"text": "Ein Hund."})
        assert r.status_code == 200 and heard == ["de"]
        assert c.post("/v1/speech?lang=xx", json={"text": "a"}).status_code == 422


def _post(url: str, data: bytes) -> dict:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "image/jpeg"}, method="POST")
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())


def test_a_real_german_server_answers_in_english_when_asked(english):
    from captioner import Captioner
    from captioner.testing import api_server

    german = Captioner.load(lang="de", allow_download=False)
    with api_server("--lang", "de", timeout=180) as server:
        [de] = _post(f"{server.url}/v1/captions", _bytes("dog-field.jpg"))["results"]
        [en] = _post(f"{server.url}/v1/captions?lang=en", _bytes("dog-field.jpg"))["results"]
        with urllib.request.urlopen(server.url + "/v1/models", timeout=30) as r:
            rows = {row["lang"]: row for row in json.loads(r.read())["languages"]}
    assert de["lang"] == "de" and de["caption"] == _records(german, ["dog-field.jpg"])[0]["caption"]
    assert en["lang"] == "en" and en["caption"] == _records(english, ["dog-field.jpg"])[0]["caption"]
    assert rows["de"]["default"] and rows["de"]["loaded"] and rows["en"]["loaded"]
