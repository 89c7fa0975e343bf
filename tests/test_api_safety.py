"""Who may use the HTTP API and how much one client can hold: the Host allow-list (DNS rebinding), refused
cross-origin POSTs, the optional bearer token, 422 for every bad number, speech on its own bounded pool, the
body-read timeout and uvicorn's connection limit. The model is a scripted stand-in: these are the HTTP
layer's rules, answered before (or apart from) any captioning."""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from captioner.serving.api import create_app

LOCAL = "http://localhost"


class FakeCaptioner:
    """Answers every image with one caption and counts the calls (a refused request must not reach it)."""

    lang = "en"
    checkpoint = SimpleNamespace(length_alpha=0.7, folder="fake-model")

    def __init__(self):
        self.calls = 0

    def caption(self, images, decode=None, names=None, **keep):
        from captioner import Caption, CaptionResult

        self.calls += 1
        return [CaptionResult(n, [Caption("a dog runs on the grass", -2.0, -0.5)], lang="en") for n in names]


def _app(fake=None, **kwargs):
    fake = fake or FakeCaptioner()
    return create_app(lambda: fake, **kwargs), fake


def _image_post(c, **kwargs):
    return c.post("/v1/captions", content=b"-", headers={"Content-Type": "image/jpeg", **kwargs.pop("headers", {})},
                  **kwargs)


# ------------------------------------------------------------------------------------------ Host allow-list

def test_host_names_parse():
    from captioner.serving.api.middleware import host_allowed, host_name

    assert host_name("[::1]:8000") == "::1" and host_name("LocalHost:80") == "localhost"
    assert host_name("::1") == "::1" and host_name("127.0.0.1") == "127.0.0.1"
    assert host_allowed("a.example.org", ("*.example.org",)) and not host_allowed("example.org.evil", ("*.example.org",))
    assert not host_allowed("evil.example", ("localhost",))


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "127.0.0.1:8000", "[::1]:8000", "[::1]"])
def test_loopback_names_are_answered(host):
    app, _ = _app()
    with TestClient(app, base_url=LOCAL) as c:
        assert c.get("/healthz", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "localhost.evil.example", "", "10.0.0.5"])
def test_other_host_names_are_400_before_anything_runs(host):
    """A page on evil.example whose name now resolves to 127.0.0.1 (DNS rebinding) sends Host: evil.example."""
    app, fake = _app()
    with TestClient(app, base_url=LOCAL) as c:
        r = _image_post(c, headers={"Host": host})
        assert r.status_code == 400 and "is not allowed" in r.json()["error"] and "--allowed-host" in r.json()["error"]
        assert c.get("/v1/models", headers={"Host": host}).status_code == 400
        assert fake.calls == 0


def test_allowed_hosts_add_names():
    app, fake = _app(allowed_hosts=["captions.lan", "*.home.arpa"])
    with TestClient(app, base_url=LOCAL) as c:
        assert _image_post(c, headers={"Host": "captions.lan:8000"}).status_code == 200
        assert c.get("/healthz", headers={"Host": "pi.home.arpa"}).status_code == 200
        assert c.get("/healthz", headers={"Host": "evil.example"}).status_code == 400
        assert fake.calls == 1


# ------------------------------------------------------------------------------------------- cross-origin

@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://localhost:3000", "https://localhost"])
def test_cross_origin_posts_are_403_and_not_processed(origin):
    app, fake = _app()
    with TestClient(app, base_url=LOCAL) as c:
        r = _image_post(c, headers={"Origin": origin})
        assert r.status_code == 403 and "cross-origin" in r.json()["error"]
        # the "simple" request a web form can send without a preflight: multipart, no custom headers
        r = c.post("/v1/captions", files=[("images", ("a.jpg", b"-", "image/jpeg"))], headers={"Origin": origin})
        assert r.status_code == 403
        r = c.post("/v1/speech", json={"text": "hello"}, headers={"Origin": origin})
        assert r.status_code == 403
        assert fake.calls == 0


def test_same_origin_and_non_browser_posts_work():
    """The /docs page served by this server posts with its own origin; scripts send no Origin at all."""
    app, fake = _app()
    with TestClient(app, base_url=LOCAL) as c:
        assert _image_post(c, headers={"Origin": "http://localhost"}).status_code == 200
        assert _image_post(c).status_code == 200
        assert c.get("/v1/models", headers={"Origin": "http://evil.example"}).status_code == 200  # reads: CORS guards
        assert fake.calls == 2


