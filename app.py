"""captioner's web page: give it photos, get captions, hear them spoken. A thin UI over the package."""
from __future__ import annotations

import io
import math
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import streamlit as st  # noqa: E402

from captioner import Captioner, CaptionResult, DecodeConfig  # noqa: E402
from captioner.serving.model_folder import (CheckpointError, describe_model, folder_has_attention,  # noqa: E402
                                            models_by_language)
from captioner.serving.heatmap import caption_overlays  # noqa: E402
from captioner.serving.languages import language  # noqa: E402
from captioner.serving.page_words import page_words  # noqa: E402
from captioner.serving.speech import SpeechError, speak  # noqa: E402
from captioner.serving.weights import WeightsError  # noqa: E402

ASSETS = Path(__file__).parent / "assets"
SAMPLE_KINDS = {"familiar": "samples_familiar", "unfamiliar": "samples_unfamiliar"}  # kind -> its title's phrase
BAND_LOOKS = {  # a shape beside the words, so the band never rests on colour alone
    "high": (":material/check_circle:", "green"),
    "medium": (":material/help:", "orange"),
    "low": (":material/report:", "red"),
}
# svg is accepted only to explain that vector drawings are not supported, rather than hide it in the picker
UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "heic", "heif", "avif", "svg"]

st.set_page_config(page_title="captioner: describe a photo", page_icon="🖼️", layout="wide")


@st.cache_resource(show_spinner="Loading the captioning model (once per server)…")
def load_captioner(model_dir: str) -> Captioner:
    """One Captioner per model folder for the whole server process, shared by every session."""
    print(f"captioner: loading model {model_dir}", flush=True)  # the load test counts these lines
    return Captioner.load(model_dir, allow_download=False)


def model_or_stop(model_dir: str) -> Captioner:
    try:
        return load_captioner(model_dir)
    except CheckpointError as err:
        st.error(f"**The captioning model could not be loaded.** {err}")
    except WeightsError as err:
        st.error("**The Xception image-encoder weights are missing.** Run `make weights` "
                 f"(or `python -m captioner weights`) once, then reload this page.\n\n```\n{err}\n```")
    st.stop()


def language_label(code: str) -> str:
    """"Deutsch (German)": the name its speakers use, then the English one."""
    spec = language(code)
    return spec.native if spec.native == spec.name else f"{spec.native} ({spec.name})"


def page_language(by_language: dict) -> str:
    """The language chosen in the sidebar (its widget's value from the last run), else the first one."""
    chosen = st.session_state.get("language")
    return chosen if chosen in by_language else next(iter(by_language), "en")


def sidebar(by_language: dict, w: dict) -> dict:
    st.sidebar.header(w["settings"])
    model_dir = None
    if by_language:
        lang = st.sidebar.selectbox(w["language"], list(by_language), format_func=language_label, key="language",
                                    help=w["language_help"])
        models = by_language[lang]
        model_dir = models[0] if len(models) == 1 else st.sidebar.selectbox(
            w["model"], models, format_func=lambda p: p.name, key=f"model-{lang}", help=w["model_help"])
        st.sidebar.caption(describe_model(model_dir))
    # Every widget has a key: its label follows the language, and a key keeps its value when that changes
    mode = st.sidebar.radio(w["decoding"], ["Beam search", "Greedy"], horizontal=True, key="decoding",
                            format_func={"Beam search": w["beam_search"], "Greedy": w["greedy"]}.get,
                            help=w["decoding_help"])
    beam_width = 1 if mode == "Greedy" else st.sidebar.slider(w["beam_width"], 1, 10, 3, key="beam-width")
    n_best = st.sidebar.number_input(w["captions_to_show"], 1, beam_width, min(3, beam_width),
                                     help=w["captions_to_show_help"], key="n-best")
    max_words = st.sidebar.slider(w["max_words"], 5, 40, 30, key="max-words")
    wording = st.sidebar.radio(w["wording"], ["neutral", "as-learned"], horizontal=True, key="wording",
                               format_func={"as-learned": w["wording_as_learned"], "neutral": w["wording_neutral"]}.get,
                               help=w["wording_help"])
    st.sidebar.header(w["speech"])
    engine = st.sidebar.radio(w["voice"], ["auto", "gtts", "espeak"], horizontal=True, key="voice",
                              format_func={"auto": w["voice_auto"], "gtts": w["voice_gtts"],
                                           "espeak": w["voice_espeak"]}.get,
                              help=w["voice_help"])
    read_text = st.sidebar.radio(w["read_text"], ["auto", "on", "off"], horizontal=True, key="read-text",
                                 format_func={"auto": w["read_auto"], "on": w["read_on"], "off": w["read_off"]}.get,
                                 help=w["read_text_help"])
    # length_alpha is left out: each model's own tuned exponent fills it in (Captioner.default_decode)
    return dict(model_dir=model_dir, decode=dict(beam_width=int(beam_width), n_best=int(n_best),
                                                 max_words=int(max_words), wording=wording,
                                                 read_text=read_text), engine=engine)


