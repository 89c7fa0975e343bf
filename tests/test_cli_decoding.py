"""Every decoding flag of the command line reaches the decoder, for `caption` (printed and --out) and
`evaluate`: the CLI builds one DecodeConfig and passes it whole."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from captioner import Caption, CaptionResult, DecodeConfig
from captioner.cli import main

TUNED_ALPHA = 0.4  # the fake model's "tuned" exponent, used when --length-alpha is not given

FLAGS = [  # (command-line flags, the DecodeConfig field they set, its expected value)
    (["--beam-width", "5"], "beam_width", 5),
    (["--max-words", "9"], "max_words", 9),
    (["--length-alpha", "1.3"], "length_alpha", 1.3),
    ([], "length_alpha", TUNED_ALPHA),
    (["--block-ngram", "0"], "block_ngram", 0),
    (["--block-ngram", "4"], "block_ngram", 4),
    (["--allow-unk"], "allow_unk", True),
    ([], "allow_unk", False),
    (["--rerank", "consensus"], "rerank", "consensus"),
    (["--rerank", "score"], "rerank", "score"),
    ([], "rerank", "auto"),
]


class RecordingCaptioner:
    """Stands in for Captioner.load(): records the DecodeConfig of every call, returns one caption per image."""

    def __init__(self):
        self.checkpoint = SimpleNamespace(length_alpha=TUNED_ALPHA, folder="fake-model")
        self.lang = "en"
        self.decodes: list[DecodeConfig] = []

    def caption(self, images, decode=None, names=None, **keep):
        self.decodes.append(decode)
        n = decode.n_best if decode else 1
        return [CaptionResult(str(p), [Caption(f"caption {k}", -1.0 - k, -0.5 - k) for k in range(n)])
                for p in images]


@pytest.fixture
def recorder(monkeypatch):
    import captioner

    fake = RecordingCaptioner()
    monkeypatch.setattr(captioner.Captioner, "load", classmethod(lambda cls, *a, **k: fake))
    return fake


@pytest.mark.parametrize("flags, field, expected", FLAGS)
def test_caption_flag_reaches_the_decoder(recorder, make_image, capsys, flags, field, expected):
    image = make_image("a.jpg")
    assert main(["caption", str(image), "--json", *flags]) == 0
    [decode] = recorder.decodes
    assert getattr(decode, field) == expected
    assert json.loads(capsys.readouterr().out)["caption"] == "Caption 0."  # the sentence as shown and spoken


@pytest.mark.parametrize("flags, field, expected", FLAGS)
def test_caption_to_file_flag_reaches_the_decoder(recorder, make_image, tmp_path, flags, field, expected):
    image = make_image("a.jpg")
    assert main(["caption", str(image), "--out", str(tmp_path / "out.jsonl"), *flags]) == 0
    [decode] = recorder.decodes
    assert getattr(decode, field) == expected


def test_n_best_reaches_the_decoder_and_the_output(recorder, make_image, capsys):
    image = make_image("a.jpg")
    assert main(["caption", str(image), "--json", "--beam-width", "3", "--n-best", "3"]) == 0
    assert recorder.decodes[0].n_best == 3
    record = json.loads(capsys.readouterr().out)
    assert [a["caption"] for a in record["alternatives"]] == ["caption 0", "caption 1", "caption 2"]


@pytest.mark.parametrize("flags, field, expected", FLAGS)
def test_evaluate_flag_reaches_the_decoder(recorder, monkeypatch, tmp_path, capsys, flags, field, expected):
    import captioner.pipeline.data as data
    import captioner.pipeline.evaluate as evaluate

    seen = []

    def fake_evaluate_split(captioner, dataset, split, decode, images=None, progress=True):
        seen.append(decode)
        return evaluate.EvalResult({"BLEU-1": 0.5}, {}, {}, {}, {"split": split, "n_images": 0})

    monkeypatch.setattr(data, "load_dataset", lambda folder=None, lang="en": SimpleNamespace())
    monkeypatch.setattr(evaluate, "evaluate_split", fake_evaluate_split)
    assert main(["evaluate", "--json", *flags]) == 0
    [decode] = seen
    assert getattr(decode, field) == expected


def test_bad_decoding_flag_is_one_clear_line(recorder, make_image, capsys):
    assert main(["caption", str(make_image("a.jpg")), "--beam-width", "0"]) == 2
    assert "beam width must be between 1 and 20" in capsys.readouterr().err
    assert recorder.decodes == []  # refused before any captioning


@pytest.mark.parametrize("command", ["caption", "evaluate"])
def test_block_ngram_1_is_refused_with_a_clear_line(recorder, make_image, capsys, command):
    """1 would block every repeated word; it is refused, not taken as "off"."""
    args = [command, str(make_image("a.jpg"))] if command == "caption" else [command]
    assert main([*args, "--block-ngram", "1"]) == 2
    assert "block_ngram must be 0 (off) or at least 2, not 1" in capsys.readouterr().err
    assert recorder.decodes == []