# --------------------------------------------------------------------------------------------------- token

def test_a_token_guards_every_route_but_healthz():
    app, fake = _app(token="s3cret-token")
    with TestClient(app, base_url=LOCAL) as c:
        assert c.get("/healthz").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"},
                        {"Authorization": "Basic s3cret-token"}):
            r = c.get("/v1/models", headers=headers)
            assert r.status_code == 401 and "Authorization: Bearer" in r.json()["error"]
            assert r.headers["www-authenticate"] == "Bearer"
            assert _image_post(c, headers=headers).status_code == 401
            assert c.get("/docs", headers=headers).status_code == 401
        good = {"Authorization": "Bearer s3cret-token"}
        assert c.get("/v1/models", headers=good).status_code == 200
        assert _image_post(c, headers=good).status_code == 200
        assert fake.calls == 1


def _serve_app(monkeypatch, *args, env_token=None, **kwargs):
    """What ``serve`` would run (uvicorn replaced): the app and uvicorn's settings."""
    import uvicorn

    from captioner.serving.api import serve

    ran = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **settings: ran.update(app=app, **settings))
    if env_token is None:
        monkeypatch.delenv("CAPTIONER_API_TOKEN", raising=False)
    else:
        monkeypatch.setenv("CAPTIONER_API_TOKEN", env_token)
    serve(*args, model=lambda: FakeCaptioner(), **kwargs)
    return ran


def test_serve_reads_the_token_from_the_environment_and_limits_connections(monkeypatch):
    ran = _serve_app(monkeypatch, "127.0.0.1", 8000, env_token="from-env", limit_concurrency=7)
    assert ran["limit_concurrency"] == 7 and ran["host"] == "127.0.0.1"
    with TestClient(ran["app"], base_url=LOCAL) as c:
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer from-env"}).status_code == 200


def test_serving_beyond_loopback_without_a_token_warns(monkeypatch, caplog):
    with caplog.at_level("WARNING", logger="captioner.api"):
        ran = _serve_app(monkeypatch, "192.168.1.20", 8000)
    assert "without a token" in caplog.text
    with TestClient(ran["app"], base_url="http://192.168.1.20:8000") as c:  # its own address is allowed
        assert c.get("/healthz").status_code == 200
    caplog.clear()
    with caplog.at_level("WARNING", logger="captioner.api"):
        _serve_app(monkeypatch, "127.0.0.1", 8000)
        _serve_app(monkeypatch, "0.0.0.0", 8000, token="t")
    assert "without a token" not in caplog.text


def test_the_cli_prints_the_warning(monkeypatch, capsys):
    import captioner.serving.api as api
    from captioner.cli import main

    got = {}
    monkeypatch.setattr(api, "serve", lambda *a, **k: got.update(args=a, **k))
    monkeypatch.delenv("CAPTIONER_API_TOKEN", raising=False)
    main(["serve", "--host", "0.0.0.0", "--allowed-host", "captions.lan", "--allowed-host", "pi.lan",
          "--body-timeout", "5", "--limit-concurrency", "9"])
    assert "without a token" in capsys.readouterr().err
    assert got["allowed_hosts"] == ["captions.lan", "pi.lan"] and got["token"] is None
    assert got["body_timeout"] == 5 and got["limit_concurrency"] == 9
    main(["serve", "--token", "t"])
    assert "without a token" not in capsys.readouterr().err and got["token"] == "t"


# --------------------------------------------------------------------------------------- bad numbers: 422

@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "-1e308", "1e308", "-0.5", "3.5"])
def test_every_bad_length_alpha_is_422(value):
    app, fake = _app()
    with TestClient(app, base_url=LOCAL, raise_server_exceptions=False) as c:
        r = _image_post(c, params={"length_alpha": value})
        assert r.status_code == 422 and "length_alpha" in r.json()["error"]
        assert fake.calls == 0


@pytest.mark.parametrize("query", ["beam_width=1e9", "beam_width=99999999999999999999999", "n_best=-1",
                                   "max_words=1e308", "max_words=nan", "block_ngram=inf", "block_ngram=-5",
                                   "beam_width=nan"])
