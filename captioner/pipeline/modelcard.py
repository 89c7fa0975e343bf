"""The model card (``MODEL_CARD.md``) and ``metrics.json`` written beside each trained checkpoint."""
from __future__ import annotations

import platform
from pathlib import Path

from ..config import TrainConfig, save_json

METRIC_ORDER = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr", "METEOR", "ROUGE-L")


LIMITS = """## Limits
Trained on 6k Flickr photos of people and dogs outdoors: captions of other scenes are often generic or
wrong, and the model repeats dataset biases (gender words, "a man" by default). Do not rely on it where a
wrong description could harm someone.
"""


def _read_decoding(folder: Path) -> dict:
    """The folder's ``decoding.json`` (how beam search was tuned), or {} when it has none."""
    import json

    path = Path(folder) / "decoding.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _results_rows(evaluations: list[dict]) -> list[str]:
    """The dev results as markdown table lines, one row per evaluation."""
    header = "| evaluation | images | " + " | ".join(METRIC_ORDER) + " |"
    return [header, "|" + "---|" * (len(METRIC_ORDER) + 2)] + [
        _row(e["label"], e["metrics"], e["settings"]["n_images"]) for e in evaluations]


def _decoding_paragraph(decoding: dict, block_note: str = "") -> str:
    """The metric tools and how the length exponent was chosen, with its held-out sweep."""
    return f"""Metric tools: BLEU with nltk `corpus_bleu` over all five references; CIDEr (CIDEr-D), METEOR 1.5 and
ROUGE-L with pycocoevalcap. Beam search ranks captions by log-probability / length^alpha with
alpha = {decoding.get('length_alpha', 0.7)}, {decoding.get('selected_on', 'the default')}{_alpha_rule(decoding)}.{block_note}{_sweep_table(decoding)}"""


def _row(label: str, metrics: dict, n_images: int) -> str:
    cells = [("n/a" if metrics.get(m) is None else f"{metrics[m]:.3f}") for m in METRIC_ORDER]
    return f"| {label} | {n_images} | " + " | ".join(cells) + " |"


def write_model_card(folder: Path, cfg: TrainConfig, training: dict, evaluations: list[dict]) -> None:
    """``evaluations``: dicts with ``label``, ``metrics`` and ``settings`` (as in EvalResult)."""
    folder = Path(folder)
    decoding = _read_decoding(folder)
    save_json({"evaluations": evaluations, "training": training}, folder / "metrics.json")
    size_mb = (folder / "decoder.keras").stat().st_size / 2**20
    rows = _results_rows(evaluations)
    settings = "\n".join(f"| `{k}` | {v} |" for k, v in cfg.to_json().items())
    if cfg.decoder == "attention":
        g = cfg.attention_grid
        design = (f"Xception (ImageNet, frozen, its 10x10 grid of 2048-d region features at 299x299, averaged to "
                  f"{g}x{g} regions) + **soft-attention decoder** (Show, Attend and Tell: additive attention "
                  f"with a gate, initial state from the mean region, doubly stochastic penalty "
                  f"{cfg.attention_reg}) with a {cfg.units}-unit LSTM")
    else:
        design = (f"Xception (ImageNet, frozen, pooled 2048-d features at 299x299) + **merge decoder** "
                  f"(image added to the RNN output) with a {cfg.units}-unit {cfg.rnn.upper()}")
    if training.get("selected_on") == "tune_cider":
        selection = ("the kept weights are the epoch with the best greedy CIDEr on the held-out training "
                     "images" + (f" (then the average of epochs {training['averaged_epochs']}, which scored "
                                  f"higher there)" if training.get("averaged_epochs") else ""))
        kept = f"kept epoch {training['best_epoch']} by held-out CIDEr"
        if training.get("averaged_epochs"):
            kept = f"kept the average of epochs {training['averaged_epochs']} (held-out CIDEr)"
    else:
        selection = "early stopping on **dev** loss"
        kept = f"best dev loss at epoch {training['best_epoch']}"
    defaults = TrainConfig().to_json()
    flags = "".join(f" --{k.replace('_', '-')} {v}" for k, v in cfg.to_json().items() if v != defaults[k])
    train_command = f"python -m captioner train --out models/{folder.name}{flags}"
    blocks = {e["settings"].get("block_ngram") for e in evaluations}
    block_note = (f" Captions never repeat one of their own {blocks.pop()}-word phrases (`--block-ngram`)."
                  if len(blocks) == 1 and None not in blocks and 0 not in blocks else "")
    if all(e["settings"].get("allow_unk") is False for e in evaluations):
        block_note += " `<unk>` is never generated (`--allow-unk` allows it)."
    scst = training.get("scst")
    scst_line = ""
    if scst:
        scst_line = (f"\n- Then fine-tuned with self-critical sequence training (CIDEr-D reward, {scst.get('baseline', 'greedy')} baseline) for "
                     f"{len(scst['tune_cider']) - 1} epoch(s) in {scst['seconds'] / 60:.1f} minutes; held-out greedy CIDEr by "
                     f"epoch (0 = before): {[round(x, 4) for x in scst['tune_cider']]}; kept epoch {scst['kept_epoch']}.")
    card = f"""# Model card: `{folder.name}`

{design}, trained on Flickr8k with full-sequence teacher forcing{
    f" and label smoothing {cfg.label_smoothing}" if cfg.label_smoothing else ""}.

## Data
- Flickr8k as shipped in `../shared/flickr8k` (images squashed to 224x224 by a third party).
- Trained on the official **train** split plus the images in no split, less {training.get('tune_images', 0)}
  images held out to choose decoding settings ({training['train_images']} images, {training['train_captions']}
  captions); {selection}. The official test split was never seen. Figures below are
  on **dev** (1,000 images, 5 references each).
- Vocabulary: {training['vocab_size']} words (seen at least {cfg.min_word_count} times in training captions).

## Results (dev split)
{_decoding_paragraph(decoding, block_note)}

{chr(10).join(rows)}

Reproduce: `python -m captioner evaluate --split dev --model models/{folder.name} --beam-width 3`
(`--beam-width 1` for greedy; `--images ../shared/flickr8k/originals` for the full-resolution rows).

## Training
- {training['train_seconds'] / 60:.1f} minutes on a 2-core CPU ({platform.machine()}), {training['epochs_run']} epochs;
  {kept}; best dev loss {training['best_val_loss']:.4f} (curve: `training_curve.png`).{scst_line}
- Decoder: {training['parameters']:,} parameters; `decoder.keras` is {size_mb:.1f} MB.
- Reproduce: `{train_command}` (the settings below; the others are defaults).

| setting | value |
|---|---|
{settings}

{LIMITS}"""
    (folder / "MODEL_CARD.md").write_text(card, encoding="utf-8")


