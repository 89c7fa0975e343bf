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
from captioner.serving.model_folder import CheckpointError, describe_model, models_by_language  # noqa: E402
from captioner.serving.heatmap import word_overlays  # noqa: E402
from captioner.serving.languages import language  # noqa: E402
from captioner.serving.speech import SpeechError, speak  # noqa: E402
from captioner.serving.weights import WeightsError  # noqa: E402

ASSETS = Path(__file__).parent / "assets"
SAMPLE_KINDS = {"familiar": "Photos like the ones it learned from", "unfamiliar": "Pictures it has never seen the like of"}
BAND_WORDS = {  # a shape and the words, so the band never rests on colour alone
    "high": (":material/check_circle:", "High confidence", "green"),
    "medium": (":material/help:", "Medium confidence", "orange"),
    "low": (":material/report:", "Low confidence", "red"),
}
HOW_SURE = """Every caption comes with a **confidence**: the chance that it is a good description, learned on
photos held out from training (a caption counts as good when it says what people said about the photo).
It is put in words: **high** (the caption as it is), **medium** ("Probably …") and **low** ("Maybe …").
The model learned from about 6,000 photos of people, animals and outdoor scenes (Flickr8k), so pictures
unlike those (documents, screenshots, charts, drawings, close-ups of objects) get a **warning** before the
caption, and the caption is always low confidence. The same words are spoken and copied."""
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


def sidebar() -> dict:
    st.sidebar.header("Settings")
    by_language = models_by_language()
    model_dir = None
    if by_language:
        lang = st.sidebar.selectbox("Language", list(by_language), format_func=language_label, key="language",
                                    help="The language of the caption and of the voice that reads it. "
                                         "Each language has its own model.")
        models = by_language[lang]
        model_dir = models[0] if len(models) == 1 else st.sidebar.selectbox(
            "Model", models, format_func=lambda p: p.name, key=f"model-{lang}",
            help="Checkpoint folders found in models/; their model cards compare them")
        st.sidebar.caption(describe_model(model_dir))
    mode = st.sidebar.radio("Decoding", ["Beam search", "Greedy"], horizontal=True,
                            help="Beam search keeps several candidate captions and usually reads better.")
    beam_width = 1 if mode == "Greedy" else st.sidebar.slider("Beam width", 1, 10, 3)
    n_best = st.sidebar.number_input("Captions to show", 1, beam_width, min(3, beam_width),
                                     help="The best caption plus alternatives (up to the beam width).")
    max_words = st.sidebar.slider("Maximum caption length (words)", 5, 40, 30)
    st.sidebar.header("Speech")
    engine = st.sidebar.radio("Voice", ["auto", "gtts", "espeak"], horizontal=True,
                              format_func={"auto": "Automatic", "gtts": "Online (gTTS)",
                                           "espeak": "Offline (espeak-ng)"}.get,
                              help="Automatic tries Google's online voice and falls back to the offline one.")
    # length_alpha is left out: each model's own tuned exponent fills it in (Captioner.default_decode)
    return dict(model_dir=model_dir, decode=dict(beam_width=int(beam_width), n_best=int(n_best),
                                                 max_words=int(max_words)), engine=engine)


def shows_attention(model_dir) -> bool:
    """True for a single attention decoder (read from its config, without loading the model)."""
    from captioner.serving.decoders import family
    from captioner.serving.model_folder import CheckpointError, is_ensemble_folder, read_config

    try:
        return not is_ensemble_folder(model_dir) and family(read_config(model_dir).decoder).has_attention
    except (CheckpointError, ValueError):
        return False  # loading it reports the problem


def gather_images() -> list[tuple[str, bytes]]:
    """The (name, bytes) the person chose, from upload, camera or samples."""
    source = st.radio("Where is your picture?", ["Upload", "Camera", "Sample"], horizontal=True)
    if source == "Upload":
        files = st.file_uploader("Upload one or more photos", type=UPLOAD_TYPES, accept_multiple_files=True,
                                 help="JPEG, PNG, WebP, BMP, GIF (first frame), TIFF, HEIC or AVIF.")
        return [(f.name, f.getvalue()) for f in files or []]
    if source == "Camera":
        shot = st.camera_input("Take a photo")
        return [("camera photo", shot.getvalue())] if shot else []
    samples = sample_photos()
    if not samples:
        st.info("No sample images are installed.")
        return []
    for kind, title in SAMPLE_KINDS.items():
        group = [sample for sample in samples if sample["kind"] == kind]
        if not group:
            continue
        st.markdown(f"**{title}**")
        for column, sample in zip(st.columns(len(group)), group):
            with column:
                st.image(str(ASSETS / sample["file"]), width="stretch", alt=f"sample: {sample['what']}")
                stem = Path(sample["file"]).stem
                if st.button(f"Use {stem}", key=f"sample-{stem}", width="stretch", help=sample["what"]):
                    st.session_state.sample = sample["file"]
    chosen = st.session_state.get("sample")
    if chosen and (ASSETS / chosen).is_file():
        st.write(f"Selected sample: **{Path(chosen).stem}**")
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
                best = result.captions[0]
                words = best.text.split()
                heatmaps = list(zip(words, word_overlays(result.thumbnail, captioner.attention_maps(best), words)))
            buf = io.BytesIO()
            result.thumbnail.save(buf, format="JPEG", quality=85)
            thumbnail, result.thumbnail = buf.getvalue(), None  # keep the session small
        shown.append({"name": name, "result": result, "thumbnail": thumbnail, "heatmaps": heatmaps})
    st.session_state.elapsed = time.perf_counter() - start
    return shown


