"""Chinese per character against per word (jieba segmentation, what the shipped ``merge-zh`` uses): a
per-character folder (``--chars``) and the same recipe trained on word tokens, both scored on dev
(beam 3) twice, on characters and on jieba words, so neither tokenisation is favoured by its own metric.

    pip install jieba   # only for this experiment
    python experiments/zh_words.py [--chars runs/merge-zh] [--out runs/merge-zh-words] [--json docs/zh-words.json]
"""
from __future__ import annotations

import argparse
import sys
import unicodedata
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.report import emit  # noqa: E402


def main() -> int:
    import jieba

    from captioner.config import DecodeConfig
    from captioner.pipeline.data import CaptionDataset, _read_token_file, load_dataset, resolve_data_dir
    from captioner.pipeline.evaluate import caption_metrics
    from captioner.machine import describe_machine
    from captioner.pipeline.train import train
    from captioner.pipeline.workflows import sharded_features
    from captioner.serving import model_folder as mf
    from captioner.serving.captioner import Captioner
    from captioner.serving.encoder import XceptionEncoder
    from captioner.serving.languages import chinese_tokens

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--chars", type=Path, default=Path("runs/merge-zh"), help="the per-character model folder")
    parser.add_argument("--out", type=Path, default=Path("runs/merge-zh-words"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    jieba.setLogLevel(60)
    root = resolve_data_dir(args.data)
    chars = load_dataset(root, "zh")
    raw, _, _ = _read_token_file(root / "i18n/zh/Flickr8k.token.txt")

    def words(text: str) -> str:
        return " ".join(w for w in jieba.lcut(unicodedata.normalize("NFKC", text).lower()) if chinese_tokens(w))

    word_data = CaptionDataset(chars.image_dir, {n: [c for c in map(words, raw[n]) if c] for n in chars.captions},
                               chars.splits, name=chars.name, lang="zh")
    encoder = XceptionEncoder.load(allow_download=False)
    names = chars.split_names("train") + chars.split_names("dev")
    features = sharded_features(encoder, [chars.image_path(n) for n in names], 0, 1, "pooled")
    char_model = mf.load_checkpoint(args.chars)
    if not (args.out / mf.DECODER_FILE).is_file():
        from captioner.pipeline.evaluate import tune_length_alpha

        train(word_data, features, replace(char_model.config, storage="float32"), args.out)
        tuned = tune_length_alpha(Captioner(encoder, mf.load_checkpoint(args.out)), word_data,
                                  mf.read_tune_images(args.out))  # as the shipped models: held-out training images
        mf.write_decoding(args.out, tuned)
    dev = chars.split_names("dev")
    refs = {"characters": {n: chars.captions[n] for n in dev}, "jieba_words": {n: word_data.captions[n] for n in dev}}
    decode = DecodeConfig(beam_width=3)
    report = {"split": "dev", "decoding": "beam 3", "images": len(dev), "jieba": jieba.__version__,
              "metric_tools": "BLEU: nltk corpus_bleu; CIDEr-D: pycocoevalcap", "machine": describe_machine(),
              "command": "python experiments/zh_words.py", "models": {}}
    for label, folder in (("per character", args.chars), ("per jieba word", args.out)):
        captioner = Captioner(encoder, mf.load_checkpoint(folder))
        feats = __import__("numpy").stack([features[n] for n in dev])
        written = [caps[0].text for caps in captioner.caption_features(
            feats, replace(decode, length_alpha=captioner.checkpoint.length_alpha))]
        scored = {}
        for tokens, cut in (("characters", lambda t: " ".join(chinese_tokens(t))), ("jieba_words", words)):
            metrics, _ = caption_metrics(refs[tokens], {n: cut(w) for n, w in zip(dev, written)}, meteor=False)
            scored[tokens] = {m: round(metrics[m], 4) for m in ("BLEU-1", "BLEU-4", "CIDEr")}
        report["models"][label] = {"folder": str(folder), "vocabulary": len(captioner.vocab),
                                   "distinct_captions": len(set(written)), "scored_on": scored,
                                   "examples": written[:3]}
    return emit(report, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