def gather_images(w: dict) -> list[tuple[str, bytes]]:
    """The (name, bytes) the person chose, from upload, camera or samples."""
    source = st.radio(w["where_is_picture"], ["Upload", "Camera", "Sample"], horizontal=True, key="source",
                      format_func={"Upload": w["upload"], "Camera": w["camera"], "Sample": w["sample"]}.get)
    if source == "Upload":
        files = st.file_uploader(w["upload_label"], type=UPLOAD_TYPES, accept_multiple_files=True,
                                 help=w["upload_help"], key="upload")
        return [(f.name, f.getvalue()) for f in files or []]
    if source == "Camera":  # "Take another" moves to a fresh key: an empty camera, the other widgets kept
        shot = st.camera_input(w["take_photo"], key=f"camera-{st.session_state.get('camera_round', 0)}")
        return [("camera photo", shot.getvalue())] if shot else []
    samples = sample_photos()
    if not samples:
        st.info(w["no_samples"])
        return []
    for kind, phrase in SAMPLE_KINDS.items():
        title = w[phrase]
        group = [sample for sample in samples if sample["kind"] == kind]
        if not group:
            continue
        st.markdown(f"**{title}**")
        for column, sample in zip(st.columns(len(group)), group):
            with column:
                st.image(str(ASSETS / sample["file"]), width="stretch", alt=f"sample: {sample['what']}")
                stem = Path(sample["file"]).stem
                if st.button(w["use_sample"].format(name=stem), key=f"sample-{stem}", width="stretch",
                             help=sample["what"]):
                    st.session_state.sample = sample["file"]
    chosen = st.session_state.get("sample")
    if chosen and (ASSETS / chosen).is_file():
        st.write(w["selected_sample"].format(name=Path(chosen).stem))
        return [(chosen, (ASSETS / chosen).read_bytes())]
    return []


