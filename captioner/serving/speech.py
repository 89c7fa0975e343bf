"""Captions spoken aloud in their own language: Google's gTTS when it answers, else an offline espeak-ng voice.

``speak(text, lang)`` takes a caption language code (``languages.LANGUAGES``: en, de, zh, fr, es) and
speaks with that language's voice: ``Language.gtts_lang`` for gTTS ("zh-CN" for Chinese) and
``Language.espeak_voice`` for espeak-ng ("cmn" for Chinese: the bundled espeak-ng has no "zh" voice, and
its English voice would read each Hanzi as "Chinese letter"). An unknown code is a SpeechError naming
the known ones.

gTTS needs Google's servers; offline, rate-limited (HTTP 429) or without DNS it fails, so every call has
a timeout and any failure falls back to espeak-ng from the ``espeakng-loader`` wheel (no system install),
driven through a small ctypes binding. libespeak-ng keeps global state and is not thread-safe, so all
calls into it hold one lock. Results are cached per (text, engine, language).
``espeak_phonemes`` gives the phonemes espeak-ng reads a text as (to check which voice reads what).

Text read in a picture can be in another script than the caption: a sentence in a Latin-script language
with Chinese in it is said in runs (``voice_runs``), the Hanzi with the Chinese voice and the rest with
the caption language's voice, and the audio joined.
"""
from __future__ import annotations

import ctypes
import io
import re
import threading
import unicodedata
import wave
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from .languages import LANGUAGES, Language, LanguageError, language

GTTS_TIMEOUT_S = 6.0
# LANGUAGES (imported above) are the caption languages: code -> Language, whose voices speak() uses.
ENGINES = ("auto", "gtts", "espeak")


class SpeechError(RuntimeError):
    """No engine could speak the text; the message says what each one answered."""


class NothingToSay(SpeechError, ValueError):
    """The text is empty once whitespace, control and invisible format characters are left out: the
    caller's mistake (an HTTP API answers 422), not a voice failing."""


@dataclass(frozen=True)
class Speech:
    audio: bytes
    mime: str  # "audio/mpeg" (gTTS) or "audio/wav" (espeak-ng)
    engine: str  # which voice was used, to show the user
    notes: tuple[str, ...] = ()  # e.g. why the online voice was not used
    text: str = ""  # what was said
    lang: str = "en"  # the caption language it was said in (its voice: languages.py)

    @property
    def extension(self) -> str:
        return "mp3" if self.mime == "audio/mpeg" else "wav"


def gtts_speak(text: str, lang: str = "en", timeout: float = GTTS_TIMEOUT_S) -> bytes:
    """MP3 bytes from Google Translate's TTS; ``lang`` is gTTS's code ("zh-CN", not "zh"); raises on any
    failure (network, 429, bad language)."""
    from gtts import gTTS

    buf = io.BytesIO()
    gTTS(text, lang=lang, timeout=timeout).write_to_fp(buf)
    if buf.tell() == 0:
        raise SpeechError("gTTS returned no audio")
    return buf.getvalue()


