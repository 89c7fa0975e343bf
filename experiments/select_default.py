"""Rank candidate model folders for the default by the rule in docs/SELECTION.md.

    python experiments/select_default.py models/merge-lstm models/merge-gru models/merge-ensemble ...

Each folder's ``decoding.json`` holds its beam-3 sweep on the shared held-out training images and the
exponent chosen there; this takes each folder's row at its chosen exponent, pools the rows, and scores
them with the same balanced rule (mean share of the best BLEU-1, BLEU-4, METEOR and CIDEr among the
candidates). Dev is not read.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from captioner.pipeline.evaluate import BALANCED_METRICS, balanced_scores  # noqa: E402


def main(folders: list[str]) -> int:
    rows, held_out = {}, set()
    for folder in map(Path, folders):
        decoding = json.loads((folder / "decoding.json").read_text())
        rows[folder.name] = decoding["sweep"][str(decoding["length_alpha"])] | {"alpha": decoding["length_alpha"]}
        held_out.add((folder / "tune_images.txt").read_text())
    if len(held_out) != 1:
        raise SystemExit("the candidates were tuned on different held-out images; their rows do not compare")
    metrics = [m for m in BALANCED_METRICS if all(m in row for row in rows.values())]  # METEOR: English only
    scores = balanced_scores({name: {m: row[m] for m in metrics} for name, row in rows.items()})
    print("| candidate | alpha | " + " | ".join(metrics) + " | balanced |")
    print("|---|---|" + "---|" * (len(metrics) + 1))
    for name in sorted(rows, key=scores.get, reverse=True):
        print(f"| {name} | {rows[name]['alpha']} | " + " | ".join(f"{rows[name][m]:.4f}" for m in metrics)
              + f" | {scores[name]:.4f} |")
    print(f"default by the rule: {max(rows, key=scores.get)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