@st.cache_data
def sample_photos() -> list[dict]:
    """``assets/samples.json``: each sample's file, kind ("familiar" / "unfamiliar") and what it shows."""
    import json

    try:
        samples = json.loads((ASSETS / "samples.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [s for s in samples if s.get("kind") in SAMPLE_KINDS and (ASSETS / s.get("file", "")).is_file()]


def caption_images(captioner: Captioner, images: list[tuple[str, bytes]], settings: dict) -> list[dict]:
    start = time.perf_counter()
    attention = settings.get("attention", False)
    decode: DecodeConfig = captioner.default_decode(**settings["decode"])
    results: list[CaptionResult] = captioner.caption(
        [data for _, data in images], decode, names=[name for name, _ in images], keep_attention=attention,
        keep_thumbnail=True)
    shown = []
    for (name, _), result in zip(images, results):
        thumbnail, heatmaps = None, []
        if result.ok:
            if attention:  # the maps recorded while the caption's own words were chosen
                heatmaps = caption_overlays(result.thumbnail, result.captions[0])
            buf = io.BytesIO()
            result.thumbnail.save(buf, format="JPEG", quality=85)
            thumbnail, result.thumbnail = buf.getvalue(), None  # keep the session small
        shown.append({"name": name, "result": result, "thumbnail": thumbnail, "heatmaps": heatmaps})
    st.session_state.elapsed = time.perf_counter() - start
    return shown


def likelihood_words(best, other, w: dict) -> str:
    """How much less likely an alternative is than the best caption, in words."""
    if other is best:
        return w["the_best"]
    ratio = math.exp(min(best.log_prob - other.log_prob, 700.0))
    if ratio < 1.5:
        return w["about_as_likely"]
    return w["times_less_likely"].format(ratio=f"{ratio:,.0f}") if ratio < 1e6 else w["far_less_likely"]


def show_confidence(result: CaptionResult, captioner: Captioner, w: dict) -> None:
    """The band in words with a shape beside it (never colour alone)."""
    sure = result.assessment
    if sure is None:
        st.caption(w["no_confidence"].format(reason=captioner.confidence_problem))
        return
    icon, color = BAND_LOOKS[sure.band]
    st.badge(w["band_badge"].format(band=w[f"band_{sure.band}"], percent=round(100 * sure.confidence)),
             icon=icon, color=color)


def take_another() -> None:
    """Clear the camera shot and its captions so the camera opens again; settings are other widgets and stay."""
    st.session_state.camera_round = st.session_state.get("camera_round", 0) + 1
    for key in [k for k in st.session_state if k == "results" or str(k).startswith("speech-")]:
        del st.session_state[key]


def show_photo_advice(result: CaptionResult, index: int, w: dict, camera: bool) -> bool:
    """When the photo itself is the problem (blurred, dark, blown out): the advice in the caption's language,
    with a camera icon beside the words (never colour alone), and in Camera mode a "Take another" button.
    Returns whether anything was shown."""
    if not result.photo_problems:
        return False
    st.warning(" ".join(result.advice), icon=":material/no_photography:")
    if camera:
        st.button(w["take_another"], key=f"take-another-{index}", icon=":material/photo_camera:",
                  help=w["take_another_help"], on_click=take_another, type="primary")
    return True


def show_read_text(index: int, result: CaptionResult, settings: dict, w: dict) -> None:
    """Every line read in the picture as selectable text, and a button that reads all of it aloud."""
    st.markdown(f"**{w['text_in_picture']}**")
    st.text(result.read_text)
    key = f"read-all-{index}"
    if st.button(w["read_all"], key=f"read-all-button-{index}", icon=":material/record_voice_over:"):
        try:
            st.session_state[key] = speak(result.read_text.replace("\n", ". "), result.lang, settings["engine"])
        except SpeechError as err:
            st.session_state[key] = None
            st.warning(w["text_not_spoken"].format(error=err))
    if st.session_state.get(key):
        st.audio(st.session_state[key].audio, format=st.session_state[key].mime)


def show_result(index: int, item: dict, settings: dict, captioner: Captioner, w: dict) -> None:
    result: CaptionResult = item["result"]
    if not result.ok:
        st.error(w["not_captioned"].format(name=item["name"], error=result.error), icon="⚠️")
        return
    best = result.captions[0]
    said = result.sentence  # what is shown as alt text, copied, downloaded and spoken
    camera = st.session_state.get("source") == "Camera"
    if camera:  # the person is holding the camera: what to do about the shot comes first, above everything
        show_photo_advice(result, index, w, camera=True)
    # keyed so language_tags() can mark it lang="<the caption's language>": a screen reader switches voice
    left, right = st.container(key=f"said-{index}").columns([2, 3], gap="large")
    with left:
        st.image(item["thumbnail"], width="stretch", alt=said)  # the caption doubles as alt text
    with right:
        st.caption(item["name"])
        if not camera:
            show_photo_advice(result, index, w, camera=False)
        if result.kind != "photo" and result.read_text:  # mostly text: what it is and the text lead
            st.markdown(f"### {said}")
        else:
            if result.warning:
                st.warning(result.warning, icon=":material/warning:")
            st.markdown(f"### {result.hedged}")
        show_confidence(result, captioner, w)
        if len(result.captions) > 1:
            st.markdown(f"**{w['other_descriptions']}**")
            st.table([{w["description"]: c.text, w["compared_with_first"]: likelihood_words(best, c, w)}
                      for c in result.captions[1:]])
        if item.get("heatmaps"):
            with st.expander(w["where_looked"], expanded=True):
                words, images = zip(*item["heatmaps"])
                st.image(list(images), caption=list(words), width=150)
        if result.read_text:
            show_read_text(index, result, settings, w)
        st.code(said, language=None, wrap_lines=True)  # has a copy button
        text = "\n".join([said] + [w["alternative"].format(caption=c.text) for c in result.captions[1:]])
        st.download_button(w["download_text"], text + "\n", file_name=f"{Path(item['name']).stem}.txt",
                           mime="text/plain", key=f"download-text-{index}")
        speech_key = f"speech-{index}"
        if st.button(w["speak"], key=f"speak-{index}", icon=":material/volume_up:"):
            try:
                st.session_state[speech_key] = speak(said, result.lang, settings["engine"])
            except SpeechError as err:
                st.session_state[speech_key] = None
                st.warning(w["not_spoken"].format(error=err))
        spoken = st.session_state.get(speech_key)
        if spoken:
            st.audio(spoken.audio, format=spoken.mime)
            st.caption(w["voice_used"].format(engine=spoken.engine, language=language(result.lang).native)
                       + (f" — {'; '.join(spoken.notes)}" if spoken.notes else ""))
            st.download_button(w["download_audio"], spoken.audio, file_name=f"caption.{spoken.extension}",
                               mime=spoken.mime, key=f"download-audio-{index}")
        with st.expander(w["details"]):
            details = {"took (s)": round(result.seconds, 2), "score (length-normalised log-probability)":
                       round(best.score, 3), "log-probability of the whole caption": round(best.log_prob, 2)}
            if result.assessment is not None:
                details.update({"confidence": round(result.assessment.confidence, 3), "band": result.assessment.band,
                                "in domain": result.assessment.in_domain})
                if result.assessment.signals is not None:
                    details.update({f"signal: {k}": v for k, v in result.assessment.signals.to_json().items()})
            st.json(details)
            if len(result.captions) > 1:
                st.table([{"caption": c.text, "score": round(c.score, 3), "log-probability": round(c.log_prob, 2)}
                          for c in result.captions])


LANG_SCRIPT = """<script>
window.__captionerLang = %s;
if (!window.__captionerTag) {  /* once per page: re-applied whenever Streamlit redraws part of it */
  window.__captionerTag = () => {
    const want = window.__captionerLang, root = document.documentElement;
    if (root.lang !== want.page) root.lang = want.page;
    for (const [key, lang] of Object.entries(want.said))
      for (const el of document.querySelectorAll('.st-key-' + key))
        if (el.getAttribute('lang') !== lang) el.setAttribute('lang', lang);
  };
  new MutationObserver(window.__captionerTag).observe(document.body, {childList: true, subtree: true});
}
window.__captionerTag();
</script>"""


def language_tags(page_lang: str, results: list[dict]) -> None:
    """Tell assistive technology which language it reads: the document's ``<html lang>`` is the page's
    language, and each result (caption, alternatives, alt text) is marked with its caption's language,
    which can differ once the page's language is switched. Streamlit writes ``<html lang="en">`` and
    offers no attribute for either, so a small script (run in the page itself, not an iframe) sets them."""
    import json

    said = {f"said-{i}": item["result"].lang for i, item in enumerate(results) if item["result"].ok}
    st.html(LANG_SCRIPT % json.dumps({"page": page_lang, "said": said}), unsafe_allow_javascript=True)


def main() -> None:
    by_language = models_by_language()
    page_lang = page_language(by_language)
    w = page_words(page_lang)  # the page speaks the caption language
    settings = sidebar(by_language, w)
    st.title("captioner")
    st.write(w["intro"])
    with st.expander(w["how_sure_title"]):
        st.markdown(w["how_sure"])
    if settings["model_dir"] is None:
        st.error("No model found in `models/`. Train one with `python -m captioner train --out models/merge-lstm` "
                 "(or `--lang de --out models/merge-de` for German captions).")
        st.stop()
    if folder_has_attention(settings["model_dir"]):
        settings["attention"] = st.sidebar.toggle(w["show_attention"], value=False, help=w["show_attention_help"],
                                                  key="attention")
    images = gather_images(w)  # before the model loads: the page can take a photo while it does
    captioner = model_or_stop(str(settings["model_dir"]))
    if st.button(w["describe_one"] if len(images) <= 1 else w["describe_many"].format(count=len(images)),
                 type="primary", disabled=not images, key="describe"):
        with st.spinner(w["looking"]):
            st.session_state.results = caption_images(captioner, images, settings)
        for key in [k for k in st.session_state if str(k).startswith("speech-")]:
            del st.session_state[key]
    results = st.session_state.get("results", [])
    if results:
        n_ok = sum(item["result"].ok for item in results)
        status = w["done"].format(ok=n_ok, total=len(results), seconds=st.session_state.elapsed)
        (st.success if n_ok == len(results) else st.warning)(status)
        for index, item in enumerate(results):
            st.divider()
            show_result(index, item, settings, captioner, w)
    language_tags(page_lang, results)


main()
