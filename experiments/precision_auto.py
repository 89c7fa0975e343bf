"""Does each encoder precision keep the default model's quality on dev? The rule ``--precision auto`` needs
before it may pick int8 (``captioner.serving.precision.INT8_RULE``): against float32, dev BLEU-4 within
0.005, CIDEr-D within 0.01, the confidence's expected calibration error within 0.01, and the out-of-domain
flag rates (dev photos, generated non-photos) within one percentage point. Word-for-word identical
captions and feature cosines are reported, not required.

For each precision: the default model's dev captions (beam 3, the folder's own decoding), corpus BLEU-4
and CIDEr-D, the calibrated confidence's ECE against "good" (per-image CIDEr-D >= 0.4, as
``python -m captioner calibrate`` reports it), the share of dev photos and of held-back generated
non-photos (``nonphotos.REPORT_SEED``) the domain check flags, and the encoder's ms per image at batch 1
(candidates taking turns, ``precision.time_per_image``). Nothing is tuned here.

Writes the figures to ``--json`` (docs/precision-auto.json) and, with ``--write-verdict``, the int8
verdict to the model folder's ``precision.json``, which ``--precision auto`` reads.

    python -m captioner quantize --data DIR      # the int8 IR (needs nncf), once
    python experiments/precision_auto.py [--dev-images 1000] --json docs/precision-auto.json --write-verdict
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.report import emit  # noqa: E402


def main() -> int:
    from captioner import Captioner
    from captioner.pipeline.calibrate import assess_split, decode, nonphoto_features
    from captioner.pipeline.data import load_dataset
    from captioner.pipeline.evaluate import caption_metrics
    from captioner.machine import describe_machine
    from captioner.pipeline.nonphotos import REPORT_SEED
    from captioner.serving.confidence import CiderD, expected_calibration_error
    from captioner.serving.encoder import feature_cosines
    from captioner.serving.precision import INT8_RULE, PRECISION_FILE, check_pixels, time_per_image

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--dev-images", type=int, default=1000)
    parser.add_argument("--precisions", default="float32,bfloat16,int8")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--write-verdict", action="store_true", help="write the int8 verdict to the model folder")
    args = parser.parse_args()

    dataset = load_dataset(args.data)
    dev = dataset.split_names("dev")[:args.dev_images]
    scorer = CiderD([dataset.captions[n] for n in dataset.split_names("train")])
    references = {n: dataset.captions[n] for n in dev}
    results, pooled_of, texts_of, runs, folder = {}, {}, {}, {}, None
    for precision in args.precisions.split(","):
        start = time.perf_counter()
        captioner = Captioner.load(allow_download=False, backend="openvino", precision=precision)
        folder = captioner.checkpoint.folder
        names, captions, pooled = decode(captioner, dataset, dev)
        model = captioner.confidence
        split = assess_split(model, dataset, names, captions, pooled, scorer)
        metrics, _ = caption_metrics(references, dict(zip(names, split["texts"])), meteor=False)
        _, nonphoto = nonphoto_features(captioner.encoder, REPORT_SEED)
        pooled_of[precision], texts_of[precision] = pooled, split["texts"]
        runs[precision] = (lambda enc: (lambda x: enc.encode(x)))(captioner.encoder)
        results[precision] = {
            "bleu4": round(float(metrics["BLEU-4"]), 4), "cider": round(float(metrics["CIDEr"]), 4),
            "ece": round(expected_calibration_error(split["confidence"], split["good"]), 4),
            "good_share": round(float(split["good"].mean()), 4),
            "mean_confidence": round(float(np.mean(split["confidence"])), 4),
            "dev_flagged": round(float(np.mean(model.domain.distance(pooled) > model.domain.threshold)), 4),
            "nonphotos_flagged": round(float(np.mean(model.domain.distance(nonphoto) > model.domain.threshold)), 4),
            "bands": {b: round(float(np.mean(np.array(split["bands"]) == b)), 4) for b in ("high", "medium", "low")},
            "seconds": round(time.perf_counter() - start, 1)}
        print(precision, results[precision], file=sys.stderr, flush=True)
        if args.json:  # what is done so far survives an interrupted run (features are cached, too)
            args.json.with_suffix(".partial.json").write_text(json.dumps(results, indent=1) + "\n")
    ref = results["float32"]
    for precision, r in results.items():
        if precision == "float32":
            continue
        cos = feature_cosines(pooled_of["float32"].astype(np.float64), pooled_of[precision].astype(np.float64))
        r["identical_captions"] = round(float(np.mean([a == b for a, b in zip(texts_of["float32"], texts_of[precision])])), 4)
        r["feature_cosine"] = {"mean": round(float(cos.mean()), 5), "min": round(float(cos.min()), 5)}
        drift = {"bleu4": abs(r["bleu4"] - ref["bleu4"]), "cider": abs(r["cider"] - ref["cider"]),
                 "ece": abs(r["ece"] - ref["ece"]),
                 "flag_rate_points": 100 * max(abs(r["dev_flagged"] - ref["dev_flagged"]),
                                               abs(r["nonphotos_flagged"] - ref["nonphotos_flagged"]))}
        r["drift"] = {k: round(v, 4) for k, v in drift.items()}
        r["meets_rule"] = bool(all(drift[k] <= INT8_RULE[k] for k in INT8_RULE))
    pixels = check_pixels()
    speed = time_per_image(runs, pixels, passes=5)
    for precision, ms in speed.items():
        results[precision]["encoder_ms_per_image"] = round(ms, 1)
        results[precision]["speedup"] = round(speed["float32"] / ms, 2)
    report = {"split": "dev", "images": len(dev), "model": folder.name, "decoding": "the folder's default (beam 3)",
              "rule": {"against": "float32", **INT8_RULE,
                       "text": "BLEU-4 within 0.005, CIDEr-D within 0.01, ECE within 0.01, dev-photo and "
                               "non-photo flag rates within 1 point; identical captions reported, not required"},
              "metric_tools": "BLEU: nltk corpus_bleu; CIDEr-D: pycocoevalcap; ECE: 10 bins, good = per-image "
                              "CIDEr-D (training document frequencies) >= 0.4",
              "timing": "encoder only, batch 1, on the self-check images, precisions taking turns, best of 5 passes",
              "precisions": results, "machine": describe_machine(),
              "command": "python experiments/precision_auto.py --json docs/precision-auto.json --write-verdict"}
    if args.write_verdict and "int8" in results:
        r = results["int8"]
        verdict = {"int8": {"auto": r["meets_rule"], "split": "dev", "images": len(dev), "rule": report["rule"]["text"],
                            "measured": {k: r[k] for k in ("bleu4", "cider", "ece", "dev_flagged", "nonphotos_flagged",
                                                            "identical_captions")},
                            "float32": {k: ref[k] for k in ("bleu4", "cider", "ece", "dev_flagged", "nonphotos_flagged")},
                            "why": ("kept BLEU-4, CIDEr-D, ECE and flag rates within the rule" if r["meets_rule"] else
                                    "drifted: " + ", ".join(f"{k} {v}" for k, v in r["drift"].items()
                                                            if v > INT8_RULE[k])),
                            "command": report["command"]}}
        (folder / PRECISION_FILE).write_text(json.dumps(verdict, indent=1) + "\n", encoding="utf-8")
    return emit(report, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