def test_other_bad_numbers_are_422(query):
    app, fake = _app()
    with TestClient(app, base_url=LOCAL, raise_server_exceptions=False) as c:
        r = c.post(f"/v1/captions?{query}", content=b"-", headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 422, r.text
        assert fake.calls == 0


def test_the_library_refuses_a_non_finite_length_alpha():
    from captioner import DecodeConfig

    for alpha in (float("nan"), float("inf"), -1.0, 4.0):
        with pytest.raises(ValueError, match="length_alpha must be a number between 0 and 3"):
            DecodeConfig(length_alpha=alpha).validate()
    DecodeConfig(length_alpha=1.3).validate()


# ----------------------------------------------------------------------------- speech apart from captioning

def test_hanging_voices_never_delay_captioning(monkeypatch):
    """Twelve speech requests whose voice hangs: four hold the speech pool, the other eight are answered 503
    at once, and a caption request completes while the four are still held."""
    from captioner.serving import speech

    release, entered = threading.Event(), threading.Semaphore(0)

    def hanging(text, lang="en", engine="auto"):
        entered.release()
        assert release.wait(120), "never released"
        return speech.Speech(b"RIFF-fake", "audio/wav", "fake voice")

    monkeypatch.setattr(speech, "speak", hanging)
    app, fake = _app(speech_threads=4)
    with TestClient(app, base_url=LOCAL) as c, ThreadPoolExecutor(12) as pool:
        try:
            held = [pool.submit(c.post, "/v1/speech", json={"text": f"caption {i}"}) for i in range(4)]
            for _ in range(4):
                assert entered.acquire(timeout=60), "a speech request never reached the voice"
            busy = [pool.submit(c.post, "/v1/speech", json={"text": f"more {i}"}) for i in range(8)]
            for f in busy:  # answered while the four are still held: refused, not queued
                r = f.result(timeout=60)
                assert r.status_code == 503 and "voices are busy" in r.json()["error"]
            r = _image_post(c)
            assert r.status_code == 200 and r.json()["results"][0]["caption"]
            assert not any(f.done() for f in held)  # the voices were still hanging meanwhile
            assert app.state.speech_pool.running == 4
        finally:
            release.set()
        assert all(f.result(timeout=60).content == b"RIFF-fake" for f in held)
    assert app.state.speech_pool.running == 0


# ---------------------------------------------------------------------------------------- slow clients

def test_a_client_that_stops_sending_its_body_is_dropped():
    """ASGI level: the body arrives in part and then never; the guard answers 408 after body_timeout."""
    app, fake = _app(body_timeout=0.2)
    sent = []

    async def run():
        parts = [{"type": "http.request", "body": b"\xff\xd8partial", "more_body": True}]
        never = asyncio.Event()

        async def receive():
            if parts:
                return parts.pop(0)
            await never.wait()  # the client stalls
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v1/captions", "raw_path": b"/v1/captions",
                 "query_string": b"", "headers": [(b"host", b"localhost"), (b"content-type", b"image/jpeg")],
                 "scheme": "http", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5555),
                 "http_version": "1.1", "root_path": ""}
        await asyncio.wait_for(app(scope, receive, send), 60)

    asyncio.run(run())
    assert sent[0]["status"] == 408
    assert b"did not arrive within 0.2 s" in sent[1]["body"]
    assert fake.calls == 0


def test_a_speech_call_whose_client_left_still_holds_its_thread():
    """A request cancelled while its voice hangs (the client hung up) keeps counting against the pool until
    the thread is really free, so hung calls can never pile up beyond the pool's size."""
    from captioner.serving.api.errors import APIError
    from captioner.serving.api.service import BoundedPool

    release = threading.Event()
    pool = BoundedPool(1, "test-speech", "busy")

    async def run():
        first = asyncio.ensure_future(pool.run(release.wait, 60))
        while pool.running == 0:
            await asyncio.sleep(0)
        first.cancel()  # the client hung up; the thread still waits
        with pytest.raises(asyncio.CancelledError):
            await first
        assert pool.running == 1
        with pytest.raises(APIError) as refused:
            await pool.run(release.wait, 60)
        assert refused.value.status == 503
        release.set()
        while pool.running:
            await asyncio.sleep(0.01)
        assert await pool.run(lambda: "spoken") == "spoken"

    asyncio.run(asyncio.wait_for(run(), 60))
    pool.shutdown()
