"""The captioner behind the API: loaded once per process, used by one worker thread that gathers
concurrent requests into shared ``Captioner.caption`` calls (one encoder batch each)."""
from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Union

from ...config import DecodeConfig
from .errors import APIError

if TYPE_CHECKING:
    from ..captioner import Captioner

log = logging.getLogger("captioner.api")

DEFAULT_MAX_LANGUAGES = 3  # captioners kept loaded at once (the default language's and the most recently used others)
DEFAULT_MAX_BATCH = 16  # images per encoder batch when requests are gathered (1 = one request per call)
BATCH_WINDOW_S = 0.005  # how long the worker waits for more requests before starting a batch

ModelSource = Union["Captioner", Callable[[], "Captioner"], str, Path, None]
SPEECH_THREADS = 4  # speech requests spoken at once; more are answered 503 at once
WORK_THREADS = 4  # model loading and folder listing for the caption and model routes


class BoundedPool:
    """A thread pool of its own for one kind of slow call, so one kind (an online voice that hangs) can never
    starve another (captioning) of threads. With ``busy_message`` set, a call made while all ``workers``
    are busy is refused with APIError 503 at once instead of queueing without end; without it, it waits."""

    def __init__(self, workers: int, name: str, busy_message: str | None = None):
        self.workers = max(1, int(workers))
        self.busy_message = busy_message
        self._pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix=name)
        self._lock = threading.Lock()
        self.running = 0

    async def run(self, fn: Callable, *args):
        """``fn(*args)`` on this pool's threads; APIError 503 when they are all busy."""
        import asyncio

        with self._lock:
            if self.busy_message is not None and self.running >= self.workers:
                raise APIError(503, self.busy_message)
            self.running += 1
        try:
            future = self._pool.submit(fn, *args)
        except BaseException:
            self._release()
            raise
        # counted until the thread is done, not until the request is: a client that hangs up leaves
        # its voice call still holding a thread
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def _release(self, _future=None) -> None:
        """One call fewer running."""
        with self._lock:
            self.running -= 1

    def shutdown(self) -> None:
        """Stop taking work (calls still running finish on their own threads)."""
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class _Job:
    images: list[bytes]
    names: list[str]
    decode: DecodeConfig
    lang: str | None = None  # None: the server's default language
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


