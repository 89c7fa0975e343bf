"""Caption languages: tokenisation round trips, written forms, the i18n caption files, the truecase table,
a tiny training run per language, and a model folder that captions in its own language."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from captioner.config import DecodeConfig, TrainConfig
from captioner.pipeline.data import DataError, clean_caption, load_dataset, resolve_data_dir
from captioner.serving.sentence import hedge, out_of_domain_warning
from captioner.serving.languages import LANGUAGES, LanguageError, language, truecase_table
from conftest import data_missing

LETTERS = {"de": "abcdefghijklmnopqrstuvwxyzäöüß", "fr": "abcdefghijklmnopqrstuvwxyzéèêàâçîïôûùœ",
           "es": "abcdefghijklmnopqrstuvwxyzáéíóúñü"}
HAN = [chr(c) for c in range(0x4E00, 0x4E00 + 2000)]


def _words(alphabet: str):
    return st.lists(st.text(alphabet, min_size=1, max_size=9), min_size=1, max_size=12)


@pytest.mark.parametrize("code", ["de", "fr", "es"])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_alphabetic_languages_round_trip_through_the_written_form(code, data):
    tokens = " ".join(data.draw(_words(LETTERS[code])))
    written = language(code).write(tokens)
    assert written.endswith(".")
    assert written[0] == written[0].upper() or len(written[0].upper()) > 1  # capitalised, except ß ("SS")
    assert language(code).clean(written) == tokens  # writing loses nothing the model said


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(HAN), min_size=1, max_size=20))
def test_chinese_is_written_without_spaces_and_keeps_every_character(chars):
    tokens = " ".join(chars)
    written = language("zh").write(tokens)
    assert written == "".join(chars) + "。" and " " not in written
    assert "".join(language("zh").clean(written).split()) == "".join(chars)  # jieba may cut words differently


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_english_cleaning_is_unchanged(text):
    assert clean_caption(text) == " ".join(re.findall(r"[a-z]+", text.lower().replace("'", "")))
    assert language("en").write(clean_caption(text)) == clean_caption(text)  # English is shown as decoded


def test_letters_accents_and_elisions_are_kept():
    assert clean_caption("Zwei Männer überqueren die Straße.", "de") == "zwei männer überqueren die straße"
    assert clean_caption("L’homme à vélo porte un T-shirt.", "fr") == "l' homme à vélo porte un t-shirt"
    assert language("fr").write("l' homme à vélo") == "L'homme à vélo."
    assert clean_caption("Un niño pequeño corre, 3 veces.", "es") == "un niño pequeño corre veces"
    assert clean_caption("两只狗在草地上奔跑，3个人。", "zh") == "两只 狗 在 草地 上 奔跑 个人"  # jieba words


def test_truecase_table_learns_german_nouns_and_skips_first_words_and_lower_case_captions():
    table = truecase_table(["Ein Hund läuft über die Wiese.", "Der Hund und ein Kind spielen.",
                            "ein hund im schnee", "Zwei Hunde laufen"], language("de"))
    assert table["hund"] == "Hund" and table["wiese"] == "Wiese" and table["kind"] == "Kind"
    assert "ein" not in table and "zwei" not in table  # lower case inside sentences; first words not counted
    assert language("de").write("ein hund läuft über die wiese", table) == "Ein Hund läuft über die Wiese."


def test_hedges_and_warnings_are_in_the_captions_language():
    assert hedge("Ein Hund läuft.", "medium", "de") == "Wahrscheinlich: Ein Hund läuft."
    assert hedge("一只狗在跑。", "low", "zh") == "也许是：一只狗在跑。"
    assert hedge("a dog runs", "medium") == "Probably a dog runs"
    for code in LANGUAGES:
        assert out_of_domain_warning(code)
    assert "Fotos" in out_of_domain_warning("de") and "照片" in out_of_domain_warning("zh")
    with pytest.raises(LanguageError, match="choose one of en, de, zh, fr, es"):
        language("xx")


def test_an_i18n_caption_file_with_bad_lines_is_read_and_the_bad_lines_counted(tmp_path, make_image):
    for name in ("a.jpg", "b.jpg"):
        make_image(name, folder=tmp_path / "images")
    (tmp_path / "Flickr_8k.trainImages.txt").write_text("a.jpg\n")
    (tmp_path / "Flickr_8k.devImages.txt").write_text("b.jpg\n")
    (tmp_path / "i18n" / "de").mkdir(parents=True)
    (tmp_path / "i18n" / "de" / "Flickr8k.token.txt").write_text(
        "a.jpg#0\tEin Hund läuft über die Wiese.\nno tab here\nb.jpg#0\tZwei Kinder spielen\nb.jpg#1\t\n"
        "missing.jpg#0\tEin Bild ohne Datei\n", encoding="utf-8")
    dataset = load_dataset(tmp_path, "de")
    assert dataset.lang == "de" and dataset.malformed_lines == 2 and dataset.missing_images == 1
    assert dataset.captions == {"a.jpg": ["ein hund läuft über die wiese"], "b.jpg": ["zwei kinder spielen"]}
    assert dataset.truecase == {"hund": "Hund", "wiese": "Wiese"}  # from training captions only
    with pytest.raises(DataError, match="no French captions"):
        load_dataset(tmp_path, "fr")


@pytest.mark.parametrize("code", ["de", "zh", "fr", "es"])
def test_the_real_i18n_files_read_with_the_official_splits(code):
    try:
        dataset = load_dataset(resolve_data_dir(None), code)
    except DataError as err:
        data_missing(err)
    per_image = 1 if code in ("fr", "es") else 5
    assert dataset.malformed_lines == 0 and len(dataset.split_names("dev")) > 900
    sample = dataset.captions[dataset.split_names("train")[0]]
    assert len(sample) == per_image and all(sample)
    tokens = {t for n in dataset.split_names("train")[:200] for c in dataset.captions[n] for t in c.split()}
    assert any(not t.isascii() for t in tokens)  # accents, umlauts or Hanzi survive cleaning
    if code == "zh":  # jieba words: some of several characters, never punctuation or digits
        assert any(len(t) > 1 for t in tokens) and not any(c.isdigit() or c in "，。" for t in tokens for c in t)


def _tiny_language_data(code: str):
    """A few hundred real captions of ``code`` with random features (the run checks plumbing, not quality)."""
    try:
        full = load_dataset(resolve_data_dir(None), code)
    except DataError as err:
        data_missing(err)
    from captioner.pipeline.data import CaptionDataset

    train, dev = full.split_names("train")[:70], full.split_names("dev")[:10]
    names = train + dev
    dataset = CaptionDataset(full.image_dir, {n: full.captions[n] for n in names}, {"train": train, "dev": dev},
                             lang=code, truecase=full.truecase)
    rng = np.random.default_rng(0)
    return dataset, {n: rng.normal(size=2048).astype(np.float32) for n in names}


@pytest.mark.parametrize("code", ["de", "zh", "fr", "es"])
def test_a_tiny_training_run_per_language_captions_in_that_language(tmp_path, code):
    from captioner.pipeline.train import train
    from captioner.serving.captioner import Captioner
    from captioner.serving.model_folder import load_checkpoint

    dataset, features = _tiny_language_data(code)
    cfg = TrainConfig(lang=code, units=32, embedding_dim=16, epochs=2, batch_size=16, min_word_count=2,
                      tune_images=7, average_best=1)
    summary = train(dataset, features, cfg, tmp_path / code, log=lambda *_: None)
    assert summary["data"]["lang"] == code and summary["train_captions"] > 50
    assert json.loads((tmp_path / code / "config.json").read_text())["lang"] == code
    assert (tmp_path / code / "truecase.json").is_file() == (code == "de")
    checkpoint = load_checkpoint(tmp_path / code)
    assert checkpoint.language.code == code
    assert any(not w.isascii() for w in checkpoint.vocab.words[4:])  # the vocabulary is the language's own
    captioner = Captioner(None, checkpoint)
    features_dev = np.stack([features[n] for n in dataset.split_names("dev")[:3]])
    for [caption] in captioner.caption_features(features_dev, DecodeConfig(beam_width=2, max_words=8, wording="as-learned")):
        assert caption.text == checkpoint.write(caption.tokens)
        if caption.tokens and code == "zh":
            assert " " not in caption.text and caption.text.endswith("。")
        elif caption.tokens:
            assert caption.text[0].isupper() and caption.text.endswith(".")


def test_a_decoder_can_start_from_another_languages_shared_layers(tmp_path):
    from captioner.pipeline.train import init_from_folder, train
    from captioner.serving.decoders import build_model

    dataset, features = _tiny_language_data("fr")
    cfg = TrainConfig(lang="fr", units=32, embedding_dim=16, epochs=1, batch_size=16, min_word_count=2,
                      tune_images=7, average_best=1)
    train(dataset, features, cfg, tmp_path / "fr", log=lambda *_: None)
    other = build_model(57, cfg)  # a different vocabulary: embedding and logits cannot be shared
    copied = init_from_folder(other, tmp_path / "fr")
    assert copied == ["image_dense", "rnn", "merge_dense"]
    from captioner.serving.model_folder import load_checkpoint

    source = load_checkpoint(tmp_path / "fr").model
    for name in copied:
        for mine, theirs in zip(other.get_layer(name).get_weights(), source.get_layer(name).get_weights()):
            np.testing.assert_array_equal(mine, theirs)


def test_train_config_rejects_an_unknown_language():
    with pytest.raises(ValueError, match="choose one of"):
        TrainConfig(lang="klingon").validate()


def test_float16_storage_halves_the_decoder_file_and_loads_back_as_float32(tmp_path):
    from captioner.serving.decoders import build_model
    from captioner.serving.model_folder import load_checkpoint, save_checkpoint, store_float16
    from captioner.serving.vocab import Vocabulary

    vocab = Vocabulary.fit(["ein hund läuft", "zwei hunde"], min_count=1)
    cfg = TrainConfig(lang="de", units=64, embedding_dim=32)
    model = build_model(len(vocab), cfg)
    save_checkpoint(model, vocab, cfg, tmp_path / "m")
    before = (tmp_path / "m" / "decoder.keras").stat().st_size
    saved = store_float16(tmp_path / "m")
    after = (tmp_path / "m" / "decoder.keras").stat().st_size
    assert saved == before - after and after < 0.6 * before
    loaded = load_checkpoint(tmp_path / "m")
    assert loaded.config.storage == "float16"
    for mine, theirs in zip(loaded.model.weights, model.weights):
        assert str(mine.dtype) == "float32"
        np.testing.assert_allclose(np.asarray(mine), np.asarray(theirs), rtol=1e-3, atol=1e-4)
    cfg.storage = "float16"  # a training run asking for it writes the small file directly
    save_checkpoint(model, vocab, cfg, tmp_path / "direct")
    assert abs((tmp_path / "direct" / "decoder.keras").stat().st_size - after) < 0.05 * after
