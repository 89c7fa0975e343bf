"""Does fine-tuning the top of Xception help? Fine-tune its exit flow on the CPU and compare, held out.

    python bench/exit_flow.py --out runs/exit-flow-joint [--epochs 6] [--cnn-lr 1e-5] [--decoder-lr 1e-4]
        [--models models/merge-lstm models/merge-gru] [--json docs/exit-flow-joint.json]
    python bench/exit_flow.py --out runs/exit-flow-joint --evaluate --dev   # score kept weights again

The published Flickr8k models above BLEU-4 0.21 fine-tune their CNN; ours is frozen. Fine-tuning all
of Xception needs every image through the whole network at every step (hours per epoch on two cores),
but its exit flow (blocks 13-14, 6.8 M parameters, 5 of the encoder's 55 ms per image here) can be
fine-tuned on cached middle-flow activations: 19x19x728 per image, 0.5 MB at float16, 3.7 GB for the
7,091 train + dev images, computed once (about 5 minutes here). Each step then runs only the exit flow
and the decoders (about 3.5 minutes per epoch for two decoders).

The shipped decoders start where they are; the exit flow starts from ImageNet, so epoch 0 is exactly
the shipped model. Batch normalisation keeps its ImageNet statistics (batches of 16 images are too
small to re-estimate them); its scale and shift train. Epochs are kept by the decoders' mean greedy
CIDEr on the held-out training images, and the kept weights are compared with the frozen encoder the
way the default model is chosen (``docs/SELECTION.md``): beam 3 over the length exponents, balanced
score, on the same held-out images. Training never reads dev; ``--dev`` reports dev beam 3 for both
encoders afterwards, at each one's held-out exponent.
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

FIRST_EXIT_LAYER = "block13_sepconv1_act"  # its input is the middle flow's output: (19, 19, 728)
EXIT_BLOCK13 = ("block13_sepconv1_act", "block13_sepconv1", "block13_sepconv1_bn", "block13_sepconv2_act",
                "block13_sepconv2", "block13_sepconv2_bn", "block13_pool")
EXIT_BLOCK14 = ("block14_sepconv1", "block14_sepconv1_bn", "block14_sepconv1_act", "block14_sepconv2",
                "block14_sepconv2_bn", "block14_sepconv2_act")


def load_xception():
    """The ImageNet Xception-notop the encoder uses (verified weights, offline), and their digest."""
    from captioner.serving.weights import build_xception, ensure_weights

    path, digest = ensure_weights()
    base = build_xception()
    base.load_weights(str(path))
    return base, digest


def build_exit_flow(base):
    """Keras model (B, 19, 19, 728) middle-flow output -> (B, 2048) pooled features, sharing ``base``'s
    exit-flow layers; batch normalisation always in inference mode."""
    import keras

    layers = base.layers[[layer.name for layer in base.layers].index(FIRST_EXIT_LAYER):]
    by_name = {layer.name: layer for layer in layers}
    # the residual branch's layers have construction-order names (conv2d_3, ...): find them by type
    shortcut_conv = next(layer for layer in layers if type(layer) is keras.layers.Conv2D)
    shortcut_bn = layers[layers.index(by_name["block13_pool"]) + 1]
    add = next(layer for layer in layers if isinstance(layer, keras.layers.Add))

    def run(names, x):
        for name in names:
            layer = by_name[name]
            x = layer(x, training=False) if isinstance(layer, keras.layers.BatchNormalization) else layer(x)
        return x

    middle = keras.Input((19, 19, 728), name="middle_flow")
    shortcut = shortcut_bn(shortcut_conv(middle), training=False)  # (B, 10, 10, 1024)
    x = add([run(EXIT_BLOCK13, middle), shortcut])  # (B, 10, 10, 1024)
    x = run(EXIT_BLOCK14, x)  # (B, 10, 10, 2048)
    return keras.Model(middle, keras.layers.GlobalAveragePooling2D()(x), name="exit_flow")


def cache_middle_flow(base, dataset, names: list[str], folder: Path, batch: int = 32) -> np.ndarray:
    """(N, 19, 19, 728) float16 memory-map of ``names``' middle-flow activations, computed once through
    the shared ``preprocess_image`` (written to a temporary file, renamed when complete)."""
    from concurrent.futures import ThreadPoolExecutor

    import keras
    import tensorflow as tf

    from captioner.serving.images import load_and_preprocess

    folder.mkdir(parents=True, exist_ok=True)
    path, names_path = folder / "middle.npy", folder / "names.txt"
    if path.is_file() and names_path.is_file() and names_path.read_text().split("\n") == names:
        return np.load(path, mmap_mode="r")
    middle = keras.Model(base.input, base.get_layer(FIRST_EXIT_LAYER).input)
    forward = tf.function(lambda x: tf.cast(middle(x, training=False), tf.float16),
                          input_signature=[tf.TensorSpec([None, 299, 299, 3], tf.float32)])
    tmp = folder / "middle.tmp.npy"
    acts = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(names), 19, 19, 728))
    start = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:  # decode the next images while the encoder runs
        for i in range(0, len(names), batch):
            chunk = names[i:i + batch]
            pixels = np.stack(list(pool.map(lambda n: load_and_preprocess(dataset.image_path(n)), chunk)))
            acts[i:i + len(chunk)] = forward(pixels).numpy()
            if i % (20 * batch) == 0:
                print(f"middle flow: {i + len(chunk)}/{len(names)} ({time.perf_counter() - start:.0f} s)", flush=True)
    acts.flush()
    del acts
    tmp.replace(path)
    names_path.write_text("\n".join(names))
    return np.load(path, mmap_mode="r")


def beam3_sweep(exit_flow, checkpoints, decoders, acts, row, names, dataset, alphas) -> dict:
    """Beam-3 metrics on ``names`` per length exponent of the ``decoders`` (the ``checkpoints``' models,
    possibly fine-tuned) voting as the app would run them, and the exponent the balanced rule picks."""
    from dataclasses import replace

    from captioner import Captioner
    from captioner.config import DecodeConfig
    from captioner.pipeline.evaluate import BALANCED_METRICS, balanced_scores, caption_metrics

    members = [replace(c, model=d) for c, d in zip(checkpoints, decoders)]
    captioner = Captioner(None, members[0] if len(members) == 1 else replace(members[0], members=members))
    feats = pooled(exit_flow, acts, [row[n] for n in names])
    sweep = {}
    for alpha in alphas:
        predictions = {}
        for i in range(0, len(names), 64):
            captions = captioner.caption_features(feats[i:i + 64], DecodeConfig(beam_width=3, length_alpha=alpha))
            predictions.update({n: caps[0].text for n, caps in zip(names[i:i + 64], captions)})
        metrics, _ = caption_metrics({n: dataset.captions[n] for n in predictions}, predictions)
        sweep[str(alpha)] = {m: round(metrics[m], 4) for m in BALANCED_METRICS}
    balanced = balanced_scores(sweep)
    best = max(balanced, key=balanced.get)
    return {"sweep": sweep, "balanced": balanced, "alpha": float(best), "at_alpha": sweep[best]}


def pooled(exit_flow, acts, rows: list[int], batch: int = 64) -> np.ndarray:
    """(N, 2048) features of the given cache rows through ``exit_flow``."""
    out = [exit_flow(np.asarray(acts[rows[i:i + batch]], np.float32), training=False).numpy()
           for i in range(0, len(rows), batch)]
    return np.concatenate(out)


def _relative(path: str) -> str:
    """``path`` relative to the repository when it lies inside it (for committed JSON)."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "flickr8k"))
    ap.add_argument("--models", nargs="+", default=[str(ROOT / "models" / "merge-lstm"),
                                                    str(ROOT / "models" / "merge-gru")])
    ap.add_argument("--cache", help="middle-flow cache folder (default: the captioner cache)")
    ap.add_argument("--out", required=True, help="folder for the kept exit flow and decoders")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--patience", type=int, default=2)
    ap.add_argument("--cnn-lr", type=float, default=1e-5)
    ap.add_argument("--decoder-lr", type=float, default=1e-4, help="0 keeps the decoders fixed")
    ap.add_argument("--batch-images", type=int, default=16, help="images per step, each with all its captions")
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--alphas", default="0.4,0.7,1.0,1.3")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--evaluate", action="store_true", help="skip training: score the weights kept in --out")
    ap.add_argument("--dev", action="store_true", help="also report dev beam 3 (after the held-out choice)")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)

    import keras
    import tensorflow as tf

    from captioner.serving.model_folder import load_checkpoint
    from captioner.pipeline.data import load_dataset
    from captioner.pipeline.train import TUNE_FILE, encode_captions, make_loss, tune_cider
    from captioner.serving.weights import cache_dir

    keras.utils.set_random_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(args.data)
    checkpoints = [load_checkpoint(m) for m in args.models]
    vocab = checkpoints[0].vocab
    if any(c.vocab != vocab for c in checkpoints) or any(c.is_ensemble for c in checkpoints):
        raise SystemExit("--models: single model folders sharing one vocabulary")
    tune_names = (Path(args.models[0]) / TUNE_FILE).read_text().split()
    held_out = set(tune_names)
    base, digest = load_xception()
    names = dataset.split_names("train") + dataset.split_names("dev")
    cache = Path(args.cache) if args.cache else cache_dir() / "middle-flow" / digest[:16]  # per encoder weights
    acts = cache_middle_flow(base, dataset, names, cache)
    row = {n: i for i, n in enumerate(names)}
    train_names = [n for n in dataset.split_names("train") if n not in held_out]
    exit_flow = build_exit_flow(base)
    decoders = [c.model for c in checkpoints]
    alphas = [float(a) for a in args.alphas.split(",")]
    frozen = beam3_sweep(exit_flow, checkpoints, decoders, acts, row, tune_names, dataset, alphas)
    print(f"frozen Xception, held-out beam 3: {frozen['at_alpha']} (exponent {frozen['alpha']})", flush=True)
    dev_names, dev = dataset.split_names("dev"), {}
    if args.dev:  # scored now, before training changes the shared layers (and, jointly, the decoders)
        dev["frozen"] = beam3_sweep(exit_flow, checkpoints, decoders, acts, row, dev_names, dataset,
                                    [frozen["alpha"]])["at_alpha"]
        print(f"frozen: dev beam 3 {dev['frozen']} (exponent {frozen['alpha']})", flush=True)

    history = []
    if not args.evaluate:
        index, sequences = encode_captions(dataset, train_names, vocab, checkpoints[0].config.max_caption_words)
        per_image = np.bincount(index)
        if per_image.min() != per_image.max():
            raise SystemExit("every training image needs the same number of captions for image-major batches")
        captions = sequences.reshape(len(train_names), per_image[0], -1)  # (N, 5, T)
        loss_fn = make_loss(args.label_smoothing)
        cnn_vars = exit_flow.trainable_variables
        decoder_vars = [v for d in decoders for v in d.trainable_variables] if args.decoder_lr > 0 else []
        cnn_opt = keras.optimizers.Adam(args.cnn_lr, clipnorm=5.0)
        decoder_opt = keras.optimizers.Adam(args.decoder_lr, clipnorm=5.0) if decoder_vars else None

        @tf.function(reduce_retracing=True)
        def train_step(middle, words, targets, mask):
            with tf.GradientTape() as tape:
                feats = exit_flow(tf.cast(middle, tf.float32), training=False)  # (B, 2048)
                feats = tf.repeat(feats, per_image[0], axis=0)  # (B * 5, 2048): one row per caption
                loss = tf.add_n([loss_fn(targets, d([feats, words], training=True), sample_weight=mask)
                                 for d in decoders])
            grads = tape.gradient(loss, cnn_vars + decoder_vars)
            cnn_opt.apply_gradients(zip(grads[:len(cnn_vars)], cnn_vars))
            if decoder_vars:
                decoder_opt.apply_gradients(zip(grads[len(cnn_vars):], decoder_vars))
            return loss / len(decoders)

        def greedy_scores():
            feats = pooled(exit_flow, acts, [row[n] for n in tune_names])
            refs = [dataset.captions[n] for n in tune_names]
            return [round(tune_cider(d, feats, refs, vocab), 4) for d in decoders]

        def keep():
            exit_flow.save_weights(out / "exit_flow.weights.h5")
            for folder, decoder in zip(args.models, decoders):
                decoder.save(out / f"{Path(folder).name}.keras")

        scores = greedy_scores()
        history = [{"epoch": 0, "held_out_greedy_cider": scores}]
        best, since_best, rng = float(np.mean(scores)), 0, np.random.default_rng(args.seed)
        print(f"epoch 0: held-out greedy CIDEr {scores}", flush=True)
        keep()
        for epoch in range(1, args.epochs + 1):
            start, losses = time.perf_counter(), []
            order = rng.permutation(len(train_names))
            for i in range(0, len(order), args.batch_images):
                chunk = np.sort(order[i:i + args.batch_images])  # sorted rows read the memory-map in order
                seqs = captions[chunk].reshape(-1, captions.shape[-1])
                seqs = seqs[:, :int((seqs != 0).sum(axis=1).max())]  # pad only to this batch's longest
                middle = acts[[row[train_names[j]] for j in chunk]]
                mask = (seqs[:, 1:] != 0).astype("float32")
                losses.append(float(train_step(middle, seqs[:, :-1], seqs[:, 1:], mask)))
            scores = greedy_scores()
            seconds = round(time.perf_counter() - start)
            history.append({"epoch": epoch, "loss": round(float(np.mean(losses)), 4),
                            "held_out_greedy_cider": scores, "seconds": seconds})
            print(f"epoch {epoch}: loss {np.mean(losses):.4f}, held-out greedy CIDEr {scores} ({seconds} s)",
                  flush=True)
            if np.mean(scores) > best:
                best, since_best = float(np.mean(scores)), 0
                keep()
            else:
                since_best += 1
                if since_best >= args.patience:
                    break
    exit_flow.load_weights(out / "exit_flow.weights.h5")
    decoders = [keras.models.load_model(out / f"{Path(f).name}.keras", compile=False) for f in args.models]
    tuned = beam3_sweep(exit_flow, checkpoints, decoders, acts, row, tune_names, dataset, alphas)
    print(f"fine-tuned exit flow, held-out beam 3: {tuned['at_alpha']} (exponent {tuned['alpha']})", flush=True)
    if args.dev:
        dev["fine_tuned"] = beam3_sweep(exit_flow, checkpoints, decoders, acts, row, dev_names, dataset,
                                        [tuned["alpha"]])["at_alpha"]
        print(f"fine-tuned: dev beam 3 {dev['fine_tuned']} (exponent {tuned['alpha']})", flush=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("json", "data", "cache")}
    settings["models"] = [_relative(m) for m in args.models]
    result = {"settings": settings,
              "held_out_images": len(tune_names), "training_images": len(train_names),
              "exit_flow_parameters": int(exit_flow.count_params()),
              "history": history, "held_out_beam3": {"frozen": frozen, "fine_tuned": tuned}}
    if dev:
        result["dev_beam3"] = dev
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
