"""Serving on OpenVINO end to end: the CLI captions in a process that never imports TensorFlow, with the
same captions as the TensorFlow path; the fallback to TensorFlow; `info` says what runs; `--lang`."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ASSETS, ROOT

pytestmark = pytest.mark.usefixtures("xception_weights")

IMAGES = [ASSETS / "dog-field.jpg", ASSETS / "cat.jpg", ASSETS / "text-page.png"]
PROBE = """
import json, sys
from captioner.cli import main
status = main(sys.argv[1:])
print(json.dumps({"status": status, "tensorflow": "tensorflow" in sys.modules, "keras": "keras" in sys.modules}),
      file=sys.stderr)
"""


@pytest.fixture(scope="module")
def openvino_ready():
    """The OpenVINO IR exists and passed its self-check (converting it is the one step that needs TensorFlow)."""
    from captioner.serving.encoder import XceptionEncoder

    encoder = XceptionEncoder.load(allow_download=False, backend="auto")
    if encoder.backend != "openvino":
        pytest.fail(f"OpenVINO is a dependency and should run here: {encoder.backend_note}")


def _cli(*args, env=None) -> tuple[list[dict], dict]:
    """Run the CLI in a fresh process: (its JSON records, what it imported)."""
    run = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, **(env or {})}, timeout=600)
    records = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    probe = json.loads(run.stderr.strip().splitlines()[-1])
    return records, probe


def test_cli_captions_without_importing_tensorflow_and_matches_the_tensorflow_path(openvino_ready):
    from captioner import Captioner
    from captioner.serving.batch import result_record

    # float32: the precision that gives TensorFlow's captions exactly (auto may pick a faster one here)
    records, probe = _cli("caption", "--json", *map(str, IMAGES), env={"CAPTIONER_BACKEND": "auto",
                                                                       "CAPTIONER_PRECISION": "float32"})
    assert probe == {"status": 0, "tensorflow": False, "keras": False}
    reference = Captioner.load(allow_download=False, backend="tensorflow")
    assert reference.decoder_backend == "tensorflow"
    expected = [result_record(p, r) for p, r in zip(IMAGES, reference.caption(IMAGES))]
    assert [r["model_caption"] for r in records] == [r["model_caption"] for r in expected]
    assert [r["band"] for r in records] == [r["band"] for r in expected]
    for got, want in zip(records, expected):
        assert got["score"] == pytest.approx(want["score"], abs=2e-3)
        assert got["confidence"] == pytest.approx(want["confidence"], abs=5e-3)


def test_library_picks_openvino_steps_and_falls_back_to_tensorflow(openvino_ready):
    from captioner import Captioner

    fast = Captioner.load(allow_download=False, backend="auto")
    assert fast.checkpoint.model is None and fast.decoder_backend in ("openvino", "numpy")
    attention = Captioner.load(ROOT / "models" / "attention-lstm", allow_download=False, backend="auto")
    assert attention.decoder_backend == "tensorflow"  # attention decoders step on TensorFlow
    records, probe = _cli("caption", "--json", str(IMAGES[0]), env={"CAPTIONER_BACKEND": "tensorflow"})
    assert probe["status"] == 0 and probe["tensorflow"]  # asked for: everything on TensorFlow


def _this_cpu() -> tuple[str, str, set[str]]:
    """(model name, architecture, feature flags) of this machine, read straight from /proc/cpuinfo and
    platform.machine(), without the library's parser."""
    import platform
    from pathlib import Path

    text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    first = text.split("\n\n")[0]  # the first processor's block
    fields = {k.strip().lower(): v.strip() for k, sep, v in (line.partition(":") for line in first.splitlines()) if sep}
    flags = set((fields.get("flags") or fields.get("features") or "").split())  # x86 "flags", Arm "Features"
    return fields.get("model name", ""), platform.machine(), flags


def test_info_names_what_runs(openvino_ready, capsys):
    """Catches an `info` whose CPU line is not this machine's: a flag it lacks (the old check insisted on
    avx2, so it failed on Arm and passed for a hard-coded "avx2"), a flag it has that is left out, or the
    wrong architecture; the reference is /proc/cpuinfo read here."""
    from captioner.cli import main

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    cpu_line = next(line for line in out.splitlines() if line.startswith("cpu: "))
    name, arch, flags = _this_cpu()
    assert name in cpu_line and arch in cpu_line
    said = set(cpu_line.rpartition("(")[2].rstrip(")").replace(";", ",").replace(" ", "").split(","))
    # the instruction sets that decide speed on either family, present or absent here
    for flag in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "asimd", "sve"):
        assert (flag in said) == (flag in flags), (flag, cpu_line)
    decoders = next(line for line in out.splitlines() if line.startswith("decoders:"))
    from captioner import Captioner

    picked = Captioner.load(allow_download=False).decoder_backend  # what captioning really steps on
    assert {"openvino": "OpenVINO", "numpy": "NumPy", "tensorflow": "TensorFlow"}[picked] in decoders


def test_caption_lang_de_json_carries_the_language(openvino_ready):
    records, probe = _cli("caption", "--lang", "de", "--json", str(IMAGES[0]))
    assert probe["status"] == 0 and not probe["tensorflow"]
    [record] = records
    assert record["lang"] == "de"
    assert record["model_caption"][0].isupper() and record["model_caption"].endswith(".")
    assert any(w in record["model_caption"].split() for w in ("Ein", "Eine", "Zwei", "Hund", "Der", "Die"))
    records, probe = _cli("caption", "--lang", "zh", "--json", str(IMAGES[0]))
    [record] = records
    assert record["lang"] == "zh" and " " not in record["model_caption"] and record["model_caption"].endswith("。")


def test_lang_and_a_model_of_another_language_is_a_clear_error(capsys):
    from captioner.cli import main

    assert main(["caption", "--lang", "de", "--model", str(ROOT / "models" / "merge-lstm"), str(IMAGES[0])]) == 2
    assert "captions in 'en', not 'de'" in capsys.readouterr().err
