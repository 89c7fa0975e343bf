"""Neutral wording measured on dev, per language: how many captions name a gender, how many of those
contradict every reference that names one (gender mistakes), and what rewriting decoded captions costs in
CIDEr-D: neutral captions scored against references neutralised the same way, beside the as-learned
captions against the raw references. Writes docs/neutral-wording.json (docs/LANGUAGES.md has the table).

    python experiments/neutral_wording.py [--data ../shared/flickr8k] [--langs en de zh fr es]

Captions are decoded once through ``Captioner.caption_features`` (beam 3, each folder's tuned length
exponent and ranking, wording neutral); the decoder's own tokens are the as-learned captions, and their rewriting is
checked to be exactly what ``caption --wording neutral`` writes.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_name() -> str:
    """The CPU's model name (the docs state it beside each figure)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def mistakes(captions: dict[str, str], references: dict[str, list[str]], lang: str, nouns: set[str]) -> dict:
    """Captions naming a gender; of those with a reference naming one, how many contradict every such
    reference (no gender in common)."""
    from captioner.serving.neutral import genders

    named = checked = wrong = 0
    for name, tokens in captions.items():
        said = genders(tokens, lang, nouns)
        if not said:
            continue
        named += 1
        ref_genders = [g for g in (genders(r, lang, nouns) for r in references[name]) if g]
        if ref_genders:
            checked += 1
            wrong += all(not (said & g) for g in ref_genders)
    return {"captions_naming_a_gender": named, "with_a_reference_naming_one": checked, "gender_mistakes": wrong}


def measure(lang: str, data: Path | None) -> dict:
    """One language's row (decoded twice, scored three ways)."""
    from captioner import Captioner
    from captioner.pipeline.data import load_dataset
    from captioner.pipeline.evaluate import caption_metrics
    from captioner.pipeline.features import extract_features
    from captioner.serving.neutral import genders, german_nouns, neutral, written_forms

    captioner = Captioner.load(lang=lang, allow_download=False, precision="float32")  # scores per model, not per CPU
    dataset = load_dataset(data, lang)
    names = dataset.split_names("dev")
    extracted = extract_features(captioner.encoder, [dataset.image_dir / n for n in names], progress=False,
                                 kind=captioner.feature_kind)
    nouns = german_nouns(captioner.checkpoint.truecase)
    out: dict[str, dict[str, str]] = {"as-learned": {}, "neutral": {}}
    written = []  # (what caption --wording neutral writes, the neutral tokens written back): must agree
    decode = captioner.default_decode(beam_width=3, wording="neutral")
    for i in range(0, len(extracted.names), 64):
        chunk = extracted.names[i:i + 64]
        for name, caps in zip(chunk, captioner.caption_features(extracted.features[i:i + 64], decode)):
            out["as-learned"][name] = caps[0].tokens  # the decoder's own tokens (both wordings share them)
            out["neutral"][name] = neutral(caps[0].tokens, lang, nouns)
            written.append((caps[0].text, captioner.checkpoint.language.write(
                out["neutral"][name], written_forms(lang, captioner.checkpoint.truecase))))
    if any(a != b for a, b in written):
        raise RuntimeError("the neutral captions written by Captioner differ from the measured ones")
    raw_refs = {n: dataset.captions[n] for n in out["as-learned"]}
    neutral_refs = {n: [neutral(r, lang, nouns) for r in refs] for n, refs in raw_refs.items()}
    learned, _ = caption_metrics(raw_refs, out["as-learned"], meteor=False)
    neutral_scores, _ = caption_metrics(neutral_refs, out["neutral"], meteor=False)
    learned_vs_neutral_refs, _ = caption_metrics(neutral_refs, out["as-learned"], meteor=False)
    n = len(out["as-learned"])
    share = {w: sum(bool(genders(t, lang, nouns)) for t in p.values()) / n for w, p in out.items()}
    refs_gendered = sum(bool(genders(r, lang, nouns)) for refs in raw_refs.values() for r in refs)
    refs_left = sum(bool(genders(r, lang, nouns)) for refs in neutral_refs.values() for r in refs)
    n_refs = sum(len(r) for r in raw_refs.values())
    examples = [{"image": k, "as_learned": out["as-learned"][k], "neutral": out["neutral"][k]}
                for k in sorted(out["as-learned"]) if out["as-learned"][k] != out["neutral"][k]][:6]
    return {"lang": lang, "model": Path(captioner.checkpoint.folder).name, "dev_images": n,
            "gendered_share_as_learned": share["as-learned"], "gendered_share_neutral": share["neutral"],
            "as_learned": mistakes(out["as-learned"], raw_refs, lang, nouns),
            "neutral": mistakes(out["neutral"], raw_refs, lang, nouns),
            "references_naming_a_gender": refs_gendered / n_refs,
            "references_naming_a_gender_after_rewriting": refs_left / n_refs,
            "cider_as_learned_vs_raw_refs": learned["CIDEr"], "bleu4_as_learned_vs_raw_refs": learned["BLEU-4"],
            "cider_neutral_vs_neutral_refs": neutral_scores["CIDEr"],
            "bleu4_neutral_vs_neutral_refs": neutral_scores["BLEU-4"],
            "cider_as_learned_vs_neutral_refs": learned_vs_neutral_refs["CIDEr"],
            "examples": examples}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--langs", nargs="+", default=["en", "de", "zh", "fr", "es"])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "neutral-wording.json")
    args = parser.parse_args()
    rows = []
    for lang in args.langs:
        row = measure(lang, args.data)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "examples"}, ensure_ascii=False), flush=True)
    report = {"split": "dev", "decoding": "beam 3, each folder's tuned length exponent and ranking",
              "cpu": cpu_name(), "command": "python experiments/neutral_wording.py --data ../shared/flickr8k",
              "gender_mistake": "the caption names a gender and shares none with every reference that names one",
              "rows": rows}
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
