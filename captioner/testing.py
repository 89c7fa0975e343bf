"""Helpers for tests, tools and benchmarks that run a real server process: a free loopback port, and
"start a server and wait until it answers" (then stop it), used for the HTTP API and the Streamlit page.

    with api_server() as server:                      # python -m captioner serve, model loaded
        urllib.request.urlopen(server.url + "/healthz")

    port = free_port()
    with running_server([...command with port...], f"http://127.0.0.1:{port}", "/health") as server: ...
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

ROOT = Path(__file__).resolve().parents[1]  # the checkout: servers run from here


class ServerError(RuntimeError):
    """The server exited, said it cannot work, or did not answer in time; the message ends with the tail
    of its output."""


@dataclass
class Server:
    url: str  # http://127.0.0.1:PORT
    process: subprocess.Popen
    log_path: Path  # the server's stdout and stderr
    ready_s: float  # seconds from start until it answered ready

    def output(self, chars: int = 4000) -> str:
        """The end of what the server has written so far."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextmanager
def running_server(command: Sequence[str], url: str, health: str, ready: Callable[[bytes], bool] | None = None,
                   timeout: float = 120.0, log_path: Path | None = None, env: dict | None = None,
                   cwd: Path = ROOT, poll_s: float = 0.3) -> Iterator[Server]:
    """Start ``command`` (a server that will listen at ``url``), wait until ``url + health`` answers and
    ``ready(body)`` is true (default: any 2xx answer), yield a ``Server``, and stop the process at the end.

    Its output goes to ``log_path`` (default: a temporary file, removed afterwards), never to a pipe that
    could fill up and stall it. ``ready`` may raise ``ServerError`` to give up at once (a model that failed
    to load). ServerError when the process exits or ``timeout`` seconds pass first."""
    own_log = log_path is None
    if own_log:
        handle, name = tempfile.mkstemp(prefix="server-", suffix=".log")
        os.close(handle)
        log_path = Path(name)
    log_path = Path(log_path)
    start = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(list(command), cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    server = Server(url, proc, log_path, 0.0)
    try:
        while True:
            if proc.poll() is not None:
                raise ServerError(f"the server exited with status {proc.returncode} before it was ready "
                                  f"({' '.join(map(str, command))}):\n{server.output()}")
            try:
                with urllib.request.urlopen(url + health, timeout=2) as answer:
                    if ready is None or ready(answer.read()):
                        break
            except ServerError as err:
                raise ServerError(f"{err}\n{server.output()}") from err
            except urllib.error.HTTPError as err:  # a health check that answers "failed" with an error status
                try:
                    if ready is not None and ready(err.read()):
                        break
                except ServerError as failed:
                    raise ServerError(f"{failed}\n{server.output()}") from failed
                except ValueError:
                    pass  # not the health body (not JSON)
            except OSError:
                pass  # not listening yet, or answering with an error status
            if time.perf_counter() - start > timeout:
                raise ServerError(f"the server was not ready within {timeout:.0f} s:\n{server.output()}")
            time.sleep(poll_s)
        server.ready_s = time.perf_counter() - start
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if own_log:
            log_path.unlink(missing_ok=True)


def model_ready(body: bytes) -> bool:
    """For the API's ``/healthz``: true once the model is loaded; ServerError if it failed to load."""
    state = json.loads(body)
    if state.get("model_state") == "failed":
        raise ServerError(f"the model failed to load: {state.get('error', 'no reason given')}")
    return state.get("model_state") == "ready"


@contextmanager
def api_server(*args: str, timeout: float = 180.0, log_path: Path | None = None,
               env: dict | None = None) -> Iterator[Server]:
    """``python -m captioner serve`` (plus ``args``, e.g. ``--max-batch 1``) on a free loopback port; yields
    the ``Server`` once ``/healthz`` says the model is loaded."""
    port = free_port()
    command = [sys.executable, "-m", "captioner", "serve", "--port", str(port), *args]
    with running_server(command, f"http://127.0.0.1:{port}", "/healthz", model_ready, timeout, log_path,
                        {"TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}) as server:
        yield server