class CaptionService:
    """The default captioner, loaded once under a lock, and the other languages' captioners, loaded on first
    use with the default's encoder (one Xception for every language) and kept to ``max_languages``
    captioners in all (the least recently used other language is let go first); one worker thread gathers
    concurrent requests of the same language and settings into shared ``Captioner.caption`` calls."""

    def __init__(self, model: ModelSource = None, weights: str | Path | None = None,
                 max_batch: int = DEFAULT_MAX_BATCH, window_s: float = BATCH_WINDOW_S,
                 max_languages: int = DEFAULT_MAX_LANGUAGES):
        from ..captioner import Captioner

        self._captioner = model if isinstance(model, Captioner) else None
        if self._captioner is not None:
            self._loader = lambda: model
        elif callable(model):
            self._loader = model
        else:
            self._loader = lambda: Captioner.load(model, weights)
        self.model_dir = Path(model) if isinstance(model, (str, Path)) else None
        self.max_batch = max(1, int(max_batch))
        self.max_languages = max(1, int(max_languages))
        self._others: collections.OrderedDict[str, Captioner] = collections.OrderedDict()  # least recent first
        self.window_s = window_s
        self.load_error: str | None = None
        self._load_lock = threading.Lock()
        self.model_lock = threading.Lock()  # every model call holds it
        self._queue: collections.deque[_Job] = collections.deque()
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None
        self._stopping = False
        self.calls = 0  # Captioner.caption calls made (each one encoder batch)
        self.images_done = 0

    # -- loading
    @property
    def loaded(self) -> bool:
        """True once the captioner is loaded."""
        return self._captioner is not None

    def load(self, lang: str | None = None):
        """The captioner of ``lang`` (None: the default), loading it on first use (once, whoever asks
        first); APIError 503 if it cannot load."""
        default = self._load_default()
        if lang is None or lang == default.lang:
            return default
        with self._load_lock:
            if lang in self._others:
                self._others.move_to_end(lang)
                return self._others[lang]
            from ..captioner import Captioner
            from ..model_folder import CheckpointError

            try:
                loaded = Captioner.load(lang=lang, encoder=default.encoder)
            except (CheckpointError, OSError, ValueError) as err:
                log.error("the %s model failed to load: %s", lang, err)
                raise APIError(503, f"the {lang!r} model is not available: {err}") from err
            self._others[lang] = loaded
            while len(self._others) > self.max_languages - 1:
                gone, _ = self._others.popitem(last=False)
                log.info("let the %s model go (at most %d languages loaded)", gone, self.max_languages)
            log.info("model %s loaded for %s", Path(loaded.checkpoint.folder).name, lang)
            return loaded

    @property
    def default_lang(self) -> str:
        """The default language: the default model's (read from its folder before it is loaded)."""
        if self._captioner is not None:
            return self._captioner.lang
        from ..model_folder import model_language

        try:
            return model_language(self.model_dir) if self.model_dir else "en"
        except Exception:  # noqa: BLE001 - a missing folder is reported by load(); here only a label
            return "en"

    @property
    def loaded_languages(self) -> dict[str, str]:
        """Language -> the model folder's name, for every captioner loaded now."""
        found = {self._captioner.lang: Path(self._captioner.checkpoint.folder).name} if self._captioner else {}
        found.update((lang, Path(c.checkpoint.folder).name) for lang, c in list(self._others.items()))
        return found

    def _load_default(self):
        """The default captioner, loading it on first use; APIError 503 if it cannot load."""
        if self._captioner is not None:
            return self._captioner
        with self._load_lock:
            if self._captioner is None:
                from ..model_folder import CheckpointError
                from ..weights import WeightsError

                try:
                    self._captioner = self._loader()
                    self.load_error = None
                except (CheckpointError, WeightsError, OSError, ValueError) as err:
                    self.load_error = str(err)
                    log.error("model failed to load: %s", err)
                    raise APIError(503, f"the model is not available: {err}") from err
        return self._captioner

    def load_quietly(self) -> None:
        """Load in the background at start-up: a failure is only recorded (``/healthz`` and each request
        report it), and its traceback logged when it is a bug."""
        try:
            start = time.perf_counter()
            self.load()
            log.info("model %s loaded in %.1f s", self.model_name, time.perf_counter() - start)
        except APIError:
            pass  # recorded in self.load_error
        except Exception:  # noqa: BLE001
            log.exception("model failed to load")
            self.load_error = "the model failed to load (the server log has the details)"

    @property
    def model_name(self) -> str | None:
        """The loaded model's folder name (before loading: the folder asked for, if any)."""
        if self._captioner is not None:
            return Path(self._captioner.checkpoint.folder).name
        return self.model_dir.name if self.model_dir else None

    @property
    def state(self) -> str:
        """ready, loading or failed."""
        return "ready" if self.loaded else ("failed" if self.load_error else "loading")

    # -- captioning
    def submit(self, images: list[bytes], names: list[str], decode: DecodeConfig,
               lang: str | None = None) -> concurrent.futures.Future:
        """Queue one request's images (captioned in ``lang``; None: the default language); the future's
        result is their CaptionResults, in order."""
        job = _Job(images, names, decode, lang)
        with self._cond:
            if self._worker is None or not self._worker.is_alive():
                self._stopping = False
                self._worker = threading.Thread(target=self._run, name="captioner-worker", daemon=True)
                self._worker.start()
            self._queue.append(job)
            self._cond.notify()
        return job.future

    @property
    def pending(self) -> int:
        """Requests waiting for the worker."""
        return len(self._queue)

    def stop(self) -> None:
        """Finish the queued requests and stop the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=30)

    def _take(self) -> list[_Job] | None:
        """The next batch: the oldest job, plus jobs with the same settings that arrive within the window,
        up to ``max_batch`` images."""
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            if self._stopping and not self._queue:
                return None
            first = self._queue.popleft()
            batch, count = [first], len(first.images)
            deadline = time.monotonic() + self.window_s
            while count < self.max_batch:
                same = next((j for j in self._queue if j.decode == first.decode and j.lang == first.lang
                             and count + len(j.images) <= self.max_batch), None)
                if same is not None:
                    self._queue.remove(same)
                    batch.append(same)
                    count += len(same.images)
                    continue
                left = deadline - time.monotonic()
                if left <= 0 or self._stopping:
                    break
                self._cond.wait(left)
            return batch

    def _run(self) -> None:
        """The worker: one ``Captioner.caption`` call per batch, its results handed back per request."""
        while True:
            batch = self._take()
            if batch is None:
                return
            live = [j for j in batch if j.future.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                captioner = self.load(live[0].lang)
                images = [img for j in live for img in j.images]
                names = [n for j in live for n in j.names]
                with self.model_lock:
                    results = captioner.caption(images, live[0].decode, names=names)
                self.calls += 1
                self.images_done += len(images)
            except BaseException as err:  # noqa: BLE001 - handed to each waiting request
                for j in live:
                    j.future.set_exception(err)
                continue
            start = 0
            for j in live:
                j.future.set_result(results[start:start + len(j.images)])
                start += len(j.images)
