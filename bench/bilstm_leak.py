"""Why the merge model has no BiLSTM text branch: with full-sequence teacher forcing it cheats.

    python bench/bilstm_leak.py [--epochs 2] [--json docs/bilstm.json]

A bidirectional LSTM over ``<start> w1 … wn`` lets position t read w(t+1) through its backward half,
which is exactly the word it must predict. Trained that way, its teacher-forced dev loss collapses far
below any causal model's, yet at generation time the future words do not exist and the captions fall
apart. This script trains the merge model with ``Bidirectional(LSTM)`` on the cached pooled features
for a couple of epochs, then prints its dev loss next to the shipped causal LSTM's at the same epochs,
and its greedy CIDEr on the held-out training images (decoded by re-reading the whole prefix at every
step, the only way a BiLSTM can generate). A leak-free BiLSTM needs one training sample per caption
prefix, which ``bench/run.py`` (e) measures at tens of times slower per epoch on this CPU.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_bilstm_merge(vocab_size: int, units: int, embedding_dim: int, dropout: float):
    """The shipped merge model with a Bidirectional LSTM (units/2 each way) as its text branch."""
    import keras
    from keras import layers

    features = keras.Input((2048,), name="features")
    words = keras.Input((None,), dtype="int32", name="words")
    image = layers.Dense(units, activation="relu")(layers.Dropout(dropout)(features))
    image = layers.Reshape((1, units))(image)  # (B, 1, U)
    embedded = layers.Dropout(dropout)(layers.Embedding(vocab_size, embedding_dim, mask_zero=True)(words))
    text = layers.Bidirectional(layers.LSTM(units // 2, return_sequences=True))(embedded)  # (B, T, U)
    merged = layers.Dropout(dropout)(layers.Add()([image, text]))
    logits = layers.Dense(vocab_size)(layers.Dense(units, activation="relu")(merged))  # (B, T, V)
    return keras.Model([features, words], logits)


def greedy_by_prefix(model, feats: np.ndarray, vocab, max_words: int = 20) -> list[str]:
    """Greedy decoding that re-runs the whole model on the prefix at every step (O(T^2))."""
    words = np.full((len(feats), 1), vocab.start_id, np.int32)
    done = np.zeros(len(feats), bool)
    for _ in range(max_words):
        logits = model([feats, words], training=False).numpy()[:, -1]  # (B, V) at the last position
        logits[:, [vocab.pad_id, vocab.start_id, vocab.unk_id]] = -np.inf
        nxt = np.where(done, vocab.end_id, logits.argmax(-1)).astype(np.int32)
        done |= nxt == vocab.end_id
        words = np.concatenate([words, nxt[:, None]], axis=1)
        if done.all():
            break
    return [vocab.decode(row[1:]) or "<empty>" for row in words]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "flickr8k"))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--reference", default=str(ROOT / "models" / "merge-lstm"), help="causal model to compare with")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)

    import keras
    from pycocoevalcap.cider.cider import Cider

    from captioner.config import TrainConfig
    from captioner.pipeline.data import load_dataset
    from captioner.serving.encoder import XceptionEncoder
    from captioner.pipeline.features import extract_features
    from captioner.pipeline.train import encode_captions, hold_out, make_dataset, make_loss
    from captioner.serving.vocab import Vocabulary

    ref_cfg = TrainConfig.from_json(json.loads((Path(args.reference) / "config.json").read_text()))
    ref_training = json.loads((Path(args.reference) / "training.json").read_text())
    keras.utils.set_random_seed(ref_cfg.seed)
    dataset = load_dataset(args.data)
    encoder = XceptionEncoder.load()
    train_names, tune_names = hold_out(dataset.split_names("train"), ref_cfg.tune_images, ref_cfg.seed)
    dev_names = dataset.split_names("dev")
    every = train_names + tune_names + dev_names
    extracted = extract_features(encoder, [dataset.image_path(n) for n in every])
    feats = dict(zip(extracted.names, extracted.features))
    vocab = Vocabulary.fit((c for n in train_names for c in dataset.captions[n]), ref_cfg.min_word_count)

    def data(names, shuffle):
        idx, seqs = encode_captions(dataset, names, vocab, ref_cfg.max_caption_words)
        return make_dataset(np.stack([feats[n] for n in names]), idx, seqs, ref_cfg.batch_size, shuffle, ref_cfg.seed)

    model = build_bilstm_merge(len(vocab), ref_cfg.units, ref_cfg.embedding_dim, ref_cfg.dropout)
    model.compile(optimizer=keras.optimizers.Adam(ref_cfg.learning_rate, clipnorm=5.0),
                  loss=make_loss(ref_cfg.label_smoothing), weighted_metrics=[])
    start = time.perf_counter()
    history = model.fit(data(train_names, True), validation_data=data(dev_names, False), epochs=args.epochs,
                        verbose=2).history
    seconds = time.perf_counter() - start
    predictions = greedy_by_prefix(model, np.stack([feats[n] for n in tune_names]), vocab)
    cider = Cider().compute_score({i: dataset.captions[n] for i, n in enumerate(tune_names)},
                                  {i: [p] for i, p in enumerate(predictions)})[0]
    result = {
        "bilstm_dev_loss_by_epoch": [round(x, 4) for x in history["val_loss"]],
        "causal_lstm_dev_loss_by_epoch": [round(x, 4) for x in ref_training["val_loss"][:args.epochs]],
        "bilstm_heldout_greedy_cider": round(float(cider), 4),
        "causal_lstm_heldout_greedy_cider_by_epoch": [round(x, 4) for x in ref_training.get("tune_cider", [])[:args.epochs]],
        "bilstm_parameters": int(model.count_params()), "bilstm_train_seconds": round(seconds, 1),
        "sample_captions": predictions[:5], "reference_model": str(args.reference),
        "split_for_loss": "dev (teacher-forced, label-smoothed like the reference)",
        "split_for_cider": f"{len(tune_names)} held-out training images, greedy, pycocoevalcap CIDEr-D",
    }
    for key, value in result.items():
        print(f"{key}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