class _EspeakNG:
    """Minimal ctypes binding to libespeak-ng in synchronous mode: text -> 16-bit mono WAV bytes."""

    AUDIO_OUTPUT_SYNCHRONOUS = 2
    CHARS_UTF8 = 1
    POS_CHARACTER = 1
    RATE = 1
    CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def __init__(self):
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data_parent = str(Path(espeakng_loader.get_data_path()).parent).encode()
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.sample_rate = self.lib.espeak_Initialize(self.AUDIO_OUTPUT_SYNCHRONOUS, 0, data_parent, 0)
        if self.sample_rate <= 0:
            raise SpeechError(f"espeak-ng failed to initialise (code {self.sample_rate})")
        self._chunks: list[bytes] = []
        self._callback = self.CALLBACK(self._collect)  # kept referenced: C holds the pointer
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                          ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]

    def _collect(self, samples, count, events) -> int:
        if count > 0:
            self._chunks.append(ctypes.string_at(samples, count * 2))
        return 0  # 0 = keep going

    def _set_voice(self, voice: str) -> None:
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise SpeechError(f"espeak-ng has no voice {voice!r}")

    def phonemes(self, text: str, voice: str = "en", ipa: bool = True) -> str:
        """What ``voice`` reads ``text`` as: IPA (or espeak-ng's ASCII phoneme names), one clause after
        another, separated by spaces."""
        self._set_voice(voice)
        fn = self.lib.espeak_TextToPhonemes
        fn.restype = ctypes.c_char_p
        fn.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        buf = ctypes.create_string_buffer(text.encode("utf-8") + b"\0")
        pointer = ctypes.c_void_p(ctypes.addressof(buf))  # espeak-ng moves it on a clause a call; NULL: done
        clauses = []
        while pointer.value:
            out = fn(ctypes.byref(pointer), self.CHARS_UTF8, 0x02 if ipa else 0)  # bit 1: IPA
            if out:
                clauses.append(out.decode("utf-8", "replace").strip())
        return " ".join(c for c in clauses if c)

    def synthesize(self, text: str, voice: str = "en", words_per_minute: int = 160) -> bytes:
        self._set_voice(voice)
        self.lib.espeak_SetParameter(self.RATE, words_per_minute, 0)
        self._chunks = []
        data = text.encode("utf-8") + b"\0"
        status = self.lib.espeak_Synth(data, len(data), 0, self.POS_CHARACTER, 0, self.CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        if status != 0 or not self._chunks:
            raise SpeechError(f"espeak-ng produced no audio (status {status})")
        buf = io.BytesIO()
        with wave.open(buf, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(self.sample_rate)
            wav.writeframes(b"".join(self._chunks))
        return buf.getvalue()


_espeak: _EspeakNG | None = None
_espeak_lock = threading.Lock()  # libespeak-ng is a process-wide singleton and not thread-safe


def _engine() -> _EspeakNG:
    global _espeak
    if _espeak is None:  # called with _espeak_lock held
        _espeak = _EspeakNG()
    return _espeak


def espeak_speak(text: str, voice: str = "en") -> bytes:
    """WAV bytes from the bundled espeak-ng (offline, a few milliseconds). ``voice`` is espeak-ng's name
    (``Language.espeak_voice``: "cmn" for Chinese, not "zh")."""
    with _espeak_lock:
        return _engine().synthesize(text, voice=voice)


def espeak_phonemes(text: str, voice: str = "en", ipa: bool = True) -> str:
    """The phonemes espeak-ng's ``voice`` reads ``text`` as, e.g. "über" in "de" -> "ˈyːbɜ" (the "en" voice
    says "ˈuːbə"; given a lone "ü" it says "jˌuːˈʊmlaʊt"). ``ipa=False``: espeak-ng's ASCII names, whose
    Mandarin syllables carry tone digits ("n'y214")."""
    with _espeak_lock:
        return _engine().phonemes(text, voice=voice, ipa=ipa)


def caption_language(lang: str | None) -> Language:
    """The caption language ``lang`` names (None: English); SpeechError naming the known codes otherwise."""
    try:
        return language(lang)
    except LanguageError:
        raise SpeechError(f"no voice for language {lang!r}: choose one of {', '.join(LANGUAGES)}") from None


_cache: OrderedDict[tuple[str, str, str], Speech] = OrderedDict()
_cache_lock = threading.Lock()
CACHE_SIZE = 128


_HANZI_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff][\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
                        r"\u3000-\u303f\uff00-\uffef\s\d]*")


def voice_runs(text: str, lang: str = "en") -> list[tuple[str, str]]:
    """(piece, language code) in order: Hanzi runs for the Chinese voice, the rest for ``lang``'s voice
    (a Chinese caption is said whole by the Chinese voice)."""
    if caption_language(lang).code == "zh" or not _HANZI_RUN.search(text):
        return [(text, caption_language(lang).code)]
    runs, at = [], 0
    for m in _HANZI_RUN.finditer(text):
        if text[at:m.start()].strip():
            runs.append((text[at:m.start()].strip(), lang))
        runs.append((m.group().strip(), "zh"))
        at = m.end()
    if text[at:].strip():
        runs.append((text[at:].strip(), lang))
    return runs


def _joined(parts: list[Speech], text: str, lang: str) -> Speech:
    """One Speech from pieces said by the same engine: WAV frames or MP3 frames one after another."""
    audio = b"".join(part.audio for part in parts)  # MP3: frames simply follow each other
    if parts[0].mime == "audio/wav":
        try:
            frames, params = [], None
            for part in parts:
                with wave.open(io.BytesIO(part.audio)) as wav:
                    params = params or wav.getparams()
                    frames.append(wav.readframes(wav.getnframes()))
            buf = io.BytesIO()
            with wave.open(buf, "wb") as out:
                out.setparams(params)
                out.writeframes(b"".join(frames))
            audio = buf.getvalue()
        except (EOFError, wave.Error):  # not a WAV after all: leave the bytes as they came
            pass
    notes = tuple(dict.fromkeys(n for part in parts for n in part.notes))
    return Speech(audio, parts[0].mime, parts[0].engine, notes, text, lang)


def speak(text: str, lang: str = "en", engine: str = "auto", timeout: float = GTTS_TIMEOUT_S,
          online=gtts_speak, offline=espeak_speak) -> Speech:
    """Speak ``text``, a caption in language ``lang`` (a ``languages.LANGUAGES`` code: en, de, zh, fr, es),
    with that language's voice: ``engine`` "gtts" or "espeak" forces one; "auto" tries gTTS, then espeak-ng.
    ``online(text, gtts_lang, timeout)`` and ``offline(text, espeak_voice)`` get the engine's own code for
    the language ("zh-CN" and "cmn" for "zh").

    Raises NothingToSay (a SpeechError and a ValueError) when ``text`` holds nothing to say, SpeechError
    when the language is unknown, and when no engine worked (the message lists each engine's failure).
    """
    text = " ".join("".join(ch for ch in str(text) if unicodedata.category(ch) not in ("Cc", "Cf") or ch.isspace())
                    .split())
    if not text:
        raise NothingToSay("nothing to say: the text is empty (or only spaces and invisible characters)")
    if engine not in ENGINES:
        raise SpeechError(f"unknown speech engine {engine!r} (choose from {', '.join(ENGINES)})")
    caption_lang = caption_language(lang)
    runs = voice_runs(text, caption_lang.code)
    if len(runs) > 1:  # Hanzi in a Latin-script sentence: each run with its own voice
        parts = [speak(piece, code, engine, timeout, online, offline) for piece, code in runs]
        if len({p.mime for p in parts}) > 1:  # one run online, another offline: say all offline
            parts = [speak(piece, code, "espeak", timeout, online, offline) for piece, code in runs]
        return _joined(parts, text, caption_lang.code)
    key = (text, engine, caption_lang.code)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    notes: list[str] = []
    result = None
    if engine in ("auto", "gtts"):
        try:
            audio = online(text, caption_lang.gtts_lang, timeout)
            result = Speech(audio, "audio/mpeg", "gTTS (Google, online)", text=text, lang=caption_lang.code)
        except Exception as err:  # gTTSError, requests errors, timeouts, ValueError for a language
            notes.append(f"online voice unavailable ({_short(err)})")
    if result is None and engine in ("auto", "espeak"):
        try:
            audio = offline(text, caption_lang.espeak_voice)
            result = Speech(audio, "audio/wav", "espeak-ng (offline)", tuple(notes), text, caption_lang.code)
        except Exception as err:  # missing library, unknown voice, synthesis failure
            notes.append(f"offline voice unavailable ({_short(err)})")
    if result is None:
        raise SpeechError("; ".join(notes))
    with _cache_lock:
        _cache[key] = result
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return result


def _short(err: Exception) -> str:
    message = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {message[:160]}" if message else type(err).__name__


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()
