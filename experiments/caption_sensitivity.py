"""How much feature noise do the default model's captions survive? Gaussian noise of growing size added to
float32 Xception features of held-out training images (never dev), against the share of beam-3
captions that stay word for word the same: the yardstick for any cheaper encoder (int8 must keep 90%).

    python experiments/caption_sensitivity.py [--images 300] [--json docs/caption-sensitivity.json]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.report import emit  # noqa: E402

NOISE_LEVELS = (0.01, 0.02, 0.04, 0.06, 0.1)  # noise std as a share of each feature vector's own std


def main() -> int:
    from captioner import Captioner
    from captioner.pipeline.data import load_dataset
    from captioner.machine import describe_machine
    from captioner.serving import model_folder as mf
    from captioner.serving.encoder import feature_cosines
    from captioner.serving.images import load_and_preprocess

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    captioner = Captioner.load(allow_download=False)
    dataset = load_dataset(args.data)
    names = mf.read_tune_images(captioner.checkpoint.folder)[:args.images]
    features = captioner.encode(np.stack([load_and_preprocess(dataset.image_path(n)) for n in names]))  # (N, 2048)
    decode = captioner.default_decode(beam_width=3)
    reference = [c[0].tokens for c in captioner.caption_features(features, decode)]
    rng = np.random.default_rng(0)
    rows = []
    for level in NOISE_LEVELS:
        noise = rng.normal(size=features.shape).astype(np.float32) * level * features.std(axis=1, keepdims=True)
        noisy = features + noise
        cosine = feature_cosines(features, noisy)
        captions = [c[0].tokens for c in captioner.caption_features(noisy, decode)]
        rows.append({"noise_std_share": level, "feature_cosine_mean": round(float(cosine.mean()), 5),
                     "identical_captions": round(float(np.mean([a == b for a, b in zip(reference, captions)])), 4)})
    return emit({"split": f"held-out training images of {captioner.checkpoint.folder.name} ({len(names)})",
                 "decoding": "beam 3", "model": captioner.checkpoint.folder.name, "encoder": captioner.encoder.backend,
                 "rows": rows, "machine": describe_machine(),
                 "command": "python experiments/caption_sensitivity.py"}, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
