"""Which int8 Xception keeps the captions? NNCF post-training quantisation variants of the OpenVINO
encoder, each compared with float32 on the default model's held-out images (training images it never
trained on, kept to choose settings; never dev): share of identical beam-3 captions, feature cosine,
and the encoder's speed at batch 1 in the same run.

Calibration: the 300 training images ``python -m captioner quantize`` uses (seeded; no held-out, no dev).
Variants: NNCF's presets (PERFORMANCE: symmetric activations; MIXED: asymmetric ones, for Xception's
signed residual sums), keeping the first convolution (raw pixels) and/or the exit flow (the last
blocks, whose output IS the feature) in float32, and NNCF's accuracy control, which puts back float32
layers, worst first, until the features' mean cosine on held-out images drops by at most 0.002.

    python experiments/int8_variants.py [--only mixed,exit] [--json docs/int8-variants.json]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.report import emit  # noqa: E402

EXIT_FLOW_CONVOLUTIONS = 9  # block13 (two separable convs + its residual 1x1) and block14 (two separable convs)


def conv_names(model) -> list[str]:
    """Friendly names of the IR's convolutions (plain and depthwise), in topological order."""
    return [op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_type_name() in ("Convolution", "GroupConvolution")]


def main() -> int:
    import nncf
    import openvino as ov

    from captioner import Captioner
    from captioner.pipeline.data import load_dataset
    from captioner.machine import describe_machine
    from captioner.serving import model_folder as mf
    from captioner.serving.encoder import feature_cosines
    from captioner.serving.images import load_image, preprocess_image

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--calibration-images", type=int, default=300)
    parser.add_argument("--only", default=None, help="comma-separated variant names")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    captioner = Captioner.load(allow_download=False, backend="openvino")
    dataset = load_dataset(args.data)
    held_out = mf.read_tune_images(captioner.checkpoint.folder)
    excluded = {n for folder in mf.available_models() if (folder / mf.TUNE_FILE).is_file()
                for n in mf.read_tune_images(folder)}
    train = sorted(n for n in dataset.split_names("train") if n not in excluded)
    chosen = sorted(np.random.default_rng(0).choice(train, size=args.calibration_images, replace=False))
    pixels = lambda names: np.stack([preprocess_image(load_image(dataset.image_path(n))) for n in names])  # noqa: E731
    calibration = [p[None] for p in pixels(chosen)]
    selection = pixels(held_out)

    core = ov.Core()
    float_model = core.read_model(str(captioner.encoder._openvino.ir_path))
    convs = conv_names(float_model)
    decode = captioner.default_decode(beam_width=3)

    def encode(compiled, batch: np.ndarray) -> np.ndarray:
        request = compiled.create_infer_request()
        out = []
        for i in range(0, len(batch), 16):
            request.infer([batch[i:i + 16]])
            out.append(np.array(request.get_tensor(compiled.output("pooled")).data, np.float32))
        return np.concatenate(out)

    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    float_compiled = core.compile_model(float_model, "CPU", config)
    reference = encode(float_compiled, selection)
    reference_captions = [c[0].tokens for c in captioner.caption_features(reference, decode)]

    def validate(compiled, items) -> float:
        """Mean feature cosine against float32 over (pixels, float32 feature) items (accuracy control)."""
        got, want = [], []
        for x, feature in items:
            got.append(encode(compiled, x))
            want.append(feature)
        return float(feature_cosines(np.concatenate(got), np.concatenate(want)).mean())

    performance, mixed = nncf.QuantizationPreset.PERFORMANCE, nncf.QuantizationPreset.MIXED
    exit_flow = nncf.IgnoredScope(names=convs[-EXIT_FLOW_CONVOLUTIONS:])
    first_and_exit = nncf.IgnoredScope(names=convs[:1] + convs[-EXIT_FLOW_CONVOLUTIONS:])
    variants = {
        "performance": lambda: nncf.quantize(float_model, nncf.Dataset(calibration), preset=performance,
                                             subset_size=len(calibration)),
        "mixed": lambda: nncf.quantize(float_model, nncf.Dataset(calibration), preset=mixed,
                                       subset_size=len(calibration)),
        "performance, exit flow float32": lambda: nncf.quantize(
            float_model, nncf.Dataset(calibration), preset=performance, subset_size=len(calibration),
            ignored_scope=exit_flow),
        "mixed, first conv and exit flow float32": lambda: nncf.quantize(
            float_model, nncf.Dataset(calibration), preset=mixed, subset_size=len(calibration),
            ignored_scope=first_and_exit),
        "mixed, accuracy control (cosine drop <= 0.002)": lambda: nncf.quantize_with_accuracy_control(
            float_model, nncf.Dataset(calibration),
            nncf.Dataset([(selection[i:i + 16], reference[i:i + 16]) for i in range(0, 96, 16)],
                         lambda item: item[0]),
            validation_fn=validate, max_drop=0.002, drop_type=nncf.DropType.ABSOLUTE, preset=mixed,
            subset_size=len(calibration)),
    }
    only = [v.strip() for v in args.only.split(",")] if args.only else None
    one = selection[:1]
    results = {}
    for name, build in variants.items():
        if only and not any(o in name for o in only):
            continue
        start = time.perf_counter()
        model = build()
        build_s = time.perf_counter() - start
        compiled = core.compile_model(model, "CPU", config)
        feats = encode(compiled, selection)
        captions = [c[0].tokens for c in captioner.caption_features(feats, decode)]
        timings = {}
        for label, which in (("float32", float_compiled), (name, compiled)):
            encode(which, one)
            start = time.perf_counter()
            for _ in range(20):
                encode(which, one)
            timings[label] = 1000 * (time.perf_counter() - start) / 20
        cos = feature_cosines(feats, reference)
        quantised = sum(1 for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize")
        results[name] = {"identical_captions": round(float(np.mean([a == b for a, b in zip(captions, reference_captions)])), 4),
                         "feature_cosine": {"mean": round(float(cos.mean()), 4), "min": round(float(cos.min()), 4)},
                         "encoder_ms_batch1": round(timings[name], 1), "float32_ms_batch1": round(timings["float32"], 1),
                         "speedup": round(timings["float32"] / timings[name], 2), "fake_quantize_nodes": quantised,
                         "build_s": round(build_s, 1)}
        print(name, results[name], flush=True)
    return emit({"split": f"held-out training images of {captioner.checkpoint.folder.name} ({len(held_out)})",
                 "decoding": "beam 3", "model": captioner.checkpoint.folder.name,
                 "calibration": f"{len(calibration)} training images (seeded; no held-out, no dev), NNCF {nncf.__version__}",
                 "convolutions": len(convs), "variants": results, "machine": describe_machine(),
                 "command": "python experiments/int8_variants.py"}, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
