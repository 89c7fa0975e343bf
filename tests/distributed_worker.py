"""One run of the tiny training that test_distributed.py compares (run as a script, not by pytest).

    python tests/distributed_worker.py OUT_DIR      # one process; with TF_CONFIG: this worker's part

The same synthetic data, config and seed in every run; batches are fixed-shape in both cases, so one
process and two workers see the same global batches. Prints the training summary as one JSON line.
"""
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

CONFIG = TrainConfig(units=16, embedding_dim=8, dropout=0.0, label_smoothing=0.1, epochs=4, batch_size=8,
                     learning_rate=0.01, min_word_count=1, patience=5, lr_patience=1, tune_images=4,
                     average_best=2, seed=7, select_on="tune_cider")

# The same synthetic data in every run: two kinds of image (their features lean one way or the other),
# each with its own captions, so held-out CIDEr rises as the model learns. tf.data splits each global batch.
rng = np.random.default_rng(0)
names = [f"{i}.jpg" for i in range(48)]
kinds = {n: i % 2 for i, n in enumerate(names)}
subjects = (["a dog", "the dog", "a brown dog"], ["a cat", "the cat", "a small cat"])
places = (["grass", "park"], ["sofa", "bed"])
verbs = (["runs on the", "plays in the"], ["sits on the", "sleeps on the"])
captions = {n: [f"{rng.choice(subjects[k])} {rng.choice(verbs[k])} {rng.choice(places[k])}" for _ in range(2)]
            for n, k in kinds.items()}
dataset = CaptionDataset(Path("."), captions, {"train": names[:40], "dev": names[40:]})
centres = rng.normal(size=(2, 2048))
features = {n: (centres[k] + rng.normal(size=2048)).astype("float32") for n, k in kinds.items()}
summary = train(dataset, features, CONFIG, Path(sys.argv[1]), strategy=strategy, log=lambda message: None,
                bucket=False)
print(json.dumps({"worker": cluster_spec()[0], "workers": cluster_spec()[1],
                  "replicas": strategy.num_replicas_in_sync, **summary}))
