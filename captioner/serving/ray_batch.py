"""Captioning photo collections on a Ray cluster (Ray Data): the same records as ``batch.caption_to_file``.

The driver (this process) walks the inputs, drops images already in the output file (``batch.done_images``,
so a rerun resumes), and hands the rest to Ray Data as a dataset of paths. A pool of actors, each holding one
``Captioner`` loaded once, captions them in batches with the same ``DecodeConfig`` and returns each image's
``batch.result_record`` as a JSON string. Only the driver writes, through ``batch.append_records`` (the writer
the single-process path uses), flushing after every batch, so the file has the same fields and, with
``ordered=True`` (the default), the same lines in the same order.

Ray is optional (``pip install -r requirements-ray.txt`` or ``pip install captioner[ray]``): nothing here
imports it until ``caption_to_file_ray`` runs. Every node must see the model folder, the weights and the
photos at the same paths as the driver.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Iterable

from ..config import DecodeConfig
from .batch import BatchSummary, _format, append_records, done_images, iter_images, result_record
from .model_folder import read_length_alpha, resolve_model_dir

INSTALL_HINT = "pip install -r requirements-ray.txt (or pip install 'captioner[ray]')"
MAX_RESTARTS = 3  # an actor whose process or node dies is restarted this many times ...
MAX_TASK_RETRIES = 3  # ... and the batches it held are resubmitted; past that the run stops (rerun to resume)


class RayUnavailable(ImportError):
    """``--engine ray`` was asked for but Ray (Ray Data) is not installed."""


def import_ray():
    """``ray`` with Ray Data, or RayUnavailable saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (ray without the [data] extra lacks pyarrow and friends)
    except ImportError as err:
        raise RayUnavailable(f"--engine ray needs Ray Data, which is not installed ({err}); {INSTALL_HINT}") from err
    return ray


class CaptionActor:
    """One per worker: loads the model once, then turns batches of paths into JSON records."""

    def __init__(self, model_dir: str, weights: str | None, decode: dict, threads: int = 1):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        try:  # one actor per CPU it was given: TensorFlow's pools would otherwise each grab every core
            tf.config.threading.set_intra_op_parallelism_threads(max(1, int(threads)))
            tf.config.threading.set_inter_op_parallelism_threads(max(1, int(threads)))
        except RuntimeError:
            pass  # TensorFlow already ran something in this process; its pools are fixed
        from .captioner import Captioner

        self.captioner = Captioner.load(model_dir, weights, allow_download=False)
        self.decode = DecodeConfig(**decode)

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        paths = [Path(str(p)) for p in batch["path"]]
        results = self.captioner.caption(paths, self.decode)
        records = [json.dumps(result_record(path, result), ensure_ascii=False) for path, result in zip(paths, results)]
        return {"record": np.array(records, dtype=object)}


def caption_to_file_ray(model_dir: str | Path | None, inputs: Iterable[Path], out: Path,
                        decode: DecodeConfig | None = None, batch_size: int = 16, workers: int = 2,
                        address: str | None = None, progress: bool = True, weights: str | Path | None = None,
                        cpus_per_worker: int = 1, ordered: bool = True) -> BatchSummary:
    """Caption every image under ``inputs`` into ``out`` (.jsonl or .csv) with ``workers`` Ray actors,
    skipping images already there; returns the same BatchSummary as ``batch.caption_to_file``.

    ``decode``: default the model's own settings (its tuned length exponent). ``address``: an existing
    cluster (``"auto"``, ``"HOST:6379"`` or ``"ray://HOST:10001"``); None starts a private Ray instance on
    this machine and stops it afterwards (an already initialised Ray is used as it is). Each actor gets
    ``cpus_per_worker`` CPUs and as many TensorFlow threads. ``ordered``: write in input order (the
    single-process file, line for line); False lets whichever batch is done first be written first.
    """
    if workers < 1 or batch_size < 1 or cpus_per_worker < 1:
        raise ValueError("workers, batch size and CPUs per worker must be at least 1")
    out = Path(out)
    _format(out)
    ray = import_ray()
    folder = resolve_model_dir(model_dir)
    if decode is None:
        decode = DecodeConfig(length_alpha=read_length_alpha(folder))
    decode.validate()
    done = done_images(out)
    paths = [str(p) for p in iter_images(inputs)]
    todo = [p for p in paths if p not in done]
    skipped = len(paths) - len(todo)
    if not todo:
        return append_records(out, [], total=len(paths), skipped=skipped, progress=progress)

    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:  # a private instance on this machine, never one that happens to be running here
            ray.init(address="local", num_cpus=max(os.cpu_count() or 1, workers * cpus_per_worker),
                     include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        started = True
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = ordered
        ctx.enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # our bar, not its per-run INFO lines
        blocks = min(-(-len(todo) // batch_size), 1000)  # a block per batch (few enough for the object store)
        dataset = ray.data.from_items([{"path": p} for p in todo], override_num_blocks=blocks)
        with warnings.catch_warnings():  # Ray 2.60 marks per-actor options such as max_restarts for a rename
            warnings.simplefilter("ignore", DeprecationWarning)
            captioned = dataset.map_batches(
                CaptionActor, batch_size=batch_size, batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus_per_worker,
                fn_constructor_kwargs={"model_dir": str(folder),
                                       "weights": str(Path(weights).resolve()) if weights else None,
                                       "decode": dataclasses.asdict(decode), "threads": cpus_per_worker},
                max_restarts=MAX_RESTARTS, max_task_retries=MAX_TASK_RETRIES)
        batches = ([json.loads(r) for r in batch["record"]]
                   for batch in captioned.iter_batches(batch_size=batch_size, batch_format="numpy"))
        return append_records(out, batches, total=len(paths), skipped=skipped, progress=progress)
    finally:
        if started:
            ray.shutdown()
