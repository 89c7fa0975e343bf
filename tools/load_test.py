"""Several simultaneous browser sessions against one app server: each uploads its own picture,
captions it and asks for speech. Used by test_load.py and reliability_report.py."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from browser_session import caption_in_browser, new_browser, streamlit_server

ASSETS = Path(__file__).resolve().parents[1] / "assets"


def run_load_test(n_sessions: int = 8) -> dict:
    """Returns per-session results, how often the server loaded the model, and latency percentiles."""
    images = sorted(ASSETS.glob("*.jpg"))
    with streamlit_server("streamlit-load.log") as (url, log_path):
        drivers = [new_browser() for _ in range(n_sessions)]
        results: list[dict | None] = [None] * n_sessions
        errors: list[str] = []
        barrier = threading.Barrier(n_sessions)

        def session(i: int) -> None:
            try:
                barrier.wait(timeout=120)  # all sessions start together
                results[i] = {"image": images[i % len(images)].name,
                              **caption_in_browser(drivers[i], url, images[i % len(images)])}
            except Exception as err:  # recorded, so one broken session cannot hide the others' results
                errors.append(f"session {i}: {type(err).__name__}: {err}")

        threads = [threading.Thread(target=session, args=(i,)) for i in range(n_sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=900)
        for d in drivers:
            d.quit()
        model_loads = log_path.read_text().count("captioner: loading model")
    done = [r for r in results if r]
    caption_s = np.array([r["caption_s"] for r in done]) if done else np.zeros(1)
    speech_s = np.array([r["speech_s"] for r in done]) if done else np.zeros(1)
    return {"sessions": n_sessions, "results": results, "errors": errors, "model_loads": model_loads,
            "caption_latency_s": {f"p{q}": float(np.percentile(caption_s, q)) for q in (50, 90, 100)},
            "speech_latency_s": {f"p{q}": float(np.percentile(speech_s, q)) for q in (50, 90, 100)}}
