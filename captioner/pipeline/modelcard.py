"""The model card (``MODEL_CARD.md``) and ``metrics.json`` of a model folder, written from facts.

Every fact on a card comes from the run, never from a literal: the dataset's name, caption language and
split sizes (``CaptionDataset.facts``), the machine that measured the times (``machine.describe_machine``),
the folder's own files (config, training summary, decoding sweep, evaluations). A fact the folder's
files do not hold is called unrecorded, not guessed. Cards describe the model as it is, and each
figure comes with the command that reproduces it.

Where the facts live: training.json may hold ``data`` and ``machine`` (the training run's; see
``run_facts``); metrics.json holds the evaluations, the data facts they were measured on and the
evaluating machine. ``write_model_card_from_files`` rewrites a card from those files alone.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..config import TrainConfig
from ..serving import model_folder as mf
from ..machine import describe_machine, format_machine

METRIC_ORDER = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr", "METEOR", "ROUGE-L")


def run_facts(dataset, held_out: list[str] | tuple[str, ...] = ()) -> dict:
    """``{"data": ..., "machine": ...}`` of the current run, to record in a training summary."""
    return {"data": dataset.facts(held_out), "machine": describe_machine()}


def language_name(code: str | None) -> str:
    """``"de"`` -> ``"German"`` (from the caption languages' registry; the code itself when unknown)."""
    from ..serving.languages import LANGUAGES

    return LANGUAGES[code].name if code in LANGUAGES else code or "an unrecorded language"


# ------------------------------------------------------------------------------------------- writers

def write_model_card(folder: Path, cfg: TrainConfig, training: dict, evaluations: list[dict],
                     dataset=None, language: dict | None = None) -> None:
    """metrics.json and MODEL_CARD.md of a single folder, right after its evaluation.

    ``evaluations``: dicts with ``label``, ``metrics`` and ``settings`` (as in EvalResult). ``dataset``:
    the CaptionDataset they were measured on (its facts are recorded; without it, those training.json
    or the previous metrics.json recorded). The evaluating machine is this one.
    """
    folder = Path(folder)
    data = _data_facts(folder, dataset, training.get("data") or _stored_data(folder))
    machine = describe_machine()
    mf.write_metrics(folder, {"evaluations": evaluations, "training": training,
                              **({"data": data} if data else {}), "machine": machine,
                              **({"language": language} if language else {})})
    _write_card(folder, model_card_text(folder, cfg, training, evaluations, data, machine, language))


def write_ensemble_card(folder: Path, checkpoint, evaluations: list[dict], dataset=None,
                        language: dict | None = None) -> None:
    """metrics.json and MODEL_CARD.md of an ensemble folder, right after its evaluation."""
    folder = Path(folder)
    members = [member_facts(m.folder) for m in checkpoint.members]
    data = _data_facts(folder, dataset, _stored_data(folder) or _members_data([m.folder for m in checkpoint.members]))
    machine = describe_machine()
    mf.write_metrics(folder, {"evaluations": evaluations, "members": members,
                              **({"data": data} if data else {}), "machine": machine,
                              **({"language": language} if language else {})})
    _write_card(folder, ensemble_card_text(folder, members, evaluations, data, machine, language))


def write_model_card_from_files(folder: Path, dataset=None) -> Path:
    """Rewrite MODEL_CARD.md from the folder's stored metrics.json and training.json (for an ensemble,
    its members' files), without evaluating anything. With ``dataset`` (the one the folder was trained
    and evaluated on), its facts are also recorded in metrics.json. Returns the card's path."""
    folder = Path(folder)
    if not (folder / mf.METRICS_FILE).is_file():
        raise mf.CheckpointError(f"{folder / mf.METRICS_FILE}: missing, so there are no figures to write a card "
                                 f"from; evaluate first with `python -m captioner card --model {folder}`")
    metrics = mf.read_metrics(folder)
    evaluations = metrics.get("evaluations") or []
    if mf.is_ensemble_folder(folder):
        member_folders = mf.ensemble_members(folder)
        members = [member_facts(m) for m in member_folders]
        stored = metrics.get("data") or _members_data(member_folders)
        data = _data_facts(folder, dataset, stored)
        text = ensemble_card_text(folder, members, evaluations, data, metrics.get("machine"), metrics.get("language"))
    else:
        training = mf.read_training(folder) if (folder / mf.TRAINING_FILE).is_file() else metrics.get("training")
        if not training:
            raise mf.CheckpointError(f"{folder / mf.TRAINING_FILE}: missing; the model card needs the training summary")
        data = _data_facts(folder, dataset, training.get("data") or metrics.get("data"))
        text = model_card_text(folder, mf.read_config(folder), training, evaluations, data, metrics.get("machine"),
                               metrics.get("language"))
    if dataset is not None and data != metrics.get("data"):
        mf.write_metrics(folder, {**metrics, "data": data})
    _write_card(folder, text)
    return folder / mf.CARD_FILE


def _write_card(folder: Path, text: str) -> None:
    tmp = folder / f".{mf.CARD_FILE}.tmp"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(folder / mf.CARD_FILE)


# ---------------------------------------------------------------------------------------------- facts

def _data_facts(folder: Path, dataset, stored: dict | None) -> dict | None:
    """The dataset facts: from ``dataset`` when given (checked against the folder), else ``stored``."""
    if dataset is None:
        return stored or None
    held_out = mf.read_tune_images(folder)
    train = set(dataset.splits.get("train", []))
    strays = [n for n in held_out if n not in train]
    if strays:
        raise ValueError(f"{folder}: {len(strays)} of its {len(held_out)} held-out images ({strays[0]}, ...) are "
                         f"not in the train split of {dataset.image_dir.parent}: not the data it was trained on")
    return dataset.facts(held_out)


def _stored_data(folder: Path) -> dict | None:
    """The data facts the folder's metrics.json recorded, if any."""
    path = Path(folder) / mf.METRICS_FILE
    return json.loads(path.read_text(encoding="utf-8")).get("data") if path.is_file() else None


def _members_data(member_folders) -> dict | None:
    """The first data facts an ensemble's members recorded (training.json, else metrics.json)."""
    for folder in member_folders or []:
        for name in (mf.TRAINING_FILE, mf.METRICS_FILE):
            path = Path(folder) / name
            if path.is_file():
                data = json.loads(path.read_text(encoding="utf-8")).get("data")
                if data:
                    return data
    return None


def member_facts(folder: Path) -> dict:
    """One ensemble member's row, from its config.json, training.json and decoder file (no Keras)."""
    folder = Path(folder)
    cfg = json.loads((folder / mf.CONFIG_FILE).read_text(encoding="utf-8"))
    training_file = folder / mf.TRAINING_FILE
    training = json.loads(training_file.read_text(encoding="utf-8")) if training_file.is_file() else {}
    return {"folder": folder.name, "rnn": cfg.get("rnn", "lstm"), "decoder": cfg.get("decoder", "merge"),
            "parameters": training.get("parameters"), "train_seconds": training.get("train_seconds"),
            "train_images": training.get("train_images"),
            "size_mb": round((folder / mf.DECODER_FILE).stat().st_size / 2**20, 1)}


# ------------------------------------------------------------------------------------- card sections

def _results_rows(evaluations: list[dict]) -> list[str]:
    """The dev results as markdown table lines, one row per evaluation."""
    header = "| evaluation | images | " + " | ".join(METRIC_ORDER) + " |"
    return [header, "|" + "---|" * (len(METRIC_ORDER) + 2)] + [
        _row(e["label"], e["metrics"], e["settings"]["n_images"]) for e in evaluations]


def _row(label: str, metrics: dict, n_images: int) -> str:
    cells = [("n/a" if metrics.get(m) is None else f"{metrics[m]:.3f}") for m in METRIC_ORDER]
    return f"| {label} | {n_images} | " + " | ".join(cells) + " |"


def _decoding_paragraph(decoding: dict, block_note: str = "") -> str:
    """The metric tools and how the length exponent was chosen, with its held-out sweep."""
    return f"""Metric tools: BLEU with nltk `corpus_bleu` over all references; CIDEr (CIDEr-D), METEOR 1.5 and
ROUGE-L with pycocoevalcap. Beam search ranks captions by log-probability / length^alpha with
alpha = {decoding.get('length_alpha', 0.7)}, {decoding.get('selected_on', 'the default')}{_alpha_rule(decoding)}.{block_note}{_sweep_table(decoding)}"""


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


def _block_note(evaluations: list[dict]) -> str:
    blocks = {e["settings"].get("block_ngram") for e in evaluations}
    note = (f" Captions never repeat one of their own {blocks.pop()}-word phrases (`--block-ngram`)."
            if len(blocks) == 1 and None not in blocks and 0 not in blocks else "")
    if evaluations and all(e["settings"].get("allow_unk") is False for e in evaluations):
        note += " `<unk>` is never generated (`--allow-unk` allows it)."
    return note


def _n(count: int, word: str) -> str:
    """``_n(1, "image")`` -> ``"1 image"``; ``_n(7091, "image")`` -> ``"7,091 images"``."""
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def _count(facts: dict | None) -> str:
    return f"{_n(facts['images'], 'image')}, {_n(facts['captions'], 'caption')}" if facts else ""


def _ordered_splits(data: dict) -> list[tuple[str, dict]]:
    """train, dev, test first (stored JSON sorts them alphabetically), then any others."""
    order = {"train": 0, "dev": 1, "test": 2}
    return sorted(data.get("splits", {}).items(), key=lambda kv: (order.get(kv[0], 3), kv[0]))


def _dataset_name(data: dict | None) -> str:
    return data["name"] if data and data.get("name") else "an unrecorded dataset"


def _dataset_lines(data: dict | None, folder: Path) -> list[str]:
    """The "Dataset" bullet and the meaning of DATA in the commands."""
    if not data:
        return [f"- Dataset: not recorded in this folder's files (`python -m captioner card --model "
                f"models/{folder.name} --data DATA` re-evaluates and records it).",
                "- `DATA` in the commands below is the dataset folder (`--data DATA`, or set `CAPTIONER_DATA`)."]
    splits = "; ".join(f"{split} {_count(size)}" for split, size in _ordered_splits(data))
    return [f"- Dataset: **{data['name']}**, captions in {language_name(data.get('lang'))} (`{data.get('lang')}`): "
            f"{_count(data)}" + (f" (splits: {splits})" if splits else "") + ".",
            f"- `DATA` in the commands below is the {data['name']} folder (`--data DATA`, or set `CAPTIONER_DATA`)."]


def _never_read(data: dict | None) -> str:
    """What training never reads, from the data facts."""
    test = (data or {}).get("splits", {}).get("test")
    if test:
        return f"The test split ({_n(test['images'], 'image')}) is never read."
    return "This data folder has no test split." if data else ""


def _sentence(text: str) -> str:
    return f" {text}" if text else ""


def _dev_phrase(data: dict | None, evaluations: list[dict]) -> str:
    dev = (data or {}).get("splits", {}).get("dev")
    if dev:
        return f"{_n(dev['images'], 'image')}, {_n(dev['captions'], 'reference caption')}"
    counts = [e["settings"]["n_images"] for e in evaluations if e["label"].startswith("dev,")]
    return _n(counts[0], "image") if counts else "its images"


def _evaluate_command(folder: Path, evaluations: list[dict]) -> str:
    originals = any("originals" in str(e["settings"].get("images", "")) or "originals" in e["label"]
                    for e in evaluations)
    return (f"Reproduce: `python -m captioner evaluate --split dev --model models/{folder.name} --data DATA "
            f"--beam-width 3` (`--beam-width 1` for greedy, 5 for beam 5"
            + ("; `--images DATA/originals` for the full-resolution rows" if originals else "") + ").")


def _sweep_command(folder: Path, decoding: dict) -> str:
    if not decoding:
        return ""
    return (f"\n\nReproduce the sweep: `python -m captioner card --model models/{folder.name} --data DATA` "
            "(re-tunes on the held-out images, re-evaluates on dev and rewrites this card)."
            + _rerank_paragraph(folder, decoding))


def _rerank_paragraph(folder: Path, decoding: dict) -> str:
    """Which of the beam's captions is said (``serving/rerank.py``) and the held-out rows it was chosen by."""
    if "rerank_sweep" not in decoding:
        return ("\n\nOf the beam's captions, the one with the best score is said (`decoding.json` names no other "
                f"ranking; `python -m captioner calibrate --model models/{folder.name} --tune-rerank` chooses between "
                "score and consensus with the nearest training photos on the held-out images).")
    sweep, balanced = decoding["rerank_sweep"], decoding["rerank_balanced_score"]
    metrics = list(next(iter(sweep.values())))
    how = {"score": "the best score (log-probability / length^alpha)",
           "consensus": "the highest consensus with the references of the 25 training photos nearest the picture "
                        "(CIDEr-D; `serving/rerank.py`)"}
    lines = [f"Of the beam's captions, the one with {how[decoding['rerank']]} is said (`decoding.json`: "
             f"\"rerank\": \"{decoding['rerank']}\"), chosen by the same rule on {decoding['rerank_selected_on']}:", "",
             "| ranking | " + " | ".join(metrics) + " | balanced |", "|---|" + "---|" * (len(metrics) + 1)]
    for choice, row in sweep.items():
        mark = " (chosen)" if choice == decoding["rerank"] else ""
        lines.append(f"| {choice}{mark} | " + " | ".join(f"{row[m]:.4f}" for m in metrics)
                     + f" | {balanced[choice]:.4f} |")
    lines += ["", f"Reproduce the choice: `python -m captioner calibrate --model models/{folder.name} --tune-rerank` "
                  "(it needs the folder's neighbour index, and refits the confidence for the captions it chooses)."]
    return "\n\n" + "\n".join(lines)


def _measured_on(machine: dict | None) -> str:
    return f"`metrics.json` also holds each row's decoding time per image, measured on {format_machine(machine)}."


def _limits(data: dict | None, train_images: int | None) -> str:
    images = f"{train_images:,} " if train_images else ""
    what = (f"{images}{data['name']} images with {language_name(data.get('lang'))} captions" if data else
            f"{images}images of a dataset its files do not record")
    return f"""## Limits
Trained on {what}:
captions of scenes unlike those are often generic or wrong, and the model repeats the biases of its
training captions (gender words, for example). Do not rely on it where a wrong description could harm
someone.

Compared with the other model folders: `docs/ABLATION.md` in the repository (the command that
regenerates it heads `docs/ablation-notes.md`).
"""


# ----------------------------------------------------------------------------------------- the cards

def model_card_text(folder: Path, cfg: TrainConfig, training: dict, evaluations: list[dict],
                    data: dict | None, eval_machine: dict | None, language_facts: dict | None = None) -> str:
    """The card of a single folder (its decoder file and decoding.json are read for size and sweep)."""
    folder = Path(folder)
    decoding = mf.read_decoding(folder)
    size_mb = (folder / mf.DECODER_FILE).stat().st_size / 2**20
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
    train_command = f"python -m captioner train --out models/{folder.name} --data DATA{flags}"
    init_line = ""
    if cfg.init_from:  # the folder it starts from must exist first, and shapes which images are held out
        init_line = (f"\n- Starts from the layers of `{cfg.init_from}` that do not depend on the vocabulary (image "
                     f"projection, RNN, merge layer), so it holds out only images that folder held out: train "
                     f"that folder first (`docs/LANGUAGES.md`, \"How the decoders were trained\", has its command).")
    held_out = (data or {}).get("held_out")
    held_captions = f" ({_n(held_out['captions'], 'caption')})" if held_out else ""
    peak = f"; peak memory {training['peak_rss_mb'] / 1024:.1f} GB" if training.get("peak_rss_mb") else ""
    scst = training.get("scst")
    scst_line = ""
    if scst:
        scst_line = (f"\n- Then fine-tuned with self-critical sequence training (CIDEr-D reward, "
                     f"{scst.get('baseline', 'greedy')} baseline) for {len(scst['tune_cider']) - 1} epoch(s) in "
                     f"{scst['seconds'] / 60:.1f} minutes on {format_machine(scst.get('machine'))}; held-out greedy "
                     f"CIDEr by epoch (0 = before): {[round(x, 4) for x in scst['tune_cider']]}; kept epoch "
                     f"{scst['kept_epoch']} (`python -m captioner finetune`).")
    data_lines = "\n".join(_dataset_lines(data, folder))
    smoothing = f" and label smoothing {cfg.label_smoothing}" if cfg.label_smoothing else ""
    return f"""# Model card: `{folder.name}`

{design}, trained on {_dataset_name(data)} with full-sequence teacher forcing{smoothing}.

## Data
{data_lines}
- Training images: the **train** split less {_n(training.get('tune_images', 0), 'image')}{held_captions} held out to
  choose decoding settings: {training['train_images']:,} images, {training['train_captions']:,} captions;
  {selection}.{_sentence(_never_read(data))}
- Figures below are on **dev** ({_dev_phrase(data, evaluations)}).
- Vocabulary: {training['vocab_size']:,} words (seen at least {cfg.min_word_count} times in training captions).

## Results (dev split)
{_decoding_paragraph(decoding, _block_note(evaluations))}{_sweep_command(folder, decoding)}

{chr(10).join(_results_rows(evaluations))}

{_evaluate_command(folder, evaluations)}
{_measured_on(eval_machine)}

## Training
- {training['train_seconds'] / 60:.1f} minutes on {format_machine(training.get('machine'))}, {training['epochs_run']} epochs{peak};
  {kept}; best dev loss {training['best_val_loss']:.4f} (curve: `training_curve.png`).{scst_line}
- Decoder: {training['parameters']:,} parameters; `decoder.keras` is {size_mb:.1f} MB{_storage_note(folder, cfg)}.
- Reproduce: `{train_command}` (the settings below; the others are defaults).{init_line}

| setting | value |
|---|---|
{settings}

{language_section(folder, cfg, language_facts)}{confidence_section(folder)}
{_limits(data, training.get('train_images'))}"""


def _storage_note(folder: Path, cfg: TrainConfig) -> str:
    """How the weights are stored, when not float32."""
    if cfg.storage != "float16":
        return ""
    return (f" (weights stored as float16, half the file, and float32 again once loaded; "
            f"`python tools/float16_storage.py models/{Path(folder).name}` compares both files' dev captions)")


def _first_member(folder: Path) -> Path:
    """An ensemble's first member (the folder whose vocabulary and truecase table it uses), else the folder."""
    return mf.ensemble_members(folder)[0] if mf.is_ensemble_folder(folder) else Path(folder)


def language_section(folder: Path, cfg: TrainConfig, facts: dict | None) -> str:
    """For captions in a language other than English: how its text is handled and scored, the dev
    figures against a constant baseline, and examples with English references ("" for English)."""
    from ..serving.languages import language as caption_language

    if cfg.lang == "en" or not facts:
        return ""
    spec = caption_language(cfg.lang)
    m, b = facts["model"], facts["baseline"]
    rows = "\n".join(f"| {label} | " + " | ".join(f"{v[k]:.4f}" for k in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr"))
                     + " |" for label, v in (("this model", m), ("constant caption", b)))
    examples = "\n".join(f"| {e['image']} | {e['caption']} | {' / '.join(e['references'])} | "
                         f"{' / '.join(e['english_references']) or 'n/a'} |" for e in facts["examples"])
    case = (f"- Modelled in lower case; capitals restored for display from the training captions' own spelling "
            f"(`{mf.TRUECASE_FILE}`, {len(mf.read_truecase(_first_member(folder))):,} words).\n"
            if spec.restores_case else "")
    return f"""## Language: {spec.name} ({spec.code})
- Captions: {spec.references_per_image} per image in the data (`{spec.captions_file}`); tokens for the model and
  for every metric: **{spec.tokenisation}**. METEOR is left out: its stemmer and paraphrase tables are English.
{case}- Written back as people write {spec.name} (for example: "{facts['examples'][0]['caption'] if facts['examples'] else ''}"),
  spoken by the `{spec.espeak_voice}` espeak-ng voice offline (gTTS `{spec.gtts_lang}` online).

Dev, {facts['decoding']}, {facts['dev_images']:,} images, against a constant baseline (the most frequent training
caption, "{facts['constant_caption']}", given to every image): BLEU-4 {facts['BLEU-4_over_baseline']}x,
CIDEr-D {facts['CIDEr_over_baseline']}x; {facts['distinct_captions']:,} distinct captions.

| dev, {facts['decoding']} | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | CIDEr-D |
|---|---|---|---|---|---|
{rows}

A few dev images (every {max(1, facts['dev_images'] // max(len(facts['examples']), 1))}th by name), with English references for readers of English:

| image | this model | {spec.name} references (2) | English references (2) |
|---|---|---|---|
{examples}

"""


def confidence_section(folder: Path) -> str:
    """"## How sure it is": the folder's calibration and its dev figures (``confidence.json``)."""
    from ..serving.assessment import ConfidenceError
    from ..serving.calibrator import Calibrator

    path = Path(folder) / mf.CONFIDENCE_FILE
    try:
        calibrator = Calibrator.load(path)
    except ConfidenceError:
        return (f"## How sure it is\nNo confidence calibration: captions come without a confidence. Fit one with "
                f"`python -m captioner calibrate --model models/{Path(folder).name}`.\n")
    good = calibrator.good.get("threshold", 0.4)
    lines = ["## How sure it is",
             f"Each caption gets a confidence (the chance it is good: per-image CIDEr-D >= {good} against its "
             f"references), fitted on {calibrator.info.get('fitted_on', 'held-out training images')} by "
             f"{calibrator.info.get('tool', 'logistic regression')}, over the signals {' and '.join(calibrator.features)}. "
             f"Bands: high >= {calibrator.high}, low < {calibrator.low} (out-of-domain pictures are always low)."]
    dev = calibrator.info.get("dev")
    if dev:
        b = dev["bands"]
        lines += ["", f"On **dev** ({dev['images']:,} images, decoded as in `decoding.json`; "
                      f"{dev['good_share']:.0%} of captions good):", "",
                  "| | figure |", "|---|---|",
                  f"| expected calibration error (10 bins) | {dev['ece']:.3f} |",
                  f"| images in high / medium / low | {b['high']['share']:.1%} / {b['medium']['share']:.1%} / "
                  f"{b['low']['share']:.1%} |",
                  f"| mean per-image CIDEr (pycocoevalcap), high vs low | {b['high']['mean_coco_cider']:.3f} vs "
                  f"{b['low']['mean_coco_cider']:.3f}: {dev['high_over_low_coco_cider']:.2f}x (raw-score terciles "
                  f"{dev['score_terciles_ratio']:.2f}x) |",
                  f"| dev photos flagged out of domain | {dev['photos_flagged']:.1%} |",
                  f"| generated non-photos flagged | {dev['nonphotos_flagged']:.1%} of {dev['nonphotos']} "
                  f"(ROC AUC {dev['roc_auc']:.3f}) |", "",
                  f"Reproduce: `{dev['command']}`."]
    return "\n".join(lines) + "\n"


def ensemble_card_text(folder: Path, members: list[dict], evaluations: list[dict], data: dict | None,
                       eval_machine: dict | None, language_facts: dict | None = None) -> str:
    """The card of an ensemble folder (``members``: ``member_facts`` of each)."""
    folder = Path(folder)
    cfg = mf.read_config(mf.ensemble_members(folder)[0])
    decoding = mf.read_decoding(folder)
    held_out = len(mf.read_tune_images(folder))
    member_rows = "\n".join(
        f"| [`{m['folder']}`](../{m['folder']}/MODEL_CARD.md) | {m['decoder']} {m['rnn'].upper()} | "
        f"{m['parameters'] or 0:,} | {m['size_mb']} MB | {(m['train_seconds'] or 0) / 60:.1f} min |" for m in members)
    member_args = " ".join(f"models/{m['folder']}" for m in members)
    data_lines = "\n".join(_dataset_lines(data, folder))
    train_images = next((m.get("train_images") for m in members if m.get("train_images")), None)
    return f"""# Model card: `{folder.name}` (ensemble)

An ensemble of {len(members)} decoders trained separately on the same data and vocabulary, over one
frozen Xception encoder. At every step of greedy or beam search each member proposes next-word
probabilities and the ensemble uses their mean; the image is encoded once. `ensemble.json` only names
the member folders, so the ensemble adds no weights of its own.

| member | decoder | parameters | size | training time |
|---|---|---|---|---|
{member_rows}

Member figures come from each member's `training.json`; its card gives the machine and the command that
trains it.

## Data
{data_lines}
- Every member was trained on the **train** split less the same {held_out:,} held-out images
  (`tune_images.txt`), on which this ensemble's decoding was chosen.{_sentence(_never_read(data))}
- Figures below are on **dev** ({_dev_phrase(data, evaluations)}).

## Results (dev split)
{_decoding_paragraph(decoding)}{_sweep_command(folder, decoding)}

{chr(10).join(_results_rows(evaluations))}

{_evaluate_command(folder, evaluations)}
{_measured_on(eval_machine)}
Build the folder (and this card): `python -m captioner ensemble {member_args} --out models/{folder.name} --data DATA`.

## Cost
Decoding runs every member at each step, so it costs about {len(members)}x a single decoder's steps; the
Xception encoder, which dominates the time per caption, runs once.

{language_section(folder, cfg, language_facts)}{confidence_section(folder)}
{_limits(data, train_images)}"""