def _alpha_rule(decoding: dict) -> str:
    """How the length exponent was chosen (the sweep itself is ``_sweep_table``)."""
    if "balanced_score" in decoding:
        return (", by the balanced rule of `docs/SELECTION.md` (the mean share of the sweep's best BLEU-1, "
                "BLEU-4, METEOR and CIDEr; sweep below and in `decoding.json`)")
    return f" (CIDEr by alpha there: {decoding.get('sweep_cider', 'not tuned')})"


def _sweep_table(decoding: dict) -> str:
    """The held-out sweep of the length exponent as a markdown table ("" when there is none)."""
    if "balanced_score" not in decoding:
        return ""
    metrics = list(next(iter(decoding["sweep"].values())))
    lines = [f"Held-out training images, beam {decoding.get('beam_width', 3)}:", "",
             "| alpha | " + " | ".join(metrics) + " | balanced |", "|---|" + "---|" * (len(metrics) + 1)]
    for alpha, row in decoding["sweep"].items():
        mark = " (chosen)" if float(alpha) == float(decoding["length_alpha"]) else ""
        lines.append(f"| {alpha}{mark} | " + " | ".join(f"{row[m]:.4f}" for m in metrics)
                     + f" | {decoding['balanced_score'][alpha]:.4f} |")
    return "\n\n" + "\n".join(lines)


def write_ensemble_card(folder: Path, checkpoint, evaluations: list[dict]) -> None:
    """Card and metrics.json of an ensemble folder: its members, how decoding was tuned, dev results."""
    import json

    folder = Path(folder)
    decoding = _read_decoding(folder)
    members = []
    for m in checkpoint.members:
        training_file = m.folder / "training.json"
        training = json.loads(training_file.read_text()) if training_file.is_file() else {}
        members.append({"folder": m.folder.name, "rnn": m.config.rnn, "decoder": m.config.decoder,
                        "parameters": training.get("parameters"), "train_seconds": training.get("train_seconds"),
                        "size_mb": round((m.folder / "decoder.keras").stat().st_size / 2**20, 1)})
    save_json({"evaluations": evaluations, "members": members}, folder / "metrics.json")
    rows = _results_rows(evaluations)
    member_rows = "\n".join(
        f"| [`{m['folder']}`](../{m['folder']}/MODEL_CARD.md) | {m['decoder']} {m['rnn'].upper()} | "
        f"{m['parameters'] or 0:,} | {m['size_mb']} MB | {(m['train_seconds'] or 0) / 60:.1f} min |" for m in members)
    member_args = " ".join(f"models/{m['folder']}" for m in members)
    card = f"""# Model card: `{folder.name}` (ensemble)

An ensemble of {len(members)} decoders trained separately on the same data and vocabulary, over one
frozen Xception encoder. At every step of greedy or beam search each member proposes next-word
probabilities and the ensemble uses their mean; the image is encoded once. `ensemble.json` only names
the member folders, so the ensemble adds no weights of its own.

| member | decoder | parameters | size | training time |
|---|---|---|---|---|
{member_rows}

## Data
As for the members (see their cards): Flickr8k train split less the held-out training images, which
all members share (`tune_images.txt`); the official test split was never seen. Figures below are on
**dev** (1,000 images, 5 references each).

## Results (dev split)
{_decoding_paragraph(decoding)}

{chr(10).join(rows)}

Reproduce: `python -m captioner evaluate --split dev --model models/{folder.name} --beam-width 3`;
build the folder (and this card): `python -m captioner ensemble {member_args} --out models/{folder.name}`.

## Cost
Decoding runs every member at each step, so it costs about {len(members)}x a single decoder's steps; the
Xception encoder, which dominates the time per caption, runs once.

{LIMITS}"""
    (folder / "MODEL_CARD.md").write_text(card, encoding="utf-8")
