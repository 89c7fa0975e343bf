"""The ablation table: one row per trained checkpoint folder and decoding, from the files training wrote.

    python bench/ablation.py models/merge-lstm runs/attention-lstm ... [--markdown docs/ABLATION.md]
        [--notes docs/ablation-notes.md]              # prose put under the table
        [--card models/attention-lstm/MODEL_CARD.md]   # also (re)place the table in a model card

docs/ABLATION.md is this table plus docs/ablation-notes.md; the notes give the full command that
regenerates it. Edit the notes file, not ABLATION.md, and rerun that command.

Every figure comes from the folder's ``metrics.json`` (dev split; nltk BLEU, pycocoevalcap CIDEr-D and
METEOR), ``training.json`` and ``config.json``; nothing is re-run here.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

COLUMNS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr", "METEOR")


def describe(cfg: dict) -> str:
    """A short name for a training configuration."""
    if cfg.get("decoder") == "attention":
        name = f"attention {cfg.get('attention_grid', 5)}x{cfg.get('attention_grid', 5)}, {cfg['rnn'].upper()}"
    else:
        name = f"merge, {cfg['rnn'].upper()}"
    extras = [f"label smoothing {cfg['label_smoothing']}" if cfg.get("label_smoothing") else "",
              "Word2Vec embeddings" if cfg.get("embedding_init") == "word2vec" else "",
              f"augmented copies p={cfg['augment']}" if cfg.get("augment") else "",
              "selected on dev loss" if cfg.get("select_on", "dev_loss") == "dev_loss" else ""]
    return name + "".join(f", {e}" for e in extras if e)


def _member_facts(folder: Path) -> tuple[dict, dict, float]:
    """(config, training summary, checkpoint MB) of one trained folder."""
    cfg = json.loads((folder / "config.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    training = dict(metrics.get("training") or json.loads((folder / "training.json").read_text()))
    if (folder / "scst.json").is_file():  # fine-tuning time counts too
        training["train_seconds"] += json.loads((folder / "scst.json").read_text())["seconds"]
    return cfg, training, (folder / "decoder.keras").stat().st_size / 2**20


def rows_for(folder: Path) -> list[dict]:
    metrics = json.loads((folder / "metrics.json").read_text())
    if (folder / "ensemble.json").is_file():  # sums over the members (their time, weights and disk)
        members = [(folder / m).resolve() for m in json.loads((folder / "ensemble.json").read_text())["members"]]
        facts = [_member_facts(m) for m in members]
        name = "ensemble: " + " + ".join(describe(cfg) + (", then SCST" if (m / "scst.json").is_file() else "")
                                         for m, (cfg, _, _) in zip(members, facts))
        training = {"train_seconds": sum(t["train_seconds"] for _, t, _ in facts),
                    "parameters": sum(t["parameters"] for _, t, _ in facts),
                    "peak_rss_mb": max(t.get("peak_rss_mb", 0) for _, t, _ in facts)}
        size_mb = sum(size for _, _, size in facts)
    else:
        cfg, training, size_mb = _member_facts(folder)
        name = describe(cfg) + (", then SCST" if (folder / "scst.json").is_file() else "")
    rows = []
    for evaluation in metrics["evaluations"]:
        if not evaluation["label"].startswith("dev,"):
            continue  # the originals-vs-squashed rows live in the model card
        rows.append({"model": name, "folder": str(folder), "decoding": evaluation["label"][5:],
                     **{c: evaluation["metrics"].get(c) for c in COLUMNS},
                     "train_min": training["train_seconds"] / 60, "params_m": training["parameters"] / 1e6,
                     "size_mb": size_mb, "peak_rss_gb": training.get("peak_rss_mb", 0) / 1024 or None})
    return rows


def markdown(rows: list[dict]) -> str:
    head = ("| model | decoding | " + " | ".join(COLUMNS) +
            " | training (min) | parameters (M) | checkpoint (MB) | training peak RAM (GB) |")
    lines = [head, "|" + "---|" * (len(COLUMNS) + 6)]
    for r in rows:
        cells = " | ".join("n/a" if r[c] is None else f"{r[c]:.3f}" for c in COLUMNS)
        ram = "n/a" if r["peak_rss_gb"] is None else f"{r['peak_rss_gb']:.1f}"
        lines.append(f"| {r['model']} (`{r['folder']}`) | {r['decoding']} | {cells} | {r['train_min']:.1f} | "
                     f"{r['params_m']:.2f} | {r['size_mb']:.1f} | {ram} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    parser.add_argument("--card", type=Path, action="append", default=[],
                        help="a MODEL_CARD.md whose 'Ablation' section gets this table (repeatable)")
    parser.add_argument("--notes", type=Path, default=None, help="markdown put under the table (what was compared)")
    args = parser.parse_args()
    rows = [row for folder in args.folders for row in rows_for(folder)]
    table = markdown(rows)
    print(table)
    notes = args.notes.read_text() if args.notes else ""
    if args.markdown:
        args.markdown.write_text(SECTION_TITLE + "\n\n" + table + ("\n" + notes if notes else ""))
    for card in args.card:
        put_section(card, table + ("\n" + notes if notes else ""))
    return 0


SECTION_TITLE = "## Ablation (Flickr8k dev split)"
START, END = "<!-- ablation:start -->", "<!-- ablation:end -->"


def put_section(card: Path, body: str) -> None:
    """Replace (or append) the generated ablation section of a model card, leaving the rest alone."""
    text = card.read_text(encoding="utf-8")
    section = f"{START}\n{SECTION_TITLE}\n\n{body.rstrip()}\n{END}\n"
    if START in text and END in text:
        text = text[:text.index(START)] + section + text[text.index(END) + len(END) + 1:]
    else:
        text = text.rstrip() + "\n\n" + section
    card.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
