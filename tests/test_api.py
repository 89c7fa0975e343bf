"""The local HTTP API (captioner/serving/api/): every route and error in-process with TestClient, then a
real `python -m captioner serve` process on a loopback port with concurrent clients and hostile uploads."""
from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
import wave
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import ASSETS

pytestmark = pytest.mark.usefixtures("xception_weights")

PHOTOS = ["dog-field.jpg", "cat.jpg", "coffee.jpg", "astronaut.jpg"]


@pytest.fixture(scope="module")
def captioner():
    from captioner import Captioner

    return Captioner.load(allow_download=False)


@pytest.fixture(scope="module")
def client(captioner):
    from fastapi.testclient import TestClient

    from captioner.serving.api import create_app

    with TestClient(create_app(captioner), base_url="http://localhost") as c:
        yield c


def _bytes(name: str) -> bytes:
    return (ASSETS / name).read_bytes()


def _expected(captioner, names, decode=None, data=None):
    """What `caption --json` prints for these images (named as the API names them)."""
    from captioner.serving.batch import result_record

    data = data or [_bytes(n) for n in names]
    results = captioner.caption(data, decode, names=names)
    return [result_record(n, r) for n, r in zip(names, results)]


def _same(got: dict, want: dict) -> None:
    """Equal records; the two float fields may differ in their last rounded digit when the encoder batch
    differs (oneDNN sums in another order)."""
    assert set(got) == set(want)
    for key in want:
        if key in ("score", "confidence"):
            assert got[key] == pytest.approx(want[key], abs=2e-3), key
        elif key == "alternatives":
            assert [a["caption"] for a in got[key]] == [a["caption"] for a in want[key]]
        else:
            assert got[key] == want[key], key


# ------------------------------------------------------------------------------------------- in-process

def test_multipart_images_equal_the_cli_records(client, captioner):
    names = PHOTOS[:2]
    r = client.post("/v1/captions", files=[("images", (n, _bytes(n), "image/jpeg")) for n in names])
    assert r.status_code == 200, r.text
    got = r.json()["results"]
    for g, w in zip(got, _expected(captioner, names), strict=True):
        _same(g, w)
    assert {"caption", "confidence", "band", "in_domain", "reason", "model_caption", "score",
            "photo_problems"} <= set(got[0])


