"""captioner's web page: give it photos, get captions, hear them spoken. A thin UI over the package."""
from __future__ import annotations

import io
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import streamlit as st  # noqa: E402

from captioner import Captioner, CaptionResult, DecodeConfig  # noqa: E402
from captioner.serving.model_folder import CheckpointError, available_models, describe_model  # noqa: E402
from captioner.serving.heatmap import word_overlays  # noqa: E402
from captioner.serving.speech import LANGUAGES, SpeechError, speak  # noqa: E402
from captioner.serving.weights import WeightsError  # noqa: E402

ASSETS = Path(__file__).parent / "assets"
SAMPLES = sorted(ASSETS.glob("*.jpg"))
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


def sidebar() -> dict:
    st.sidebar.header("Settings")
    models = available_models()
    model_dir = None
    if models:
        model_dir = st.sidebar.selectbox("Model", models, format_func=lambda p: p.name,
                                         help="Checkpoint folders found in models/; their model cards compare them")
        st.sidebar.caption(describe_model(model_dir))
    mode = st.sidebar.radio("Decoding", ["Beam search", "Greedy"], horizontal=True,
                            help="Beam search keeps several candidate captions and usually reads better.")
    beam_width = 1 if mode == "Greedy" else st.sidebar.slider("Beam width", 1, 10, 3)
    n_best = st.sidebar.number_input("Captions to show", 1, beam_width, min(3, beam_width),
                                     help="The best caption plus alternatives (up to the beam width).")
    max_words = st.sidebar.slider("Maximum caption length (words)", 5, 40, 30)
    st.sidebar.header("Speech")
    lang = st.sidebar.selectbox("Voice language", list(LANGUAGES), format_func=LANGUAGES.get)
    engine = st.sidebar.radio("Voice", ["auto", "gtts", "espeak"], horizontal=True,
                              format_func={"auto": "Automatic", "gtts": "Online (gTTS)",
                                           "espeak": "Offline (espeak-ng)"}.get,
                              help="Automatic tries Google's online voice and falls back to the offline one.")
    # length_alpha is left out: each model's own tuned exponent fills it in (Captioner.default_decode)
    return dict(model_dir=model_dir, decode=dict(beam_width=int(beam_width), n_best=int(n_best),
                                                 max_words=int(max_words)), lang=lang, engine=engine)


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
    if not SAMPLES:
        st.info("No sample images are installed.")
        return []
    columns = st.columns(len(SAMPLES))
    for column, path in zip(columns, SAMPLES):
        with column:
            st.image(str(path), width="stretch", alt=f"sample photo {path.stem}")
            if st.button(f"Use {path.stem}", key=f"sample-{path.stem}", width="stretch"):
                st.session_state.sample = path.name
    chosen = st.session_state.get("sample")
    if chosen and (ASSETS / chosen).is_file():
        st.write(f"Selected sample: **{Path(chosen).stem}**")
        return [(chosen, (ASSETS / chosen).read_bytes())]
    return []


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


def show_result(index: int, item: dict, settings: dict) -> None:
    result: CaptionResult = item["result"]
    if not result.ok:
        st.error(f"**{item['name']}** could not be captioned: {result.error}", icon="⚠️")
        return
    best = result.captions[0]
    left, right = st.columns([2, 3], gap="large")
    with left:
        st.image(item["thumbnail"], width="stretch", alt=best.text)  # the caption doubles as alt text
    with right:
        st.caption(item["name"])
        st.markdown(f"### {best.text.capitalize()}.")
        st.write(f"Took {result.seconds:.2f} s · score {best.score:.2f} (length-normalised log-probability)")
        if len(result.captions) > 1:
            st.markdown("**Alternatives**")
            st.table([{"caption": c.text, "probability": f"{c.probability:.2e}", "score": round(c.score, 3)}
                      for c in result.captions])
        if item.get("heatmaps"):
            with st.expander("Where the model looked, word by word", expanded=True):
                words, images = zip(*item["heatmaps"])
                st.image(list(images), caption=list(words), width=150)
        text = "\n".join(c.text for c in result.captions)
        st.code(best.text, language=None)  # has a copy button
        st.download_button("Download caption text", text + "\n", file_name=f"{Path(item['name']).stem}.txt",
                           mime="text/plain", key=f"download-text-{index}")
        speech_key = f"speech-{index}"
        if st.button("Speak caption", key=f"speak-{index}", icon=":material/volume_up:"):
            try:
                st.session_state[speech_key] = speak(best.text, settings["lang"], settings["engine"])
            except SpeechError as err:
                st.session_state[speech_key] = None
                st.warning(f"The caption could not be spoken: {err}")
        spoken = st.session_state.get(speech_key)
        if spoken:
            st.audio(spoken.audio, format=spoken.mime)
            st.caption(f"Voice used: {spoken.engine}" + (f" — {'; '.join(spoken.notes)}" if spoken.notes else ""))
            st.download_button("Download audio", spoken.audio, file_name=f"caption.{spoken.extension}",
                               mime=spoken.mime, key=f"download-audio-{index}")


def main() -> None:
    st.title("captioner")
    st.write("Describe a photo in words, then hear the description. Images stay in this session's memory.")
    settings = sidebar()
    if settings["model_dir"] is None:
        st.error("No model found in `models/`. Train one with `python -m captioner train --out models/merge-lstm`.")
        st.stop()
    captioner = model_or_stop(str(settings["model_dir"]))
    if captioner.has_attention:
        settings["attention"] = st.sidebar.toggle(
            "Show where the model looked", value=False,
            help="For attention models: a heatmap over the photo for every word of the caption.")
    images = gather_images()
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
            show_result(index, item, settings)


main()
