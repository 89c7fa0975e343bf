"""The table of caption languages in docs/LANGUAGES.md: each language's default model on dev (beam 3) beside a
constant baseline (that language's most frequent training caption given to every image).

Non-English figures come from each folder's ``metrics.json`` (written by ``python -m captioner card``);
English is decoded and its baseline computed here (its cards do not carry the language facts).

    python tools/language_table.py [--data ../shared/flickr8k]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def english_row(data) -> dict:
    from captioner import Captioner
    from captioner.pipeline.data import load_dataset
    from captioner.pipeline.evaluate import constant_baseline, evaluate_split

    dataset = load_dataset(data)
    captioner = Captioner.load(allow_download=False, precision="float32")  # scores are per model, not per CPU
    result = evaluate_split(captioner, dataset, "dev", captioner.default_decode(beam_width=3), progress=False)
    constant, baseline = constant_baseline(dataset, result.references)
    return {"lang": "en", "model": result.metrics, "baseline": baseline, "images": len(result.predictions),
            "constant_caption": constant, "distinct_captions": len(set(result.predictions.values())),
            "tokens": "lower-case words"}


def main() -> int:
    from captioner.serving.languages import LANGUAGES
    from captioner.serving.model_folder import default_model_dir, read_metrics

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args()
    rows = [english_row(args.data)]
    for code in LANGUAGES:
        if code != "en":
            facts = read_metrics(default_model_dir(code))["language"]
            rows.append({**facts, "images": facts["dev_images"]})
    print("| language | model | dev images | tokens | BLEU-4 | constant | ratio | CIDEr-D | constant | ratio | distinct captions |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        m, b = row["model"], row["baseline"]
        print(f"| {LANGUAGES[row['lang']].name} | `{default_model_dir(row['lang']).name}` | {row['images']:,} | {row['tokens']} "
              f"| {m['BLEU-4']:.3f} | {b['BLEU-4']:.3f} | {m['BLEU-4'] / b['BLEU-4']:.1f}x | {m['CIDEr']:.3f} "
              f"| {b['CIDEr']:.3f} | {m['CIDEr'] / b['CIDEr']:.1f}x | {row['distinct_captions']} |")
    print(json.dumps({r["lang"]: r["constant_caption"] for r in rows}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
