"""One worker of the two-process tf.distribute test (run by test_distributed.py, not by pytest)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from captioner.pipeline.distributed import cluster_spec, distribution_strategy

strategy = distribution_strategy()  # first: MultiWorkerMirroredStrategy must precede other TF work

import numpy as np  # noqa: E402

from captioner.config import TrainConfig  # noqa: E402
from captioner.pipeline.data import CaptionDataset  # noqa: E402
from captioner.pipeline.train import train  # noqa: E402

rng = np.random.default_rng(0)  # the same synthetic data on both workers; tf.data shards it
names = [f"{i}.jpg" for i in range(48)]
words = ["a", "dog", "cat", "runs", "sits", "on", "the", "grass", "sofa"]
captions = {n: [" ".join(rng.choice(words, size=int(rng.integers(3, 8)))) for _ in range(2)] for n in names}
dataset = CaptionDataset(Path("."), captions, {"train": names[:40], "dev": names[40:]})
features = {n: rng.normal(size=2048).astype("float32") for n in names}
cfg = TrainConfig(units=16, embedding_dim=8, epochs=2, batch_size=8, min_word_count=1, patience=5, tune_images=0)
summary = train(dataset, features, cfg, Path(sys.argv[1]), strategy=strategy, log=lambda message: None)
print(json.dumps({"worker": cluster_spec()[0], "replicas": strategy.num_replicas_in_sync,
                  "loss": summary["loss"]}))
