"""``python -m captioner info``: what captions would run on here, found by loading exactly what captioning
loads (a whole ``Captioner``), so the report cannot drift from what really runs."""
from __future__ import annotations

from importlib import metadata
from pathlib import Path

from ..machine import describe_machine, format_machine
from .captioner import Captioner
from .model_folder import resolve_model_dir
from .openvino_encoder import openvino_version


def runtime_info(model_dir: str | Path | None = None, weights: str | Path | None = None,
                 backend: str | None = None) -> dict:
    """What captions would run on here: encoder backend (as chosen by loading it), precision, what steps
    the decoders, CPU, TensorFlow and OpenVINO versions, model folder. For ``python -m captioner info``
    (which, like captioning, imports TensorFlow only when something runs on it)."""
    folder = resolve_model_dir(model_dir)
    captioner = Captioner.load(folder, weights, allow_download=False, backend=backend)  # exactly what captions use
    encoder, stepper = captioner.encoder, captioner.stepper
    decoders = {"numpy": "NumPy (no TensorFlow)", "tensorflow": "TensorFlow"}.get(captioner.decoder_backend) or \
        f"OpenVINO, {stepper.threads} thread(s), {stepper.precision} (no TensorFlow)"
    versions = {}
    for dist in ("tensorflow-cpu", "tensorflow"):
        try:
            versions["tensorflow"] = metadata.version(dist)
            break
        except metadata.PackageNotFoundError:
            continue
    from .precision import precision_summary

    return {"backend": encoder.backend, "backend_note": encoder.backend_note, "precision": encoder.precision,
            "precision_note": encoder.precision_note,
            "precision_candidates": precision_summary(folder, encoder.weights_digest),
            "decoders": decoders,
            "lang": captioner.lang, "cpu": format_machine(describe_machine()),
            "tensorflow": versions.get("tensorflow", "not installed"),
            "openvino": openvino_version() or "not installed", "model": str(folder)}
