"""Speed benchmarks for captioner: figures a-k of docs/PERFORMANCE.md.

Compiled decoding steps, batched beam search, encoder backends and precisions, training epochs, cold
start and page load.

    python bench/run.py                 # all benchmarks, a table of figures and ratios
    python bench/run.py --only a,b,c    # a subset
    python bench/run.py --json out.json # also a JSON summary

Each benchmark times the things it compares in the same run, on the same checkpoint and images, and
prints ratios. They are measurements, not tests: nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def timed(fn, repeat: int = 3):
    """Best wall time of ``repeat`` calls (after one warm-up) and the last result."""
    result = fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


class Bench:
    def __init__(self, n_images: int, model: Path | None = None):
        from captioner import Captioner
        from captioner.pipeline.data import load_dataset
        from captioner.serving.images import load_and_preprocess

        self.captioner = Captioner.load(model, allow_download=False)  # what users get: the fastest backend here
        self._keras = None
        self.dataset = load_dataset()
        self.names = self.dataset.split_names("dev")[:n_images]
        self.pixels = np.stack([load_and_preprocess(self.dataset.image_path(n)) for n in self.names])
        self.features = self.captioner.encode(self.pixels)
        self.vocab = self.captioner.vocab
        self.figures: dict[str, dict] = {}

    @property
    def keras_checkpoint(self):
        """The model folder with its Keras decoders (for the figures that compare training-time code)."""
        from captioner.serving.model_folder import load_checkpoint

        if self._keras is None:
            self._keras = load_checkpoint(self.captioner.checkpoint.folder)
        return self._keras

    def decode(self, stepper, feats, width):
        """Best caption ids per row of ``feats``, decoded as the app decodes (the model's DecodeConfig)."""
        from captioner.serving.decoding import decode_with

        decode = self.captioner.default_decode(beam_width=width)
        return [hyps[0].ids for hyps in decode_with(stepper, feats, self.vocab, decode)]

    def a_reference(self, n: int = 5):
        """Predict-per-word reference vs our compiled steps, greedy and beam 5 (decoding only)."""
        sys.path.insert(0, str(ROOT / "bench"))
        from reference import PredictPerWordStepper

        from captioner.serving.decoders import make_stepper

        checkpoint = self.keras_checkpoint  # an ensemble's first member: the same decoder on both sides
        ref, ours = PredictPerWordStepper(checkpoint.model), make_stepper(checkpoint.model, checkpoint.config.decoder)
        feats = self.features[:n]
        out = {}
        for width in (1, 5):
            t_ref, ids_ref = timed(lambda: [self.decode(ref, f[None], width)[0] for f in feats], repeat=1)
            t_ours, ids_ours = timed(lambda: [self.decode(ours, f[None], width)[0] for f in feats])
            label = "greedy" if width == 1 else "beam 5"
            out[label] = {"reference_s_per_image": t_ref / n, "ours_s_per_image": t_ours / n,
                          "speedup": t_ref / t_ours, "same_captions": ids_ref == ids_ours}
        self.figures["a"] = out
        return out

    def b_beam_vs_greedy(self):
        """Beam 5 vs greedy: per image, decoding only and the full caption (encoder included)."""
        feats, pixels = self.features[:20], self.pixels[:20]
        enc = self.captioner  # .encode gives the features this model's decoder reads
        t_g, _ = timed(lambda: [self.decode(self.captioner.stepper, f[None], 1) for f in feats])
        t_b, _ = timed(lambda: [self.decode(self.captioner.stepper, f[None], 5) for f in feats])
        t_e, _ = timed(lambda: [enc.encode(p[None]) for p in pixels], repeat=1)
        n = len(feats)
        out = {"greedy_decode_ms": 1000 * t_g / n, "beam5_decode_ms": 1000 * t_b / n,
               "decode_ratio": t_b / t_g, "full_caption_ratio": (t_e + t_b) / (t_e + t_g)}
        self.figures["b"] = out
        return out

    def c_caption_vs_encoder(self):
        """Full caption (encoder + beam 5) vs the encoder forward pass alone, one image at a time."""
        pixels = self.pixels[:10]
        enc = self.captioner  # .encode gives the features this model's decoder reads

        def full():
            for p in pixels:
                self.decode(self.captioner.stepper, enc.encode(p[None]), 5)

        t_enc, _ = timed(lambda: [enc.encode(p[None]) for p in pixels])
        t_full, _ = timed(full)
        out = {"encoder_s": t_enc / len(pixels), "full_caption_s": t_full / len(pixels), "ratio": t_full / t_enc}
        self.figures["c"] = out
        return out

    def d_throughput(self):
        """Images per second (encoder + beam 3) for batches of 1, 8 and 32."""

        out = {}
        for batch in (1, 8, 32):
            pixels = self.pixels[:32]

            def run():
                for i in range(0, len(pixels), batch):
                    feats = self.captioner.encode(pixels[i:i + batch])
                    self.captioner.caption_features(feats, self.captioner.default_decode(beam_width=3))

            t, _ = timed(run, repeat=1)
            out[f"batch_{batch}_images_per_s"] = len(pixels) / t
        out["batch32_vs_batch1"] = out["batch_32_images_per_s"] / out["batch_1_images_per_s"]
        self.figures["d"] = out
        return out

    def e_training(self, n_images: int = 300):
        """Seconds per epoch: full-sequence teacher forcing vs one sample per prefix, same captions."""
        import keras

        from captioner.config import TrainConfig
        from captioner.serving.decoders.merge import build_model as build_merge_model
        from captioner.serving.images import load_and_preprocess
        from captioner.pipeline.engine import Batches
        from captioner.pipeline.train import encode_captions, make_dataset, teacher_forcing_steps

        cfg = TrainConfig.from_json(self.keras_checkpoint.config.to_json())
        names = self.dataset.split_names("train")[:n_images]
        feats = self.captioner.encoder.encode(np.stack([load_and_preprocess(self.dataset.image_path(n))
                                                        for n in names]))
        idx, seqs = encode_captions(self.dataset, names, self.vocab, cfg.max_caption_words)
        full = build_merge_model(len(self.vocab), cfg)
        steps = teacher_forcing_steps(full, cfg)  # the training loop's own compiled steps
        ds = make_dataset(feats, idx, seqs, cfg.batch_size, True, 0)
        steps.train_epoch(Batches(ds))  # one untimed epoch: traces every batch width (length buckets)
        start = time.perf_counter()
        steps.train_epoch(Batches(ds))
        t_full = time.perf_counter() - start
        # one sample per prefix: (features, prefix padded to max) -> next word, the tutorials' way
        x_img, x_seq, y = [], [], []
        width = seqs.shape[1] - 1
        for i, seq in zip(idx, seqs):
            length = int((seq != 0).sum())
            for t in range(1, length):
                prefix = np.zeros(width, np.int32)
                prefix[:t] = seq[:t]
                x_img.append(feats[i]), x_seq.append(prefix), y.append(seq[t])
        per_prefix = build_merge_model(len(self.vocab), cfg)
        inputs = per_prefix.inputs
        logits = per_prefix.output  # (B, T, V); the prefix's last real position is picked by gather
        pos = keras.Input((), dtype="int32", name="position")
        picked = keras.ops.take_along_axis(logits, keras.ops.reshape(pos, (-1, 1, 1)), axis=1)[:, 0]
        model = keras.Model([*inputs, pos], picked)
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        x_img, x_seq, y = np.array(x_img), np.array(x_seq), np.array(y)
        positions = (x_seq != 0).sum(axis=1) - 1
        model.fit([x_img[:256], x_seq[:256], positions[:256]], y[:256], batch_size=cfg.batch_size, verbose=0)
        start = time.perf_counter()
        model.fit([x_img, x_seq, positions], y, batch_size=cfg.batch_size, epochs=1, verbose=0)
        t_prefix = time.perf_counter() - start
        out = {"images": n_images, "captions": len(seqs), "prefix_samples": len(y), "full_sequence_s": t_full,
               "per_prefix_s": t_prefix, "ratio": t_prefix / t_full}
        self.figures["e"] = out
        return out

    def g_encoder_precision(self):
        """bfloat16 encoder vs float32: speed, feature cosine, and identical captions on these images."""
        from captioner.serving.encoder import XceptionEncoder, bf16_supported, feature_cosines
        from captioner.serving.weights import ensure_weights

        if not bf16_supported():
            self.figures["g"] = {"skipped": "this CPU has no native bfloat16 (avx512_bf16 / amx_bf16)"}
            return self.figures["g"]
        path, digest = ensure_weights(allow_download=False)
        fast = XceptionEncoder(path, digest, precision="bfloat16")
        pixels = self.pixels
        spatial = self.captioner.feature_kind == "spatial"
        t32, f32 = timed(lambda: self.captioner.encode(pixels), repeat=1)
        t16, f16 = timed(lambda: fast.encode(pixels, spatial=spatial), repeat=1)
        cos = feature_cosines(f32, f16)
        c32 = [c[0].text for c in self.captioner.caption_features(f32, self.captioner.default_decode(beam_width=3))]
        c16 = [c[0].text for c in self.captioner.caption_features(f16, self.captioner.default_decode(beam_width=3))]
        out = {"images": len(pixels), "float32_s_per_image": t32 / len(pixels), "bf16_s_per_image": t16 / len(pixels),
               "speedup": t32 / t16, "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
               "identical_captions": float(np.mean([a == b for a, b in zip(c32, c16)]))}
        self.figures["g"] = out
        return out

    def i_serving_backends(self):
        """The full default caption (encoder + beam 3, one image at a time) on each serving stack, against the
        plain TensorFlow float32 Xception forward pass in the same run; captions compared with the
        all-TensorFlow stack. Stacks: TensorFlow encoder + TensorFlow decoders, OpenVINO encoder +
        TensorFlow decoders, OpenVINO encoder + OpenVINO/NumPy decoders (what ``Captioner.load`` picks),
        and int8 encoder + the same decoders when the int8 IR has been built."""
        from captioner import Captioner
        from captioner.serving.encoder import XceptionEncoder
        from captioner.serving.weights import ensure_weights

        path, digest = ensure_weights(allow_download=False)
        tf_enc = XceptionEncoder(path, digest, backend="tensorflow")
        pixels = self.pixels[:16]
        decode = self.captioner.default_decode(beam_width=3)
        stacks = {"tensorflow + tensorflow": Captioner(tf_enc, self.keras_checkpoint),
                  "openvino + tensorflow": Captioner(self.captioner.encoder, self.keras_checkpoint),
                  f"openvino + {self.captioner.decoder_backend}": self.captioner}
        try:
            stacks[f"int8 + {self.captioner.decoder_backend}"] = Captioner(
                XceptionEncoder(path, digest, backend="openvino", precision="int8"), self.captioner.checkpoint)
        except Exception as err:  # no int8 IR built here (python -m captioner quantize), or no OpenVINO
            int8_note = f"{type(err).__name__}: {err}"
        else:
            int8_note = None
        t_xception, _ = timed(lambda: [tf_enc.encode(p[None]) for p in pixels])
        out = {"images": len(pixels), "tensorflow_xception_ms": 1000 * t_xception / len(pixels)}
        reference = None
        for label, cap in stacks.items():
            t, texts = timed(lambda: [cap.caption_features(cap.encode(p[None]), decode)[0][0].tokens for p in pixels])
            reference = reference or texts
            out[label] = {"caption_ms": 1000 * t / len(pixels), "vs_tensorflow_xception": t / t_xception,
                          "identical_to_tensorflow": float(np.mean([a == b for a, b in zip(texts, reference)]))}
        if int8_note:
            out["int8"] = f"skipped: {int8_note}"
        self.figures["i"] = out
        return out

    def h_encoder_openvino(self):
        """Encoder on OpenVINO float32 vs TensorFlow float32, side by side: ms per image at batch 1 and 8
        (and OpenVINO as two one-thread streams fed asynchronously), feature cosine, identical beam-3
        captions (the features this model reads, all the run's images)."""
        from captioner.serving.encoder import XceptionEncoder, feature_cosines
        from captioner.serving.openvino_encoder import OpenVINOUnavailable
        from captioner.serving.weights import ensure_weights

        path, digest = ensure_weights(allow_download=False)
        tf_enc = XceptionEncoder(path, digest, backend="tensorflow")
        try:
            ov_enc = XceptionEncoder(path, digest, backend="openvino")
        except OpenVINOUnavailable as err:
            self.figures["h"] = {"skipped": str(err)}
            return self.figures["h"]
        spatial = self.captioner.feature_kind == "spatial"
        pixels = self.pixels
        out = {"images": len(pixels)}
        for batch in (1, 8):
            sample = pixels[:10] if batch == 1 else pixels[:32]
            for label, enc in (("tensorflow", tf_enc), ("openvino", ov_enc)):
                t, _ = timed(lambda: [enc.encode(sample[i:i + batch], spatial=spatial)
                                      for i in range(0, len(sample), batch)])
                out[f"{label}_batch{batch}_ms_per_image"] = 1000 * t / len(sample)
            out[f"speedup_batch{batch}"] = out[f"tensorflow_batch{batch}_ms_per_image"] / out[f"openvino_batch{batch}_ms_per_image"]
        out["openvino_2streams_async_ms_per_image"] = 1000 * self._two_streams(ov_enc, pixels[:32]) / 32
        f_tf, f_ov = tf_enc.encode(pixels, spatial=spatial), ov_enc.encode(pixels, spatial=spatial)
        a, b = f_tf.reshape(len(f_tf), -1), f_ov.reshape(len(f_ov), -1)
        cos = feature_cosines(a, b)
        decode = self.captioner.default_decode(beam_width=3)
        c_tf = [c[0].text for c in self.captioner.caption_features(f_tf, decode)]
        c_ov = [c[0].text for c in self.captioner.caption_features(f_ov, decode)]
        out.update({"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
                    "max_abs_diff": float(np.abs(a - b).max()),
                    "identical_captions": float(np.mean([x == y for x, y in zip(c_tf, c_ov)])),
                    "differing": [[n, x, y] for n, x, y in zip(self.names, c_tf, c_ov) if x != y]})
        self.figures["h"] = out
        return out

    def k_phone_photos(self, n: int = 32):
        """Phone-size photos: dev originals enlarged to 4032x3024 (12 MP) and saved as JPEG (quality 90),
        captioned from their bytes with JPEGs decoded at full size and at DCT scale
        (``images.DECODE_AT_LEAST``): ms per image to load and preprocess, and for the whole caption
        (``Captioner.caption`` on one photo at a time, median of 16), feature cosine and identical beam-3
        captions."""
        import io

        from PIL import Image

        from captioner.serving import images
        from captioner.serving.encoder import feature_cosines

        originals = sorted((self.dataset.image_dir.parent / "originals").glob("*.jpg"))[:n]
        if not originals:
            self.figures["k"] = {"skipped": "no originals/ folder beside the dataset's images"}
            return self.figures["k"]
        photos = []
        for path in originals:
            buf = io.BytesIO()
            Image.open(path).convert("RGB").resize((4032, 3024), Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90)
            photos.append(buf.getvalue())
        decode = self.captioner.default_decode(beam_width=3)
        scaled_side, runs = images.DECODE_AT_LEAST, {}
        out = {"images": len(photos), "photo": "4032x3024 JPEG, quality 90", "decode_at_least": scaled_side}
        modes = (("full size", None), ("DCT-scaled", scaled_side))
        try:
            for label, side in modes:
                images.DECODE_AT_LEAST = side
                t_load, pixels = timed(lambda: np.stack([images.load_and_preprocess(b) for b in photos]), repeat=1)
                feats = self.captioner.encode(pixels)
                runs[label] = (feats, [c[0].tokens for c in self.captioner.caption_features(feats, decode)])
                out[label] = {"load_and_preprocess_ms": 1000 * t_load / len(photos)}
            whole = {label: [] for label, _ in modes}  # the two take turns photo by photo: a busy spell hits both
            for b in photos[:16]:
                for label, side in modes:
                    images.DECODE_AT_LEAST = side
                    start = time.perf_counter()
                    self.captioner.caption([b], decode)
                    whole[label].append(time.perf_counter() - start)
            for label, times in whole.items():
                out[label]["whole_caption_ms"] = 1000 * float(np.median(times))
        finally:
            images.DECODE_AT_LEAST = scaled_side
        (a, caps_a), (b, caps_b) = runs["full size"], runs["DCT-scaled"]
        cos = feature_cosines(a, b)
        out.update({"load_speedup": out["full size"]["load_and_preprocess_ms"] / out["DCT-scaled"]["load_and_preprocess_ms"],
                    "caption_speedup": out["full size"]["whole_caption_ms"] / out["DCT-scaled"]["whole_caption_ms"],
                    "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
                    "identical_captions": float(np.mean([x == y for x, y in zip(caps_a, caps_b)]))})
        self.figures["k"] = out
        return out

    @staticmethod
    def _two_streams(ov_enc, pixels) -> float:
        """Seconds for ``pixels``, one image per request, on the same IR compiled for throughput: two
        streams of one thread each, fed asynchronously (what a server or batch job could run instead
        of one two-thread stream)."""
        import openvino as ov

        compiled = ov.Core().compile_model(str(ov_enc._openvino.ir_path), "CPU", {
            "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 2, "INFERENCE_PRECISION_HINT": "f32"})
        queue = ov.AsyncInferQueue(compiled, 2)

        def run():
            for p in pixels:
                queue.start_async([np.ascontiguousarray(p[None], np.float32)])
            queue.wait_all()

        return timed(run, repeat=2)[0]


def f_cold_start(model: Path | None = None) -> dict:
    """Fresh process per backend: the CLI captioning one image (``python -m captioner caption``), from
    process start to the caption printed, its peak RSS, and whether TensorFlow was imported."""
    code = ("import json, resource, sys; from captioner.cli import main; "
            f"main(['caption', '--json', {str(ROOT / 'assets' / 'cat.jpg')!r}]"
            + (f" + ['--model', {str(model)!r}]" if model else "") + "); "
            "print(json.dumps({'rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "
            "'tensorflow': 'tensorflow' in sys.modules}))")
    out = {}
    for backend in ("auto", "tensorflow"):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CAPTIONER_BACKEND": backend})
        wall = time.perf_counter() - start
        lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        caption, probe = (lines[0], lines[-1]) if len(lines) == 2 else ({}, {})
        out[backend] = {"process_start_to_first_caption_s": wall, "peak_rss_mb": probe.get("rss_mb"),
                        "imported_tensorflow": probe.get("tensorflow"), "caption": caption.get("model_caption")}
    out["start_ratio"] = out["auto"]["process_start_to_first_caption_s"] / out["tensorflow"]["process_start_to_first_caption_s"]
    return out


def j_app_ready() -> dict:
    """`streamlit run app.py` in headless Chromium: seconds from launching the server until the page shows
    its upload control (the model loads after it, while a photo is chosen), and until the model has loaded
    (the "Describe" button is drawn)."""
    sys.path.insert(0, str(ROOT / "tools"))
    from browser_session import new_browser, streamlit_server
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    out = {}
    for backend in ("auto", "tensorflow"):
        os.environ["CAPTIONER_BACKEND"] = backend
        start = time.perf_counter()
        try:
            with streamlit_server() as (url, _):
                driver = new_browser()
                try:
                    driver.get(url)
                    wait = WebDriverWait(driver, 300)
                    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "input[type='file']")))
                    upload_ready = time.perf_counter() - start
                    wait.until(EC.presence_of_element_located((By.XPATH, "//button[contains(., 'Describe')]")))
                    out[backend] = {"streamlit_run_to_upload_ready_s": upload_ready,
                                    "streamlit_run_to_model_loaded_s": time.perf_counter() - start}
                finally:
                    driver.quit()
        finally:
            os.environ.pop("CAPTIONER_BACKEND", None)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="a,b,c,d,e,f,g,h,i,j,k")
    parser.add_argument("--images", type=int, default=64, help="dev images to use (default %(default)s)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped default)")
    args = parser.parse_args()
    wanted = args.only.split(",")
    from captioner.machine import describe_machine

    figures: dict = {"machine": {**describe_machine(), "python": platform.python_version()}}
    if "f" in wanted:  # first, before this process loads anything
        figures["f"] = f_cold_start(args.model)
        print("f", json.dumps(figures["f"]), flush=True)
    bench = Bench(args.images, args.model)
    figures["model"] = str(bench.captioner.checkpoint.folder)
    for key, fn in (("a", bench.a_reference), ("b", bench.b_beam_vs_greedy), ("c", bench.c_caption_vs_encoder),
                    ("d", bench.d_throughput), ("e", bench.e_training), ("g", bench.g_encoder_precision),
                    ("h", bench.h_encoder_openvino), ("i", bench.i_serving_backends), ("j", j_app_ready),
                    ("k", bench.k_phone_photos)):
        if key in wanted:
            figures[key] = fn()
            print(key, json.dumps(figures[key]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
