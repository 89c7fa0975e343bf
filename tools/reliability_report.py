"""Regenerates docs/RELIABILITY.md: every hostile input and fault tried, with what happened, and the
load test's figures.

    .venv/bin/python tools/reliability_report.py            # everything (the browser load test is the slow part)
    .venv/bin/python tools/reliability_report.py --no-load  # skip the 8-browser load test
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT))

from hostile_corpus import build_corpus  # noqa: E402


def cell(text: str, limit: int = 140) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def inputs_table(captioner, folder: Path) -> list[str]:
    cases = build_corpus(folder)
    proc = subprocess.run([sys.executable, "-m", "captioner", "caption", str(folder), "--json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=900)
    cli = {json.loads(line)["image"].rsplit("/", 1)[-1]: json.loads(line) for line in proc.stdout.splitlines()}
    rows = ["| input | expected | library (time) | CLI `caption --json` |", "|---|---|---|---|"]
    for case in cases:
        start = time.perf_counter()
        [result] = captioner.caption([folder / case.filename])
        took = time.perf_counter() - start
        lib = f"caption: “{result.text}”" if result.ok else f"error: {result.error.split(': ', 1)[-1]}"
        line = cli.get(case.filename, {})
        cli_text = f"caption: “{line['caption']}”" if "caption" in line else f"error: {line.get('error', '?').split(': ', 1)[-1]}"
        ok = "✅" if (result.ok == case.should_caption) else "❌"
        rows.append(f"| {cell(case.what, 60)} | {'caption' if case.should_caption else 'clear error'} | "
                    f"{ok} {cell(lib)} ({took:.2f} s) | {cell(cli_text)} |")
    rows.append("")
    rows.append(f"CLI exit status over the whole folder: {proc.returncode} (non-zero because some inputs are bad); "
                f"traceback printed: {'yes' if 'Traceback' in proc.stderr else 'no'}.")
    return rows


def faults_table(tmp: Path) -> list[str]:
    from captioner.serving import speech
    from captioner.serving.model_folder import available_models, is_ensemble_folder, load_checkpoint
    from captioner.serving.vocab import Vocabulary
    from captioner.serving.weights import WEIGHTS_FILENAME, ensure_weights

    rows = ["| fault | what the user gets |", "|---|---|"]

    def attempt(label, fn):
        try:
            outcome = fn()
        except Exception as err:  # every fault must end in a message, which is what we record
            outcome = f"{type(err).__name__}: {err}"
        rows.append(f"| {label} | {cell(outcome, 300)} |")

    attempt("model folder missing", lambda: load_checkpoint(tmp / "no-such-model"))
    single = next(p for p in available_models() if not is_ensemble_folder(p))  # a folder with its own decoder.keras
    broken = tmp / "broken-model"
    shutil.copytree(single, broken)
    (broken / "decoder.keras").write_bytes(b"PK\x03\x04 this is not a model")
    attempt("decoder.keras corrupt", lambda: load_checkpoint(broken))
    mismatched = tmp / "mismatched-model"
    shutil.copytree(single, mismatched)
    Vocabulary.fit(["only a handful of words here"], min_count=1).save(mismatched / "vocab.json")
    attempt("vocab.json from another checkpoint", lambda: load_checkpoint(mismatched))
    cache = tmp / "cache"
    cache.mkdir()
    real, digest = ensure_weights(allow_download=False)
    shutil.copy(real, cache / WEIGHTS_FILENAME)
    (cache / (WEIGHTS_FILENAME + ".sha256.json")).write_text(json.dumps({"sha256": digest}))
    with open(cache / WEIGHTS_FILENAME, "r+b") as fh:
        fh.seek(1_000_000)
        fh.write(b"\0" * 64)
    import os

    os.environ["CAPTIONER_CACHE_DIR"] = str(cache)
    attempt("Xception weights cache corrupted (no download allowed)",
            lambda: ensure_weights(allow_download=False))
    attempt("Xception weights cache corrupted (downloads allowed: re-created)",
            lambda: "re-created, sha256 %s…" % ensure_weights(download_timeout=5)[1][:16])
    del os.environ["CAPTIONER_CACHE_DIR"]
    from gtts.tts import gTTSError

    for label, error in (("gTTS timeout", TimeoutError("read timed out after 6 s")),
                         ("gTTS HTTP 429", gTTSError("429 (Too Many Requests) from TTS API")),
                         ("gTTS DNS failure", OSError("[Errno -3] Temporary failure in name resolution"))):
        def failing(*args, _e=error):
            raise _e

        speech.clear_cache()
        attempt(label, lambda f=failing: (lambda s: f"audio from {s.engine}, {len(s.audio)} bytes; note: "
                                          f"{'; '.join(s.notes)}")(speech.speak("a dog runs", online=f)))

    def no_voice(*args):
        raise OSError("libespeak-ng.so: cannot open shared object file")

    speech.clear_cache()
    attempt("gTTS down and offline voice unavailable (the page shows this as a warning; the caption stays)",
            lambda: speech.speak("a dog runs", online=no_voice, offline=no_voice))
    return rows


def load_section(n: int) -> list[str]:
    from load_test import run_load_test

    alone = run_load_test(1)  # the same path with one user, for scale
    report = run_load_test(n)
    ok = sum(1 for r in report["results"] if r)
    c, s = report["caption_latency_s"], report["speech_latency_s"]
    return [f"- One session alone: caption {alone['caption_latency_s']['p50']:.2f} s, speech "
            f"{alone['speech_latency_s']['p50']:.2f} s (click to shown, measured in the browser).",f"- {n} simultaneous headless-Chromium sessions against one `streamlit run app.py`; each uploads a "
            "different sample photo, captions it (beam 3) and presses speak.",
            f"- Sessions that completed: {ok} of {n}; errors: {report['errors'] or 'none'}.",
            f"- Model loads in the server log: {report['model_loads']} (it is shared through `st.cache_resource`).",
            f"- Caption latency (click to caption shown): p50 {c['p50']:.2f} s, p90 {c['p90']:.2f} s, "
            f"max {c['p100']:.2f} s.",
            f"- Speech latency (click to playable audio): p50 {s['p50']:.2f} s, p90 {s['p90']:.2f} s, "
            f"max {s['p100']:.2f} s.",
            "- Every session showed the caption of its own picture (checked by `tests/test_load.py`).",
            "- The browsers run on the same 2-core machine as the server: eight Chromium renderers compete with "
            "the model for the two cores, so these latencies are mostly the browsers' own CPU time; the "
            "server-side caption work is about 0.15 s per image."]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-load", action="store_true")
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "RELIABILITY.md")
    args = parser.parse_args()
    from captioner import Captioner

    captioner = Captioner.load(allow_download=False)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        inputs = inputs_table(captioner, tmp / "hostile")
        faults = faults_table(tmp)
    load = load_section(args.sessions) if not args.no_load else ["(skipped: run without --no-load)"]
    from captioner.machine import describe_machine, format_machine

    text = "\n".join([
        "# Reliability", "",
        "What captioner does with odd and hostile inputs, failing parts and many users at once.",
        "Regenerate this page with `.venv/bin/python tools/reliability_report.py` (about 5 minutes); the same",
        "cases are asserted by `tests/test_hostile_inputs.py`, `tests/test_load.py`, `tests/test_speech.py`,",
        "`tests/test_weights.py` and `tests/test_merge_decoder.py`.",
        f"Times below were measured on {format_machine(describe_machine())}.", "",
        "## Inputs", "The corpus is generated by `tools/hostile_corpus.py` from the sample photos (nothing large is "
        "committed). The page gives the same results: `test_page_reports_each_bad_upload_and_captions_the_rest` "
        "uploads the whole corpus at once.", "", *inputs, "",
        "## Faults", *faults, "",
        "## Load", *load, "",
        "## Security",
        "- No pickle anywhere: the vocabulary is JSON, the decoder a `.keras` file loaded with `safe_mode=True` "
        "(no Python code is run from a model file), weights are `.weights.h5`; the feature cache uses "
        "`np.load(allow_pickle=False)`.",
        "- Uploads stay in memory (`BytesIO`); file names are only shown as labels, never used as paths.",
        "- Upload size is limited twice: Streamlit's `server.maxUploadSize = 25` MB and the library's own 50 MB "
        "cap per file; images over 64 million pixels (or that Pillow flags as decompression bombs) are refused "
        "before decoding.",
        "- Decoding errors of every kind are turned into one `ImageError` with the file's name and the reason.", ""])
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
