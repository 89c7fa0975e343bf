"""Is an int8 Xception good enough? NNCF post-training quantisation of the OpenVINO encoder on training
images (never dev), then the default model's dev captions (beam 3) from int8 features against float32
features: share of identical captions, BLEU-4 and CIDEr-D of both, feature cosine, and the encoder's
speed at batch 1 and 8 in the same run.

The bar: dev BLEU-4 and CIDEr-D within 0.005 of float32 and at least 90% identical captions.

    pip install nncf   # only for this experiment (and for building the int8 IR)
    python experiments/int8_encoder.py [--calibration-images 300] [--json docs/int8-encoder.json]
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.report import emit  # noqa: E402


def main() -> int:
    import nncf

    from captioner import Captioner, DecodeConfig
    from captioner.pipeline.data import load_dataset
    from captioner.pipeline.evaluate import caption_metrics
    from captioner.machine import describe_machine
    from captioner.serving.images import load_image, preprocess_image

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--calibration-images", type=int, default=300)
    parser.add_argument("--dev-images", type=int, default=1000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from captioner.pipeline.workflows import quantize_encoder
    from captioner.serving.encoder import XceptionEncoder, feature_cosines

    start = time.perf_counter()
    int8_xml = quantize_encoder(args.data, args.calibration_images)  # as `python -m captioner quantize` does
    quantise_s = time.perf_counter() - start
    captioner = Captioner.load(allow_download=False, backend="openvino")
    dataset = load_dataset(args.data)
    compiled = {"float32": captioner.encoder._openvino.compiled,
                "int8": XceptionEncoder.load(allow_download=False, precision="int8")._openvino.compiled}

    def encode(model, batch: np.ndarray) -> np.ndarray:
        request = model.create_infer_request()
        request.infer([batch])
        return np.array(request.get_tensor(model.output("pooled")).data, np.float32)

    dev = dataset.split_names("dev")[:args.dev_images]
    feats = {k: [] for k in compiled}
    for i in range(0, len(dev), 16):
        batch = np.stack([preprocess_image(load_image(dataset.image_path(n))) for n in dev[i:i + 16]])
        for k, model in compiled.items():
            feats[k].append(encode(model, batch))
    feats = {k: np.concatenate(v) for k, v in feats.items()}
    a, b = feats["float32"], feats["int8"]
    cosine = feature_cosines(a, b)

    decode = replace(DecodeConfig(beam_width=3), length_alpha=captioner.checkpoint.length_alpha)
    captions, scores = {}, {}
    references = {n: dataset.captions[n] for n in dev}
    for k, f in feats.items():
        captions[k] = {n: c[0].tokens for n, c in zip(dev, captioner.caption_features(f, decode))}
        metrics, _ = caption_metrics(references, captions[k], meteor=False)
        scores[k] = {m: round(metrics[m], 4) for m in ("BLEU-1", "BLEU-4", "CIDEr")}
    identical = float(np.mean([captions["float32"][n] == captions["int8"][n] for n in dev]))

    speed = {}
    one = np.stack([preprocess_image(load_image(dataset.image_path(dev[0])))])
    eight = np.stack([preprocess_image(load_image(dataset.image_path(n))) for n in dev[:8]])
    for k, model in compiled.items():
        for label, batch, reps in (("batch 1", one, 20), ("batch 8", eight, 4)):
            encode(model, batch)  # warm
            start = time.perf_counter()
            for _ in range(reps):
                encode(model, batch)
            speed.setdefault(k, {})[label] = round(1000 * (time.perf_counter() - start) / reps / len(batch), 1)
    report = {
        "split": "dev", "images": len(dev), "decoding": "beam 3", "model": captioner.checkpoint.folder.name,
        "decoders": captioner.decoder_backend,
        "calibration": f"{args.calibration_images} Flickr8k training images (not dev, not the held-out images), "
                       f"NNCF {nncf.__version__} post-training quantisation, preset PERFORMANCE",
        "quantise_seconds": round(quantise_s, 1), "identical_captions": round(identical, 4),
        "feature_cosine": {"mean": round(float(cosine.mean()), 4), "min": round(float(cosine.min()), 4)},
        "metrics": scores, "metric_tools": "BLEU: nltk corpus_bleu; CIDEr-D: pycocoevalcap",
        "encoder_ms_per_image": speed,
        "speedup": {label: round(speed["float32"][label] / speed["int8"][label], 2) for label in speed["int8"]},
        "bar": "BLEU-4 and CIDEr-D within 0.005 of float32, >= 90% identical captions",
        "meets_bar": bool(identical >= 0.9 and all(abs(scores["int8"][m] - scores["float32"][m]) <= 0.005
                                                    for m in ("BLEU-4", "CIDEr"))),
        "int8_ir": str(int8_xml), "machine": describe_machine(),
        "command": "python experiments/int8_encoder.py"}
    return emit(report, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
