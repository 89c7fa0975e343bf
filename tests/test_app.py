"""The Streamlit page logic with Streamlit's AppTest: upload, caption, speak, greedy/beam, bad files."""
from __future__ import annotations

import pytest

from audio_checks import sounds_alike, wav_seconds
from captioner.serving.sentence import finish
from captioner.serving.speech import espeak_speak
from conftest import ASSETS, ROOT

pytestmark = pytest.mark.usefixtures("xception_weights")


@pytest.fixture(scope="module")
def library_captioner():
    from captioner import Captioner

    return Captioner.load(allow_download=False)


def _app():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    assert not at.exception, at.exception
    return at


def _describe(at):
    at.button(key="describe").click().run()
    assert not at.exception, at.exception


def _captions(at) -> list[str]:
    """The caption headings as the page shows them (``result.hedged``: prose, "Probably a dog runs.")."""
    return [m.value[4:] for m in at.markdown if m.value.startswith("### ")]


def test_upload_caption_and_speak(library_captioner):
    """The page shows the library's caption; spoken by the offline voice, chosen explicitly, the audio is
    espeak-ng saying result.sentence. Catches audio of another text (the warning dropped, the bare caption):
    its length and loudness envelope differ."""
    from captioner.serving.model_folder import default_model_dir, describe_model

    at = _app()
    assert at.sidebar.selectbox(key="language").value == "en"  # English first
    assert at.sidebar.selectbox(key="model-en").value == default_model_dir()  # the default model is preselected
    assert describe_model(default_model_dir()) in [c.value for c in at.sidebar.caption]  # and described
    data = (ASSETS / "cat.jpg").read_bytes()
    at.file_uploader[0].set_value(("cat.jpg", data, "image/jpeg")).run()
    _describe(at)
    [result] = library_captioner.caption([data], library_captioner.default_decode(beam_width=3, n_best=3))
    assert _captions(at) == [result.hedged]  # the page shows what the library computes
    assert any("Done: 1 of 1" in s.value for s in at.success)
    [alternatives, details] = at.table  # alternatives in words; raw scores inside the details expander
    assert [row for row in alternatives.value.iloc[:, 0]] == [c.text for c in result.captions[1:]]
    assert all("less likely" in w or "as likely" in w for w in alternatives.value.iloc[:, 1])
    at.sidebar.radio(key="voice").set_value("espeak").run()  # the offline voice, chosen as a person would
    at.button(key="speak-0").click().run()
    assert not at.exception
    assert len(at.get("audio")) == 1
    assert any(c.value.startswith("Voice used: espeak-ng") for c in at.caption)
    # the page says the sentence it shows: as long as espeak-ng takes for result.sentence, and sounding like it
    spoken = at.session_state["speech-0"]
    expected = espeak_speak(result.sentence, "en")
    assert spoken.text == result.sentence and spoken.mime == "audio/wav"
    assert wav_seconds(spoken.audio) == pytest.approx(wav_seconds(expected), rel=0.03)
    assert sounds_alike(spoken.audio, expected) > 0.9


def test_greedy_mode_and_several_files_with_a_bad_one(library_captioner):
    at = _app()
    at.sidebar.radio[0].set_value("Greedy").run()
    good = (ASSETS / "astronaut.jpg").read_bytes()
    at.file_uploader[0].set_value([("notes.png", b"this is a text file, not a picture", "image/png"),
                                   ("astronaut.jpg", good, "image/jpeg")]).run()
    _describe(at)
    [greedy] = library_captioner.caption([good], library_captioner.default_decode(beam_width=1))
    assert _captions(at) == [greedy.hedged]
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "notes.png" in errors[0] and "not a recognised image format" in errors[0]
    assert any("1 of 2" in w.value for w in at.warning)


def test_sample_button_captions_a_bundled_photo(library_captioner):
    """Catches a sample button that captions another photo (the first sample, the previous one) or shows a
    caption other than the library's: the page must show what Captioner.caption says of rocket.jpg itself,
    and that caption differs from every other sample's, so a mix-up cannot pass."""
    import json

    at = _app()
    at.radio[0].set_value("Sample").run()
    at.button(key="sample-rocket").click().run()
    _describe(at)
    decode = library_captioner.default_decode(beam_width=3)
    files = [s["file"] for s in json.loads((ASSETS / "samples.json").read_text(encoding="utf-8"))]
    results = dict(zip(files, library_captioner.caption([ASSETS / f for f in files], decode)))
    assert [m.value for m in at.markdown if m.value.startswith("### ")] == [f"### {results['rocket.jpg'].hedged}"]
    others = {results[f].hedged.lower() for f in files if f != "rocket.jpg"}
    assert results["rocket.jpg"].hedged.lower() not in others