def sentence(text: str) -> str:
    """A caption or warning as written prose: capital first letter, a full stop unless it has one."""
    text = text.strip()
    return f"{text[:1].upper()}{text[1:]}{'' if text.endswith(('.', '。', '!', '?')) else '.'}" if text else text


def likelihood_words(best, other) -> str:
    """How much less likely an alternative is than the best caption, in words."""
    if other is best:
        return "the best"
    ratio = math.exp(min(best.log_prob - other.log_prob, 700.0))
    if ratio < 1.5:
        return "about as likely"
    return f"{ratio:,.0f} times less likely" if ratio < 1e6 else "far less likely"


def show_confidence(result: CaptionResult, captioner: Captioner) -> None:
    """The band in words with a shape beside it (never colour alone)."""
    sure = result.assessment
    if sure is None:
        st.caption(f"No confidence for this model: {captioner.confidence_problem}")
        return
    icon, words, color = BAND_WORDS[sure.band]
    st.badge(f"{words}: about {sure.confidence:.0%} chance this description is good", icon=icon, color=color)


def show_result(index: int, item: dict, settings: dict, captioner: Captioner) -> None:
    result: CaptionResult = item["result"]
    if not result.ok:
        st.error(f"**{item['name']}** could not be captioned: {result.error}", icon="⚠️")
        return
    best = result.captions[0]
    said = sentence(result.sentence)  # what is shown as alt text, copied, downloaded and spoken
    left, right = st.columns([2, 3], gap="large")
    with left:
        st.image(item["thumbnail"], width="stretch", alt=said)  # the caption doubles as alt text
    with right:
        st.caption(item["name"])
        if result.warning:
            st.warning(result.warning, icon=":material/warning:")
        st.markdown(f"### {sentence(result.hedged)}")
        show_confidence(result, captioner)
        if len(result.captions) > 1:
            st.markdown("**Other possible descriptions**")
            st.table([{"description": c.text, "compared with the first": likelihood_words(best, c)}
                      for c in result.captions[1:]])
        if item.get("heatmaps"):
            with st.expander("Where the model looked, word by word", expanded=True):
                words, images = zip(*item["heatmaps"])
                st.image(list(images), caption=list(words), width=150)
        st.code(said, language=None, wrap_lines=True)  # has a copy button
        text = "\n".join([said] + [f"Alternative: {c.text}" for c in result.captions[1:]])
        st.download_button("Download caption text", text + "\n", file_name=f"{Path(item['name']).stem}.txt",
                           mime="text/plain", key=f"download-text-{index}")
        speech_key = f"speech-{index}"
        if st.button("Speak caption", key=f"speak-{index}", icon=":material/volume_up:"):
            try:
                st.session_state[speech_key] = speak(said, result.lang, settings["engine"])
            except SpeechError as err:
                st.session_state[speech_key] = None
                st.warning(f"The caption could not be spoken: {err}")
        spoken = st.session_state.get(speech_key)
        if spoken:
            st.audio(spoken.audio, format=spoken.mime)
            st.caption(f"Voice used: {spoken.engine}, {language(result.lang).name}"
                       + (f" — {'; '.join(spoken.notes)}" if spoken.notes else ""))
            st.download_button("Download audio", spoken.audio, file_name=f"caption.{spoken.extension}",
                               mime=spoken.mime, key=f"download-audio-{index}")
        with st.expander("Details"):
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


def main() -> None:
    st.title("captioner")
    st.write("Describe a photo in words, then hear the description. Images stay in this session's memory.")
    with st.expander("How sure is it?"):
        st.markdown(HOW_SURE)
    settings = sidebar()
    if settings["model_dir"] is None:
        st.error("No model found in `models/`. Train one with `python -m captioner train --out models/merge-lstm` "
                 "(or `--lang de --out models/merge-de` for German captions).")
        st.stop()
    if shows_attention(settings["model_dir"]):
        settings["attention"] = st.sidebar.toggle(
            "Show where the model looked", value=False,
            help="For attention models: a heatmap over the photo for every word of the caption.")
    images = gather_images()  # before the model loads: the page can take a photo while it does
    captioner = model_or_stop(str(settings["model_dir"]))
    if st.button("Describe the image" if len(images) <= 1 else f"Describe {len(images)} images",
                 type="primary", disabled=not images):
        with st.spinner("Looking at the picture…"):
            st.session_state.results = caption_images(captioner, images, settings)
        for key in [k for k in st.session_state if str(k).startswith("speech-")]:
            del st.session_state[key]
    results = st.session_state.get("results", [])
    if results:
        n_ok = sum(item["result"].ok for item in results)
        status = f"Done: {n_ok} of {len(results)} image(s) captioned in {st.session_state.elapsed:.1f} s."
        (st.success if n_ok == len(results) else st.warning)(status)
        for index, item in enumerate(results):
            st.divider()
            show_result(index, item, settings, captioner)


main()
