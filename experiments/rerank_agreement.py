"""Does ranking the beam by consensus help as much on dev as on the held-out images it was chosen on?

    python experiments/rerank_agreement.py models/merge-zh [--data DIR] [--boot 2000]

For the folder's held-out training images and for dev: the share of pictures whose caption changes
between the two rankings, the mean per-image CIDEr-D (training-reference document frequencies, the
calibration's definition) by score and by consensus with a 95% bootstrap interval on the paired
difference, and how close each picture is to its nearest training photo in the neighbour index (mean
cosine in the domain check's subspace: a held-out picture closer to its neighbours than a dev picture
would favour consensus on held-out images only). Dev is read here only to report, never to choose.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from captioner.pipeline.calibrate import cider_scores
    from captioner.pipeline.data import load_dataset
    from captioner.pipeline.features import extract_features
    from captioner.serving.captioner import Captioner
    from captioner.serving.cider import CiderD
    from captioner.serving.domain import pooled_features, unit_rows
    from captioner.serving.model_folder import read_tune_images

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--data", default=None)
    parser.add_argument("--boot", type=int, default=2000)
    args = parser.parse_args()
    captioner = Captioner.load(args.model, allow_download=False, precision="float32")
    if captioner.ranker is None:
        raise SystemExit(f"{args.model}: no calibration, so no neighbour index to rank by")
    dataset = load_dataset(args.data, captioner.lang)
    scorer = CiderD([dataset.captions[n] for n in dataset.split_names("train")])
    held_out = [n for n in read_tune_images(Path(args.model)) if n in dataset.captions]
    decode = captioner.default_decode(beam_width=3, wording="as-learned")
    rng = np.random.default_rng(0)
    for label, names in (("held-out", held_out), ("dev", dataset.split_names("dev"))):
        ex = extract_features(captioner.encoder, [dataset.image_dir / n for n in names], progress=False,
                              kind=captioner.feature_kind)
        tokens = {}
        for ranking in ("score", "consensus"):
            tokens[ranking] = [caps[0].tokens for i in range(0, len(ex.names), 64)
                               for caps in captioner.caption_features(ex.features[i:i + 64],
                                                                      replace(decode, rerank=ranking))]
        cider = {r: cider_scores(dataset, ex.names, ts, scorer) for r, ts in tokens.items()}
        diff = cider["consensus"] - cider["score"]  # (N,) paired per-picture differences
        boots = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(args.boot)]
        low, high = np.percentile(boots, [2.5, 97.5])
        coords = unit_rows(captioner.ranker.domain.project(pooled_features(ex.features)))  # (N, k)
        nearest = (coords @ captioner.ranker.neighbours.coords.T).max(axis=1)
        changed = np.mean([a != b for a, b in zip(tokens["score"], tokens["consensus"])])
        print(f"{label}: {len(ex.names)} pictures, {changed:.0%} captions changed; CIDEr-D by score "
              f"{cider['score'].mean():.3f}, by consensus {cider['consensus'].mean():.3f}, difference "
              f"{diff.mean():+.3f} (95% bootstrap [{low:+.3f}, {high:+.3f}]); nearest training photo cosine "
              f"{nearest.mean():.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