def test_missing_weights_explain_the_fix(tmp_path, monkeypatch):
    import streamlit as st

    monkeypatch.setenv("CAPTIONER_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("CAPTIONER_XCEPTION_WEIGHTS", raising=False)
    st.cache_resource.clear()  # the model may be cached by earlier tests in this process
    try:
        from streamlit.testing.v1 import AppTest

        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
        at.run()
        assert not at.exception
        [error] = at.error
        assert "weights are missing" in error.value and "make weights" in error.value
    finally:
        st.cache_resource.clear()


def test_no_model_folder_explains_the_fix(monkeypatch):
    import captioner.serving.model_folder
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(captioner.serving.model_folder, "available_models", lambda root=None: [])
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    assert not at.exception
    [error] = at.error
    assert "No model found" in error.value and "python -m captioner train" in error.value


def test_attention_model_shows_a_heatmap_per_word(tmp_path, monkeypatch):
    """With an attention model picked, the toggle draws one overlay per caption word (a tiny,
    untrained attention decoder: the words are nonsense, the plumbing is real)."""
    import keras
    from streamlit.testing.v1 import AppTest

    import captioner.serving.model_folder
    from captioner.serving.model_folder import save_checkpoint
    from captioner.config import TrainConfig
    from captioner.serving.decoders import build_model
    from captioner.serving.vocab import Vocabulary

    keras.utils.set_random_seed(0)
    vocab = Vocabulary.fit(["a dog runs on the grass", "a cat sits"], min_count=1)
    cfg = TrainConfig(decoder="attention", units=16, embedding_dim=8, attention_units=8)
    folder = tmp_path / "tiny-attention"
    save_checkpoint(build_model(len(vocab), cfg), vocab, cfg, folder)
    monkeypatch.setattr(captioner.serving.model_folder, "available_models", lambda root=None: [folder])
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    assert not at.exception, at.exception
    [toggle] = [t for t in at.sidebar.toggle if "where the model looked" in t.label]
    toggle.set_value(True).run()
    at.file_uploader[0].set_value(("cat.jpg", (ASSETS / "cat.jpg").read_bytes(), "image/jpeg")).run()
    _describe(at)
    [caption] = [c.rstrip(".").lower() for c in _captions(at)]  # prose back to the decoder's tokens
    [expander] = [e for e in at.expander if "Where the model looked" in e.label]
    [overlays] = expander.get("image")  # one st.image call with a list of overlays
    shown = overlays.proto.imgs
    words = caption.rstrip(".").lower().split()  # the English tokens, as the heading writes them in prose
    assert len(shown) == len(words) >= 1  # one overlay per word
    assert [i.caption for i in shown] == words


def _band_badges(at) -> list[str]:
    """The confidence badges' text ("High confidence: about 71% chance …")."""
    return [m.value for m in at.markdown if "confidence: about" in m.value]


def test_unfamiliar_sample_shows_the_warning_and_a_low_band(library_captioner):
    """A generated text page, with reading the text off: the warning comes first, the caption is hedged, the band is said in words.
    Spoken by the offline voice, chosen explicitly: catches audio that leaves the warning out or says it
    after the caption (the audio lasts the hedged caption plus about the warning, and starts as the
    warning alone does)."""
    at = _app()
    at.sidebar.radio(key="read-text").set_value("off").run()
    at.radio[0].set_value("Sample").run()
    at.button(key="sample-text-page").click().run()
    _describe(at)
    [result] = library_captioner.caption([ASSETS / "text-page.png"],
                                         library_captioner.default_decode(beam_width=3, read_text="off"))
    assert result.assessment is not None and not result.assessment.in_domain
    warnings = [w.value for w in at.warning]
    assert any(w.startswith("This doesn't look like the photos I learned from") for w in warnings)
    assert _captions(at) == [result.hedged] and _captions(at)[0].startswith("Maybe ")
    [badge] = _band_badges(at)
    assert "Low confidence" in badge and ":material/report:" in badge  # a shape as well as a colour
    assert at.code[0].value.startswith("This doesn't look like")  # the copy text says the warning too
    at.sidebar.radio(key="voice").set_value("espeak").run()
    at.button(key="speak-0").click().run()
    spoken = at.session_state["speech-0"]
    assert spoken.text == result.sentence and spoken.text.startswith("This doesn't look like") and "Maybe " in spoken.text
    assert len(at.get("audio")) == 1 and spoken.engine.startswith("espeak-ng")
    hedged, warning = espeak_speak(result.hedged, "en"), espeak_speak(finish(result.warning, "en"), "en")
    assert wav_seconds(spoken.audio) - wav_seconds(hedged) == pytest.approx(wav_seconds(warning), rel=0.1)
    assert sounds_alike(spoken.audio, warning) > 0.9  # starts as the warning alone does
    assert sounds_alike(spoken.audio, hedged, end=True) > 0.5  # ends as the caption (0.68-1.0 seen; other words ~0)


def test_a_page_of_text_is_read_under_the_caption_with_a_read_all_control(library_captioner):
    """Reading on (the default): the page leads with what it is and the text, shows every line as
    selectable text, and "Read all the text" speaks all of it."""
    at = _app()
    at.radio[0].set_value("Sample").run()
    at.button(key="sample-text-page").click().run()
    _describe(at)
    [result] = library_captioner.caption([ASSETS / "text-page.png"], library_captioner.default_decode(beam_width=3))
    assert result.kind == "document" and result.read_text.count("\n") >= 10
    assert _captions(at) == [result.sentence]
    assert _captions(at)[0].startswith("A page of text. It says:")
    assert result.text not in _captions(at)[0]  # the unsure Flickr-style guess is left out
    assert not any(w.value.startswith("This doesn't look like") for w in at.warning)
    assert result.read_text in [t.value for t in at.text]  # all lines, selectable
    assert at.code[0].value == result.sentence
    at.button(key="read-all-button-0").click().run()
    assert not at.exception, at.exception
    spoken = at.session_state["read-all-0"]
    assert spoken.text.split(".")[0] == result.read_text.split("\n")[0].rstrip(".")
    assert len(spoken.text) >= len(result.read_text)  # every line, not just the sentence's first ones
    assert len(at.get("audio")) == 1


def test_familiar_sample_is_labelled_and_not_warned(library_captioner):
    at = _app()
    at.radio[0].set_value("Sample").run()
    labels = [m.value for m in at.markdown]
    assert "**Photos like the ones it learned from**" in labels and "**Pictures it has never seen the like of**" in labels
    at.button(key="sample-cameraman").click().run()
    _describe(at)
    [result] = library_captioner.caption([ASSETS / "cameraman.jpg"], library_captioner.default_decode(beam_width=3))
    assert result.assessment.in_domain
    assert not any("doesn't look like" in w.value for w in at.warning)
    [badge] = _band_badges(at)
    assert f"{result.assessment.band.capitalize()} confidence" in badge
    assert f"{result.assessment.confidence:.0%}" in badge
    assert _captions(at) == [result.hedged]


def wav_seconds(audio: bytes) -> float:
    import io
    import wave

    with wave.open(io.BytesIO(audio)) as wav:
        return wav.getnframes() / wav.getframerate()


def test_picking_german_gives_a_german_caption_alt_text_and_voice():
    """One "Language" choice sets the model and the voice: the page shows, copies and speaks the German
    model's caption, hedged in German, with the German espeak-ng voice. Catches the sentence read by the
    English voice: its length is within 3 % here, but its loudness envelope is not the German voice's."""
    from captioner import Captioner
    from captioner.serving.model_folder import CheckpointError

    try:
        german = Captioner.load(lang="de", allow_download=False)
    except CheckpointError as err:
        pytest.fail(f"the German model is not shipped: {err}")
    at = _app()
    assert "de" in at.sidebar.selectbox(key="language").options or "Deutsch (German)" in at.sidebar.selectbox(
        key="language").options
    at.sidebar.selectbox(key="language").set_value("de").run()
    assert not at.exception, at.exception
    data = (ASSETS / "dog-field.jpg").read_bytes()
    at.file_uploader[0].set_value(("dog-field.jpg", data, "image/jpeg")).run()
    _describe(at)
    [expected] = german.caption([data], german.default_decode(beam_width=3))
    assert expected.lang == "de" and expected.text[0].isupper() and expected.text.endswith(".")
    [heading] = [m.value for m in at.markdown if m.value.startswith("### ")]
    assert heading == f"### {expected.hedged}"  # the German model's words, hedged in German
    assert at.code[0].value == expected.sentence  # copy text and alt text
    at.sidebar.radio(key="voice").set_value("espeak").run()  # the offline voice, chosen explicitly
    at.button(key="speak-0").click().run()
    spoken = at.session_state["speech-0"]
    assert spoken.text == expected.sentence
    assert any(c.value.startswith("Stimme: ") and "Deutsch" in c.value for c in at.caption)  # in German
    assert spoken.lang == "de"
    assert spoken.engine.startswith("espeak-ng")
    german_voice = espeak_speak(expected.sentence, "de")  # as long as the German voice takes to say that text
    assert wav_seconds(spoken.audio) == pytest.approx(wav_seconds(german_voice), rel=0.03)
    assert sounds_alike(spoken.audio, german_voice) > 0.9


@pytest.mark.parametrize("lang", ["de", "zh", "fr", "es"])
def test_the_page_speaks_the_chosen_language(lang):
    """Picking a language turns the page's own words into it, not only the caption."""
    from captioner.serving.page_words import page_words

    at = _app()
    english = page_words("en")
    assert at.sidebar.header[0].value == english["settings"] and at.button(key="describe").label == english["describe_one"]
    at.sidebar.selectbox(key="language").set_value(lang).run()
    assert not at.exception, at.exception
    w = page_words(lang)
    assert at.sidebar.header[0].value == w["settings"] != english["settings"]
    assert at.sidebar.selectbox(key="language").label == w["language"]
    assert at.button(key="describe").label == w["describe_one"]
    assert [e.label for e in at.expander][0] == w["how_sure_title"]
    assert at.radio[0].label == w["where_is_picture"]
    assert at.radio[0].value == "Upload"  # the choice itself stays the same underneath


def test_switching_language_keeps_the_upload_and_the_settings():
    """The labels change with the language; the photo and the settings must not."""
    at = _app()
    data = (ASSETS / "cat.jpg").read_bytes()
    at.file_uploader[0].set_value(("cat.jpg", data, "image/jpeg")).run()
    at.sidebar.slider(key="beam-width").set_value(5).run()
    at.sidebar.radio(key="voice").set_value("espeak").run()
    assert not at.button(key="describe").disabled
    at.sidebar.selectbox(key="language").set_value("fr").run()
    assert not at.exception, at.exception
    assert at.button(key="describe").label == "Décrire l'image" and not at.button(key="describe").disabled
    assert at.sidebar.slider(key="beam-width").value == 5 and at.sidebar.radio(key="voice").value == "espeak"
    _describe(at)
    assert any(m.value.startswith("### ") for m in at.markdown)  # captioned: the upload survived the switch


def _dark_shot() -> bytes:
    """dog-field.jpg as a camera in a dark room takes it: a twelfth of the light."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.open(ASSETS / "dog-field.jpg").convert("RGB").point(lambda v: v // 12).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _flow(at) -> list[str]:
    """The main area's warnings and caption headings in the order the page shows (and a reader reads) them."""
    return [f"{n.type}: {n.value}" for n in at.main if getattr(n, "type", None) in ("warning", "markdown")
            and (n.type == "warning" or str(n.value).startswith("### "))]


def test_a_dark_camera_shot_says_what_to_do_first_and_take_another_clears_it(library_captioner):
    """Camera mode: the advice comes before the picture and its caption, is spoken first, has an icon
    beside its words, and "Take another" empties the camera while the settings stay."""
    at = _app()
    at.sidebar.slider(key="beam-width").set_value(4).run()
    at.radio(key="source").set_value("Camera").run()
    data = _dark_shot()
    at.camera_input[0].set_value(("shot.jpg", data, "image/jpeg")).run()
    _describe(at)
    [result] = library_captioner.caption([data], library_captioner.default_decode(beam_width=4, n_best=3))
    assert result.photo_problems == ["dark"]
    advice = " ".join(result.advice)
    assert advice.startswith("The photo is too dark")
    assert _flow(at) == [f"warning: {advice}", f"markdown: ### {result.hedged}"]  # first said and shown
    [notice] = [w for w in at.warning if w.value == advice]
    assert notice.proto.icon == ":material/no_photography:"  # an icon beside the words, not colour alone
    assert at.code[0].value == result.sentence and result.sentence.startswith(advice)
    at.button(key="speak-0").click().run()
    assert at.session_state["speech-0"].text.startswith(advice)
    again = at.button(key="take-another-0")
    assert again.label == "Take another"
    again.click().run()
    assert not at.exception, at.exception
    assert at.camera_input[0].value is None and not _captions(at) and not at.get("audio")  # ready for a new shot
    assert at.radio(key="source").value == "Camera" and at.sidebar.slider(key="beam-width").value == 4
    assert at.button(key="describe").disabled


def test_an_uploaded_dark_photo_gets_a_notice_above_its_caption(library_captioner):
    at = _app()
    at.sidebar.selectbox(key="language").set_value("fr").run()
    data = _dark_shot()
    at.file_uploader[0].set_value(("dark.jpg", data, "image/jpeg")).run()
    _describe(at)
    assert not at.exception, at.exception
    from captioner import Captioner

    french = Captioner.load(lang="fr", allow_download=False)
    [result] = french.caption([data], french.default_decode(beam_width=3, n_best=3))
    assert result.photo_problems == ["dark"] and result.advice[0].startswith("La photo est trop sombre")
    assert _flow(at) == [f"warning: {result.advice[0]}", f"markdown: ### {result.hedged}"]
    assert not [b for b in at.button if str(b.key).startswith("take-another")]  # no camera to retake with
