"""captioner/testing.py: the one "start a server and wait until it answers" helper behind the API tests,
the browser sessions and the API load benchmark."""
from __future__ import annotations

import sys
import urllib.request

import pytest

from captioner.testing import ServerError, free_port, model_ready, running_server


def test_running_server_waits_until_it_answers_and_stops_it():
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-c", "import time; time.sleep(1); import runpy, sys; "
               f"sys.argv = ['http.server', '{port}', '--bind', '127.0.0.1']; "
               "runpy.run_module('http.server', run_name='__main__')"]
    with running_server(command, url, "/", timeout=60) as server:
        assert server.url == url and server.ready_s >= 1  # it slept a second before listening
        with urllib.request.urlopen(url + "/", timeout=5) as answer:
            assert answer.status == 200
        process = server.process
    assert process.poll() is not None  # stopped on leaving the block


def test_a_server_that_exits_is_a_server_error_with_its_output():
    command = [sys.executable, "-c", "print('no model folder here'); raise SystemExit(3)"]
    with pytest.raises(ServerError, match=r"exited with status 3(.|\n)*no model folder here"):
        with running_server(command, f"http://127.0.0.1:{free_port()}", "/healthz", timeout=60):
            pass


def test_a_server_that_never_answers_times_out():
    command = [sys.executable, "-c", "import time; print('starting'); time.sleep(60)"]
    with pytest.raises(ServerError, match=r"not ready within 1 s(.|\n)*starting"):
        with running_server(command, f"http://127.0.0.1:{free_port()}", "/healthz", timeout=1):
            pass


def test_model_ready_reads_healthz():
    assert model_ready(b'{"status": "ok", "model_state": "ready", "queued": 0}')
    assert not model_ready(b'{"status": "ok", "model_state": "loading", "queued": 0}')
    with pytest.raises(ServerError, match="the model failed to load: no such folder"):
        model_ready(b'{"status": "ok", "model_state": "failed", "error": "no such folder"}')


def test_a_real_server_whose_model_failed_says_so_at_once(tmp_path):
    """``serve`` with a model folder that cannot load: /healthz answers 503 with the reason, and
    ``api_server`` stops waiting with that reason (rather than polling until its timeout)."""
    from captioner.testing import api_server

    with pytest.raises(ServerError, match=r"the model failed to load: .*no-such-model"):
        with api_server("--model", str(tmp_path / "no-such-model"), timeout=170):
            pass
