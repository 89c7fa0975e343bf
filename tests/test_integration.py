"""The shipped checkpoint with the real Xception weights, through the library and the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from conftest import ASSETS, ROOT

PEOPLE = {  # words for a person, per caption language (tokens as the model writes them)
    "en": {"man", "woman", "person", "people", "boy", "girl", "men", "women", "child", "player"},
    "de": {"mann", "frau", "person", "menschen", "junge", "mädchen", "kind", "männer", "frauen", "leute", "spieler"},
    "fr": {"homme", "femme", "personne", "gens", "garçon", "fille", "enfant", "hommes", "femmes", "joueur"},
    "es": {"hombre", "mujer", "persona", "personas", "niño", "niña", "chico", "chica", "hombres", "mujeres", "jugador"},
    "zh": {"人", "男人", "女人", "男孩", "女孩", "孩子", "男子", "女子", "小孩", "一个人"},
}


def _shipped_models() -> list[str]:
    from captioner.serving.model_folder import available_models

    return [p.name for p in available_models()]


@pytest.fixture(scope="module", params=_shipped_models())
def captioner(request, xception_weights):
    """Every model folder shipped in models/ (the default and the baseline kept for comparison)."""
    from captioner import Captioner

    return Captioner.load(ROOT / "models" / request.param, allow_download=False)


def test_shipped_model_captions_a_person_sensibly(captioner):
    decode = captioner.default_decode(beam_width=3, n_best=3, wording="as-learned")
    [result] = captioner.caption([ASSETS / "astronaut.jpg"], decode)
    words = result.captions[0].tokens.split()
    assert (3 if captioner.lang == "zh" else 4) <= len(words) <= 30
    assert PEOPLE[captioner.lang] & set(words), result.captions[0].text
    if captioner.lang == "en":
        assert words[-1] not in {"a", "an", "the", "in", "of", "with"}  # a finished sentence
    assert len(set(c.text for c in result.captions)) == 3
    scores = [c.score for c in result.captions]
    if captioner.reranking(decode) == "score":
        assert scores == sorted(scores, reverse=True)
    else:  # the folder says the caption the nearest training photos agree with: the same beam, reordered
        [by_score] = captioner.caption([ASSETS / "astronaut.jpg"], replace(decode, rerank="score"))
        assert sorted(c.tokens for c in by_score.captions) == sorted(c.tokens for c in result.captions)
    neutral = captioner.caption([ASSETS / "astronaut.jpg"], captioner.default_decode(beam_width=3, n_best=3))[0]
    texts = [c.text for c in neutral.captions]  # neutral wording may write two hypotheses alike: said once
    assert 1 <= len(texts) == len(set(texts)) <= 3 and neutral.captions[0].tokens == result.captions[0].tokens


def test_different_images_get_different_captions(captioner):
    """The classic preprocessing bug gives every image the same caption."""
    results = captioner.caption(sorted(ASSETS.glob("*.jpg")), captioner.default_decode(beam_width=3))
    texts = [r.text for r in results]
    assert all(r.ok for r in results) and len(set(texts)) >= 4, texts


def test_beam_one_equals_greedy_on_the_real_model(captioner):
    import numpy as np

    from captioner.config import DecodeConfig
    from captioner.serving.decoding import beam_search
    from captioner.serving.images import load_and_preprocess

    feats = captioner.encode(np.stack([load_and_preprocess(p) for p in sorted(ASSETS.glob("*.jpg"))]))
    greedy = captioner.caption_features(feats, DecodeConfig(beam_width=1, allow_unk=True))  # raw stepper below
    for f, g in zip(feats, greedy):
        [h] = beam_search(captioner.stepper, f, captioner.vocab.start_id, captioner.vocab.end_id, beam_width=1,
                          block_ngram=DecodeConfig.block_ngram)
        assert captioner.vocab.decode(h.ids) == g[0].tokens


@pytest.mark.parametrize("model", _shipped_models())
def test_cli_json_reports_bad_files_and_still_captions_the_rest(tmp_path, model):
    """A fresh process per shipped model: loading must not rely on modules another test imported
    (an attention checkpoint needs its custom layer registered before Keras reads it)."""
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    proc = subprocess.run([sys.executable, "-m", "captioner", "caption", str(ASSETS / "cat.jpg"), str(bad),
                           str(tmp_path / "missing.png"), "--json", "--beam-width", "2",
                           "--model", str(ROOT / "models" / model)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    honest = {"confidence", "band", "in_domain", "reason"}  # the folder's calibration
    read = {"read_text", "kind"}  # the text read in the picture (none in a cat's close-up) and what it is
    assert [set(line) for line in lines] == [{"image", "caption", "lang", "photo_problems", "model_caption", "score"}
                                             | honest | read, {"image", "error"}, {"image", "error"}]
    assert lines[0]["photo_problems"] == []  # a sharp, well-lit photo: no advice before the caption
    from captioner.serving.model_folder import model_language
    from captioner.serving.sentence import hedge, join, out_of_domain_warning

    lang = model_language(ROOT / "models" / model)
    assert lines[0]["lang"] == lang
    assert len(lines[0]["model_caption"]) >= 6 and (lang == "zh" or len(lines[0]["model_caption"].split()) >= 3)
    assert 0.0 <= lines[0]["confidence"] <= 1.0 and lines[0]["band"] in ("high", "medium", "low")
    assert lines[0]["in_domain"] is False and "unlike the photos" in lines[0]["reason"]  # a close-up of a cat
    assert lines[0]["caption"].startswith(out_of_domain_warning(lang))  # in the caption's language
    assert lines[0]["caption"] == join([out_of_domain_warning(lang), hedge(lines[0]["model_caption"], "low", lang)], lang)
    assert lines[0]["read_text"] is None and lines[0]["kind"] == "photo"
    assert "broken.jpg" in lines[1]["error"] and "missing.png: file not found" in lines[2]["error"]


def test_cli_missing_model_folder_is_a_clear_message(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "captioner", "caption", str(ASSETS / "cat.jpg"),
                           "--model", str(tmp_path / "nope")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2
    assert "model folder not found" in proc.stderr and "python -m captioner train" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_batched_beam_search_gives_the_same_captions_as_one_by_one(captioner):
    import numpy as np

    from captioner.config import DecodeConfig
    from captioner.serving.images import load_and_preprocess

    feats = captioner.encode(np.stack([load_and_preprocess(p) for p in sorted(ASSETS.glob("*.jpg"))]))
    decode = DecodeConfig(beam_width=5, n_best=2)
    batched = captioner.caption_features(feats, decode)
    alone = [captioner.caption_features(feats[i:i + 1], decode)[0] for i in range(len(feats))]
    assert [[c.text for c in caps] for caps in batched] == [[c.text for c in caps] for caps in alone]


def test_captions_keep_their_word_ids_and_a_thumbnail(captioner):
    [result] = captioner.caption([ASSETS / "cat.jpg"], captioner.default_decode(beam_width=3, n_best=2, wording="as-learned"),
                                 keep_thumbnail=True)
    for caption in result.captions:
        assert caption.ids and captioner.vocab.decode(caption.ids) == caption.tokens
        assert caption.text == captioner.checkpoint.write(caption.tokens)  # as written in the model's language
    assert max(result.thumbnail.size) <= 640 and result.thumbnail.mode == "RGB"


@pytest.mark.parametrize("beam_width", [1, 3])
def test_attention_maps_come_from_the_decode_that_chose_the_words(xception_weights, beam_width):
    """The maps recorded during greedy or beam search equal the ones a teacher-forced replay of the
    chosen words gives: the heatmaps describe the caption the person reads."""
    import numpy as np

    from captioner import Captioner

    captioner = Captioner.load(ROOT / "models" / "attention-lstm", allow_download=False)
    [result] = captioner.caption([ASSETS / "astronaut.jpg"], captioner.default_decode(beam_width=beam_width),
                                 keep_features=True, keep_attention=True)
    best = result.captions[0]
    maps = captioner.attention_maps(best)
    assert maps.shape == (len(best.ids), 5, 5) == (len(best.text.split()), 5, 5)
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), 1.0, atol=1e-4)
    replay = captioner.stepper.attention(result.features, best.ids, captioner.vocab.start_id)
    np.testing.assert_allclose(maps, replay, atol=1e-5)


def test_a_model_folder_without_calibration_still_captions(tmp_path, xception_weights):
    """No confidence.json: captions come without an assessment, and the reason names the fix."""
    import shutil

    from captioner import Captioner
    from captioner.serving.sentence import finish

    folder = tmp_path / "merge-lstm"
    shutil.copytree(ROOT / "models" / "merge-lstm", folder)
    (folder / "confidence.json").unlink()
    captioner = Captioner.load(folder, allow_download=False)
    assert captioner.confidence is None and "python -m captioner calibrate" in captioner.confidence_problem
    [result] = captioner.caption([ASSETS / "cameraman.jpg"])
    assert result.ok and result.assessment is None and result.warning is None
    assert result.sentence == finish(result.text, "en")  # the caption as prose, unhedged


def test_calibrated_results_carry_the_same_wording_everywhere(captioner):
    """The library's sentence is the hedged caption after the warning; the record holds the same words."""
    from captioner.serving.batch import result_record
    from captioner.serving.sentence import finish, hedge, join, out_of_domain_warning

    [photo, page] = captioner.caption([ASSETS / "cameraman.jpg", ASSETS / "text-page.png"],
                                      captioner.default_decode(read_text="off"))  # reading: below
    lang = captioner.lang
    assert photo.lang == page.lang == lang
    assert photo.assessment.in_domain and photo.sentence == finish(hedge(photo.text, photo.assessment.band, lang), lang)
    assert not page.assessment.in_domain and page.assessment.band == "low"
    assert page.sentence == join([out_of_domain_warning(lang), hedge(page.text, 'low', lang)], lang)
    assert page.text in page.sentence and page.sentence != page.text
    record = result_record(ASSETS / "text-page.png", page)
    assert record["caption"] == page.sentence and record["model_caption"] == page.text
    assert record["in_domain"] is False and record["band"] == "low" and "unlike the photos" in record["reason"]
    from captioner.serving.sentence import text_lead

    [read] = captioner.caption([ASSETS / "text-page.png"])  # reading the text (the default): a page, not a guess
    assert read.kind == "document" and read.sentence.startswith(text_lead("document", lang))
    assert read.text not in read.sentence and result_record(ASSETS / "text-page.png", read)["model_caption"] == read.text