def test_a_dark_photo_gets_its_problem_and_the_advice_first(client, captioner):
    """The API answers with batch.result_record: "photo_problems" and the sentence that starts with the advice."""
    from PIL import Image

    photo = Image.open(io.BytesIO(_bytes("dog-field.jpg"))).convert("RGB")
    dark = io.BytesIO()
    photo.point(lambda v: v // 12).save(dark, format="JPEG", quality=90)
    r = client.post("/v1/captions", files=[("images", ("dark.jpg", dark.getvalue(), "image/jpeg")),
                                           ("images", ("dog.jpg", _bytes("dog-field.jpg"), "image/jpeg"))])
    assert r.status_code == 200, r.text
    dark_record, dog = r.json()["results"]
    assert dark_record["photo_problems"] == ["dark"] and dog["photo_problems"] == []
    assert dark_record["caption"].startswith("The photo is too dark: turn on a light")
    assert dark_record["band"] != "high"
    _same(dark_record, _expected(captioner, ["dark.jpg"], data=[dark.getvalue()])[0])


def test_raw_body_and_decoding_settings(client, captioner):
    r = client.post("/v1/captions?beam_width=5&n_best=3&max_words=20&block_ngram=0&length_alpha=0.5&name=dog.jpg",
                    content=_bytes("dog-field.jpg"), headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200, r.text
    from captioner import DecodeConfig

    decode = DecodeConfig(beam_width=5, n_best=3, max_words=20, block_ngram=0, length_alpha=0.5)
    [got] = r.json()["results"]
    [want] = _expected(captioner, ["dog.jpg"], decode, [_bytes("dog-field.jpg")])
    _same(got, want)
    assert len(got["alternatives"]) == 3


def test_the_ranking_parameter_reaches_the_decoder(client, captioner):
    """English says the best-scoring caption unless asked: ``rerank=consensus`` gives exactly the
    library's consensus order (a permutation of the same beam), ``rerank=score`` the default's."""
    assert captioner.checkpoint.rerank == "score"
    answers = {}
    for ranking in ("consensus", "score"):
        r = client.post(f"/v1/captions?rerank={ranking}&n_best=3&name=dog.jpg", content=_bytes("dog-field.jpg"),
                        headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 200, r.text
        [got] = r.json()["results"]
        decode = captioner.default_decode(n_best=3, rerank=ranking)
        [want] = _expected(captioner, ["dog.jpg"], decode, [_bytes("dog-field.jpg")])
        _same(got, want)
        answers[ranking] = [a["caption"] for a in got["alternatives"]]
    assert sorted(answers["consensus"]) == sorted(answers["score"])
    assert answers["consensus"] != answers["score"]  # on this photo the orders differ, so a lost parameter shows


def test_one_bad_image_among_several_gets_its_own_error(client):
    files = [("images", ("dog.jpg", _bytes("dog-field.jpg"), "image/jpeg")),
             ("images", ("notes.png", b"just some text", "image/png")),
             ("images", ("empty.jpg", b"", "image/jpeg"))]
    r = client.post("/v1/captions", files=files)
    assert r.status_code == 200, r.text
    dog, notes, empty = r.json()["results"]
    assert dog["caption"] and "error" not in dog
    assert notes == {"image": "notes.png", "error": "notes.png: not a recognised image format (is it really a picture?)"}
    assert empty == {"image": "empty.jpg", "error": "empty.jpg: file is empty"}


@pytest.mark.parametrize("data, message", [
    (b"", "truncated.jpg: file is empty"),
    (None, "truncated.jpg: image data is corrupt or truncated"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "truncated.jpg: SVG vector drawings are not supported"),
])
def test_a_single_unreadable_image_is_422_with_the_cli_message(client, captioner, data, message):
    data = _bytes("dog-field.jpg")[:3000] if data is None else data
    r = client.post("/v1/captions", files=[("images", ("truncated.jpg", data, "image/jpeg"))])
    assert r.status_code == 422
    assert r.json()["error"].startswith(message)
    [cli] = captioner.caption([data], names=["truncated.jpg"])
    assert r.json()["error"] == cli.error  # what `caption` prints after "error: "


@pytest.mark.parametrize("query, fragment", [
    ("beam_width=0", "beam width must be between 1 and 20"),
    ("beam_width=2&n_best=3", "n_best must be between 1 and the beam width"),
    ("block_ngram=-1", "block_ngram must be 0"),
    ("block_ngram=1", "block_ngram must be 0 (off) or at least 2, not 1"),
    ("beam_width=wide", "beam_width"),
    ("max_words=0", "max_words"),
    ("rerank=best", "rerank must be one of auto, score, consensus"),
])
def test_bad_settings_are_422_with_a_message(client, query, fragment):
    r = client.post(f"/v1/captions?{query}", content=_bytes("cat.jpg"), headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 422
    assert fragment in r.json()["error"]


def test_limits_and_wrong_types(client):
    from captioner.serving.api import MAX_BODY_BYTES, MAX_IMAGES

    big = b"\xff" * (MAX_BODY_BYTES + 1)
    r = client.post("/v1/captions", content=big, headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 413 and "25 MB" in r.json()["error"]

    def chunks():  # no Content-Length: counted while reading
        for _ in range(27):
            yield b"\0" * 2**20

    r = client.post("/v1/captions", content=chunks(), headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 413 and "25 MB" in r.json()["error"]

    r = client.post("/v1/captions", content=b"hello", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["error"]
    r = client.post("/v1/captions", json={"image": "dog.jpg"})
    assert r.status_code == 415

    r = client.post("/v1/captions", files=[("other", ("a.jpg", _bytes("cat.jpg"), "image/jpeg"))])
    assert r.status_code == 422 and "no images" in r.json()["error"]
    tiny = [("images", (f"{i}.jpg", b"x", "image/jpeg")) for i in range(MAX_IMAGES + 1)]
    r = client.post("/v1/captions", files=tiny)
    assert r.status_code == 413 and "too many images" in r.json()["error"]

    assert client.get("/v1/nothing").json() == {"error": "Not Found"}
    assert client.get("/v1/captions").status_code == 405


def test_speech_returns_playable_audio_offline(client):
    r = client.post("/v1/speech", json={"text": "a brown dog runs through the grass", "engine": "espeak"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    assert r.headers["x-speech-engine"] == "espeak-ng (offline)"
    with wave.open(io.BytesIO(r.content)) as w:
        assert w.getnchannels() == 1 and w.getnframes() / w.getframerate() > 0.5

    r = client.post("/v1/speech", json={"text": "two dogs play in the snow"})  # auto: gTTS fails here, espeak speaks
    assert r.status_code == 200
    assert r.headers["x-speech-engine"] in ("gTTS (Google, online)", "espeak-ng (offline)")
    assert r.headers["content-type"] in ("audio/mpeg", "audio/wav") and len(r.content) > 1000

    assert client.post("/v1/speech", json={"text": ""}).status_code == 422
    blank = client.post("/v1/speech", json={"text": " \n\t\u200b "})  # nothing a voice could say
    assert blank.status_code == 422 and "error" in blank.json()
    assert "unknown language" in client.post("/v1/speech", json={"text": "hi", "lang": "xx"}).json()["error"]
    assert client.post("/v1/speech", json={"text": "hi", "engine": "siri"}).status_code == 422


def test_speech_failure_is_503(client, monkeypatch):
    from captioner.serving import speech

    def broken(text, lang="en", engine="auto"):
        raise speech.SpeechError("offline voice unavailable (OSError: no library)")

    monkeypatch.setattr(speech, "speak", broken)
    r = client.post("/v1/speech", json={"text": "a cat", "engine": "espeak"})
    assert r.status_code == 503 and "offline voice unavailable" in r.json()["error"]


def test_models_health_and_docs(client):
    models = client.get("/v1/models").json()
    names = [m["name"] for m in models["models"]]
    assert models["default"] == "merge-ensemble" == models["loaded"] == names[0]
    assert {"merge-lstm", "merge-gru", "attention-lstm"} <= set(names)
    assert all(m["description"] for m in models["models"])
    assert [m["name"] for m in models["models"] if m["loaded"]] == ["merge-ensemble"]

    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["model_state"] == "ready" and "error" not in health
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/v1/captions", "/v1/speech", "/v1/models", "/healthz"} <= set(spec["paths"])


def test_block_ngram_1_is_refused_by_the_library(captioner):
    from captioner import DecodeConfig

    with pytest.raises(ValueError, match=r"block_ngram must be 0 \(off\) or at least 2, not 1"):
        captioner.caption([_bytes("cat.jpg")], DecodeConfig(block_ngram=1))


def test_the_openapi_schema_describes_a_caption_record(client):
    """/docs shows what a result holds: every field of records.CaptionRecord, in order, each described."""
    from dataclasses import fields

    from captioner.serving.records import CaptionRecord

    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    answer = spec["paths"]["/v1/captions"]["post"]["responses"]
    assert answer["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/CaptionResults"}
    assert schemas["CaptionResults"]["properties"]["results"]["items"] == {"$ref": "#/components/schemas/CaptionRecord"}
    record = schemas["CaptionRecord"]
    assert list(record["properties"]) == [f.name for f in fields(CaptionRecord)] == [
        "image", "caption", "lang", "photo_problems", "confidence", "band", "in_domain", "reason", "model_caption",
        "score", "read_text", "kind", "text_lines", "short_caption", "alternatives", "error"]
    assert record["required"] == ["image"]  # every other field may be absent from a record
    assert all(len(p["description"]) > 20 and "default" not in p for p in record["properties"].values())
    assert "shown and spoken" in record["properties"]["caption"]["description"]
    assert record["properties"]["band"]["enum"] == ["high", "medium", "low"]
    assert record["properties"]["alternatives"]["items"] == {"$ref": "#/components/schemas/Alternative"}
    for status in ("413", "415", "422", "503"):
        assert answer[status]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    for path, schema in (("/healthz", "Health"), ("/v1/models", "ModelList")):
        assert spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": f"#/components/schemas/{schema}"}


class ScriptedCaptioner:
    """Stands in for a Captioner with results of every shape (uncalibrated, calibrated, out of domain, several
    captions, non-ASCII text, a failed image), the same for the same names."""

    def __init__(self, checkpoint):
        self.checkpoint = checkpoint

    def caption(self, images, decode=None, names=None, **keep):
        from captioner import Caption, CaptionResult
        from captioner.serving.confidence import Assessment

        shapes = {"plain": None, "sure": Assessment(0.91234, "high", True, None),
                  "odd": Assessment(0.2, "low", False, "looks like a drawing, not a photo (图)")}
        results = []
        for name in names:
            kind = name.split(".")[0]
            if kind == "broken":
                results.append(CaptionResult(name, error=f"{name}: image data is corrupt or truncated"))
                continue
            captions = [Caption("ein hund läuft über die wiese", -2.0, -0.123456),
                        Caption("zwei hunde spielen im schnee", -2.5, -1.5)][:decode.n_best]
            results.append(CaptionResult(name, captions, assessment=shapes[kind], lang="de"))
        return results


def test_the_answer_is_byte_for_byte_the_records(captioner):
    """The typed response model changes nothing: the body is the JSON of batch.result_record's dicts, with
    the same keys present and absent and in the same order."""
    from fastapi.testclient import TestClient

    from captioner import DecodeConfig
    from captioner.serving.api import create_app
    from captioner.serving.batch import result_record

    fake = ScriptedCaptioner(captioner.checkpoint)
    names = ["plain.jpg", "sure.jpg", "odd.jpg", "broken.jpg"]
    with TestClient(create_app(lambda: fake), base_url="http://localhost") as c:
        for query, n_best in (("", 1), ("?beam_width=3&n_best=2", 2)):
            r = c.post(f"/v1/captions{query}", files=[("images", (n, b"-", "image/jpeg")) for n in names])
            assert r.status_code == 200, r.text
            records = [result_record(n, x) for n, x in zip(names, fake.caption([], DecodeConfig(n_best=n_best),
                                                                               names))]
            assert r.content == json.dumps({"results": records}, ensure_ascii=False,
                                           separators=(",", ":")).encode()
            plain, sure, odd, broken = r.json()["results"]
            assert not {"confidence", "band", "in_domain", "reason"} & set(plain)
            assert sure["reason"] is None and odd["in_domain"] is False
            assert broken == {"image": "broken.jpg", "error": "broken.jpg: image data is corrupt or truncated"}
            assert ("alternatives" in sure) == (n_best > 1)


def test_bugs_are_a_json_500_without_internals(captioner):
    from fastapi.testclient import TestClient

    from captioner.serving.api import create_app

    class Broken:
        checkpoint = captioner.checkpoint

        def caption(self, *args, **kwargs):
            raise RuntimeError("secret internal detail /etc/passwd")

    with TestClient(create_app(lambda: Broken()), raise_server_exceptions=False, base_url="http://localhost") as c:
        r = c.post("/v1/captions", content=_bytes("cat.jpg"), headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 500
        assert r.json() == {"error": "internal server error (the server log has the details)"}
        assert c.get("/healthz").status_code == 200


def test_missing_model_is_503_and_health_says_why(tmp_path):
    from fastapi.testclient import TestClient

    from captioner.serving.api import create_app

    with TestClient(create_app(tmp_path / "no-such-model", preload=False), base_url="http://localhost") as c:
        r = c.post("/v1/captions", content=_bytes("cat.jpg"), headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 503 and "the model is not available" in r.json()["error"]
        answer = c.get("/healthz")
        health = answer.json()
        assert answer.status_code == 503  # a supervisor reading only the status sees the failure
        assert health["status"] == "failed" and health["model_state"] == "failed" and "no-such-model" in health["error"]


def test_health_answers_while_captioning(captioner):
    """/healthz answers while a caption request is known to be in the model: the fake captioner's caption()
    holds until the health check has answered (it would hang, not pass, if /healthz waited on captioning)."""
    import threading

    from fastapi.testclient import TestClient

    from captioner.serving.api import create_app

    inside, health_answered = threading.Event(), threading.Event()
    fake = ScriptedCaptioner(captioner.checkpoint)
    scripted = fake.caption

    def held(images, decode=None, names=None, **keep):
        inside.set()
        assert health_answered.wait(60), "the health check never answered while captioning"
        return scripted(images, decode, names, **keep)

    fake.caption = held
    with TestClient(create_app(lambda: fake), base_url="http://localhost") as c, ThreadPoolExecutor(1) as pool:
        posted = pool.submit(c.post, "/v1/captions", files=[("images", ("plain.jpg", b"-", "image/jpeg"))])
        assert inside.wait(60), "the caption request never reached the model"
        r = c.get("/healthz")
        health_answered.set()
        assert r.status_code == 200 and r.json()["model_state"] == "ready"
        assert posted.result(60).status_code == 200


def test_concurrent_requests_are_gathered_into_one_batch(captioner):
    """Requests that wait while the model is busy share one Captioner.caption call."""
    from captioner.serving.api import CaptionService

    service = CaptionService(captioner, window_s=0.05)
    decode = captioner.default_decode()
    futures = [service.submit([_bytes(n)], [n], decode) for n in PHOTOS]
    results = [f.result(timeout=120) for f in futures]
    service.stop()
    assert service.calls == 1 and service.images_done == len(PHOTOS)
    from captioner.serving.batch import result_record

    for n, [r], want in zip(PHOTOS, results, _expected(captioner, PHOTOS)):
        _same(result_record(n, r), want)


# ------------------------------------------------------------------------------------------- a real server

def _post(url: str, data: bytes, content_type: str, timeout: float = 120):
    req = urllib.request.Request(url, data=data, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def server():
    from captioner.testing import api_server

    with api_server(timeout=120) as running:
        yield running.url


def test_real_server_concurrent_clients_and_hostile_uploads(server, captioner):
    want = dict(zip(PHOTOS, _expected(captioner, PHOTOS)))
    jobs = [PHOTOS[i % len(PHOTOS)] for i in range(8)]

    def one(name):
        return name, _post(f"{server}/v1/captions?name={name}", _bytes(name), "image/jpeg")

    with ThreadPoolExecutor(6) as pool:
        hostile = [pool.submit(_post, f"{server}/v1/captions?name=x.jpg", data, "image/jpeg")
                   for data in (b"", _bytes("dog-field.jpg")[:2000])]
        hostile.append(pool.submit(_post, f"{server}/v1/captions?name=notes.png", b"plain text, renamed",
                                   "image/png"))
        running = pool.map(one, jobs)
        with urllib.request.urlopen(server + "/healthz", timeout=30) as r:  # answered in flight: see
            assert json.loads(r.read())["status"] == "ok"                  # test_health_answers_while_captioning
        answers = list(running)
        for f in hostile:
            status, body = f.result()
            assert status == 422 and "error" in body

    for name, (status, body) in answers:
        assert status == 200, body
        [got] = body["results"]
        _same(got, want[name])

    with urllib.request.urlopen(server + "/healthz", timeout=5) as r:
        assert json.loads(r.read())["status"] == "ok"
    status, body = _post(f"{server}/v1/captions?name=cat.jpg", _bytes("cat.jpg"), "image/jpeg")
    assert status == 200
    _same(body["results"][0], want["cat.jpg"])
