"""Speech: gTTS failures fall back to the offline voice; the offline WAV is real audio; caching; locking;
each caption language is spoken by its own voice (checked on the real espeak-ng: audio and phonemes)."""
from __future__ import annotations

import io
import re
import threading
import unicodedata
import wave

import pytest
from gtts.tts import gTTSError
from hypothesis import given, settings
from hypothesis import strategies as st

from audio_checks import envelope, sounds_alike, wav_seconds
from captioner.serving import speech
from captioner.serving.languages import LANGUAGES, language

# The engines' own names for each caption language, written out here rather than read from the registry.
ESPEAK_VOICE = {"en": "en", "de": "de", "zh": "cmn", "fr": "fr", "es": "es"}
GTTS_LANG = {"en": "en", "de": "de", "zh": "zh-CN", "fr": "fr", "es": "es"}
# A caption per language (as the models write them) and a voice it sounds clearly different in.
CAPTIONS = {
    "en": ("a brown dog runs through the grass", "de"),
    "de": ("Zwei Jungen spielen Fußball auf der Straße.", "en"),
    "zh": ("一个女孩在草地上跑。", "en"),
    "fr": ("Un garçon à vélo près de la forêt.", "en"),
    "es": ("Un niño pequeño juega en la arena.", "en"),
}


@pytest.fixture(autouse=True)
def _fresh_cache():
    speech.clear_cache()
    yield
    speech.clear_cache()




def test_offline_voice_writes_a_real_wav():
    """Catches a WAV header with the wrong rate (espeak-ng synthesises at 22050 Hz), lost synthesis chunks
    and silence: the sentence said twice lasts about twice as long as once, and is not silent."""
    once_text = "a dog runs on the grass."
    once, twice = speech.espeak_speak(once_text), speech.espeak_speak(f"{once_text} {once_text}")
    with wave.open(io.BytesIO(once)) as wav:
        assert wav.getframerate() == 22050
    assert envelope(once).max() > 1000  # 16-bit samples: speech, not near-silence
    assert 1.0 < wav_seconds(once) < 3.0  # six words at 160 words a minute, with the lead-in and pauses
    assert wav_seconds(twice) == pytest.approx(2 * wav_seconds(once), rel=0.1)


def test_gtts_failure_engages_the_offline_voice():
    """Catches a fallback that says something else (or nothing): the audio is espeak-ng saying the text."""
    calls = []

    def failing_gtts(text, lang, timeout):
        calls.append(timeout)
        raise gTTSError("429 (Too Many Requests) from TTS API. Probable cause: Unknown")

    result = speech.speak("a man rides a bike", online=failing_gtts)
    assert result.engine.startswith("espeak-ng") and result.mime == "audio/wav"
    assert "gTTSError" in result.notes[0] and "429" in result.notes[0]
    assert calls == [speech.GTTS_TIMEOUT_S]  # always called with a timeout
    alone = speech.espeak_speak("a man rides a bike", "en")
    assert wav_seconds(result.audio) == pytest.approx(wav_seconds(alone), rel=0.02)
    assert sounds_alike(result.audio, alone) > 0.9


def test_online_voice_used_when_it_answers_and_results_are_cached():
    calls = []

    def fake_gtts(text, lang, timeout):
        calls.append((text, lang))
        return b"ID3fake-mp3"

    first = speech.speak("two dogs  play", lang="fr", online=fake_gtts)
    second = speech.speak("two dogs play", lang="fr", online=fake_gtts)
    assert first is second and first.mime == "audio/mpeg" and first.engine.startswith("gTTS")
    assert calls == [("two dogs play", "fr")]
    speech.speak("two dogs play", lang="en", online=fake_gtts)
    assert len(calls) == 2  # the language is part of the cache key


def test_every_engine_failing_gives_one_clear_error():
    def broken(*args):
        raise OSError("no network")

    with pytest.raises(speech.SpeechError, match="online voice unavailable.*offline voice unavailable"):
        speech.speak("hello", online=broken, offline=broken)
    for blank in ("   ", "\t\n\u3000", "\u200b\u200d \x00\x07", ""):  # spaces, controls, zero-width characters
        with pytest.raises(speech.NothingToSay, match="empty") as caught:
            speech.speak(blank, online=broken, offline=broken)
        assert isinstance(caught.value, ValueError) and isinstance(caught.value, speech.SpeechError)
    with pytest.raises(speech.SpeechError, match="unknown speech engine"):
        speech.speak("hi", engine="festival")


def test_forced_engines():
    def must_not_run(*args):
        raise AssertionError("gTTS must not be called when espeak is forced")

    assert speech.speak("hello", engine="espeak", online=must_not_run).engine.startswith("espeak")
    with pytest.raises(speech.SpeechError, match="online voice unavailable"):
        speech.speak("hello", engine="gtts", online=lambda *a: (_ for _ in ()).throw(gTTSError("DNS")))


def test_auto_mode_without_network_says_the_text_offline():
    """The online voice is a fake that times out as gTTS does without network (the test never depends on
    the real network). Catches an auto mode that gives up, or falls back to saying something else: the
    audio is the real espeak-ng saying the same text."""
    import requests

    def offline_gtts(text, lang, timeout):
        raise requests.exceptions.ConnectTimeout(f"timed out after {timeout} s")

    text = "a child plays in the water"
    result = speech.speak(text, online=offline_gtts, timeout=5)
    assert result.mime == "audio/wav" and "ConnectTimeout" in result.notes[0]
    alone = speech.espeak_speak(text, "en")
    assert wav_seconds(result.audio) == pytest.approx(wav_seconds(alone), rel=0.02)
    assert sounds_alike(result.audio, alone) > 0.9
    other = speech.espeak_speak("two men repair a bicycle on the street", "en")
    assert sounds_alike(result.audio, other) < 0.8  # the comparison tells different words apart


def test_a_warning_first_sentence_is_heard_warning_first():
    """Catches speech that drops the out-of-domain warning or says it after the caption: the audio of the
    sentence lasts the hedged caption plus about the warning (one pause between them), starts as the
    warning alone starts and ends as the hedged caption alone ends."""
    from captioner.serving.sentence import finish, out_of_domain_warning, sentence

    caption = "a man in a red jacket is standing in front of a white building"
    said = sentence(caption, "en", band="low", in_domain=False)
    result = speech.speak(said, "en", engine="espeak")
    hedged = speech.espeak_speak(sentence(caption, "en", band="low"), "en")
    warning = speech.espeak_speak(finish(out_of_domain_warning("en"), "en"), "en")
    extra = wav_seconds(result.audio) - wav_seconds(hedged)
    assert extra == pytest.approx(wav_seconds(warning), rel=0.1)  # measured: the warning + 5 % (a pause)
    assert sounds_alike(result.audio, warning) > 0.9 and sounds_alike(result.audio, hedged) < 0.5
    assert sounds_alike(result.audio, hedged, end=True) > 0.9


def test_offline_voice_is_safe_from_many_threads():
    texts = [f"caption number {i} about a dog" for i in range(8)]
    out: dict[int, bytes] = {}

    def work(i):
        out[i] = speech.espeak_speak(texts[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(out) == list(range(8))
    assert all(wav_seconds(out[i]) > 0.5 for i in out)
    # Interleaved synthesis would mix or lose chunks; each result must last as long as a lone call
    # (espeak-ng varies by a few samples between identical calls, so compare within 5%).
    alone = wav_seconds(speech.espeak_speak(texts[3]))
    assert wav_seconds(out[3]) == pytest.approx(alone, rel=0.05)


# ---------------------------------------------------------------- the caption language sets the voice

def test_speech_languages_are_the_caption_languages():
    assert speech.LANGUAGES is LANGUAGES and set(speech.LANGUAGES) == set(ESPEAK_VOICE)
    for code in ESPEAK_VOICE:
        assert (language(code).espeak_voice, language(code).gtts_lang) == (ESPEAK_VOICE[code], GTTS_LANG[code])
    assert not {"it", "pt", "nl", "hi"} & set(speech.LANGUAGES)  # the old voice-only choices are gone


@pytest.mark.parametrize("lang", list(CAPTIONS))
def test_each_caption_language_is_spoken_by_its_own_voice(lang):
    """The engines get their own code for the caption's language; the offline one is the real espeak-ng."""
    text, _ = CAPTIONS[lang]
    asked = []

    def failing_gtts(said, code, timeout):
        asked.append(("gtts", code))
        raise gTTSError("429 (Too Many Requests)")

    def recording_espeak(said, voice):
        asked.append(("espeak", voice))
        return speech.espeak_speak(said, voice)

    result = speech.speak(text, lang, online=failing_gtts, offline=recording_espeak)
    assert asked == [("gtts", GTTS_LANG[lang]), ("espeak", ESPEAK_VOICE[lang])]
    assert result.engine.startswith("espeak-ng") and result.text == text
    assert wav_seconds(result.audio) > 0.8


@pytest.mark.parametrize("lang", list(CAPTIONS))
def test_real_offline_voice_per_language(lang):
    """No injection: speak() itself reaches espeak-ng with the language's voice. The audio lasts what that
    voice takes for the caption (espeak-ng varies by a few samples), not what the contrasting voice takes."""
    text, contrast = CAPTIONS[lang]
    result = speech.speak(text, lang, engine="espeak")
    assert result.mime == "audio/wav" and result.engine == "espeak-ng (offline)" and not result.notes
    seconds = wav_seconds(result.audio)
    own = wav_seconds(speech.espeak_speak(text, ESPEAK_VOICE[lang]))
    other = wav_seconds(speech.espeak_speak(text, contrast))
    assert seconds > 0.8
    assert seconds == pytest.approx(own, rel=0.02)
    assert abs(seconds - other) > 0.04 * other  # measured gaps: de 6 %, es 18 %, fr 27 %, en 29 %, zh 184 %


def test_the_voices_exist_and_zh_is_not_one_of_them():
    for voice in ESPEAK_VOICE.values():
        assert wav_seconds(speech.espeak_speak("1 2 3", voice)) > 0.3
    with pytest.raises(speech.SpeechError, match="no voice 'zh'"):  # why the registry says "cmn"
        speech.espeak_speak("一个女孩", "zh")


# ------------------------------------------------- what each voice reads (real espeak-ng phonemes)

def ipa(text: str, voice: str) -> str:
    """espeak-ng's IPA for ``text`` without stress marks."""
    return re.sub("[ˈˌ]", "", speech.espeak_phonemes(text, voice))


# word -> a sound its own language's voice must make of it, and which the contrasting voice (English;
# German for English) does not make: measured on the bundled espeak-ng, e.g. "über": de yːbɜ, en uːbə.
SOUNDS = {
    "de": {"über": "yː", "Brücke": "ʏ", "Mädchen": "ɛː", "Löwe": "øː", "Straße": "sə"},
    "fr": {"garçon": "sɔ̃", "vélo": "vel", "forêt": "ʁɛ", "près": "pʁɛ", "élève": "elɛv", "français": "ʁɑ̃sɛ"},
    "es": {"niño": "iɲo", "césped": "θes", "corazón": "θon"},
    "en": {"grass": "ɡɹ", "through": "θɹ"},
}


@pytest.mark.parametrize("lang", list(SOUNDS))
def test_letters_are_read_as_the_language_reads_them(lang):
    """Umlauts, ß and accents become the language's own sounds in its voice; read in the wrong voice the
    same check fails (so it tells the voices apart)."""
    own, contrast = ESPEAK_VOICE[lang], CAPTIONS[lang][1]
    for word, sound in SOUNDS[lang].items():
        assert sound in ipa(word, own), (word, own, ipa(word, own))
        assert sound not in ipa(word, contrast), (word, contrast, ipa(word, contrast))


def test_german_umlauts_are_vowels_not_letter_names():
    """The German voice says a lone ä, ö, ü as the long vowels; the English one spells them ("... umlaut"),
    which also takes about twice as long (0.78 s against 1.76 s here)."""
    assert ipa("ä ö ü", "de").split() == ["ɛː", "øː", "yː"]
    assert ipa("ä ö ü", "en").count("ʊmlaʊt") == 3
    sentence = ipa("Die Mädchen laufen über die Brücke.", "de")
    assert all(vowel in sentence for vowel in ("ɛː", "yː", "ʏ")) and "ʊmlaʊt" not in sentence
    german = wav_seconds(speech.espeak_speak("ä ö ü", "de"))
    english = wav_seconds(speech.espeak_speak("ä ö ü", "en"))
    assert 0.3 < german < 0.7 * english


def test_french_accents_are_pronounced_not_spelled():
    sentence = ipa("Un garçon à vélo près de la forêt.", "fr")
    assert len(re.findall("\u0303", sentence)) >= 2  # nasal vowels: garçon, un
    assert "ʁ" in sentence and "eɪ" not in sentence and "aksɑ̃" not in sentence  # no "accent aigu" spelled
    english = ipa("Un garçon à vélo près de la forêt.", "en")
    assert "\u0303" not in english and "eɪ" in english


HANZI = "两只狗在草地上奔跑一个男人骑自行"  # 16 characters, none a neutral-tone particle


def test_chinese_is_read_character_by_character():
    """The cmn voice reads each Hanzi as a toned syllable, so 16 characters last about 4 times as long as 4
    (measured 4.59 s against 1.13 s, 0.29 s a character). The English voice says "Chinese letter" for each:
    it also grows, but at 0.75 s a character and with no tones, so both checks below fail for it."""
    four, sixteen = HANZI[:4], HANZI
    assert len(sixteen) == 16
    short = wav_seconds(speech.speak(four, "zh", engine="espeak").audio)
    long = wav_seconds(speech.speak(sixteen, "zh", engine="espeak").audio)
    assert long > 3 * short
    assert 0.15 < short / 4 < 0.5 and 0.15 < long / 16 < 0.5
    tones = re.findall(r"\d{2,3}", speech.espeak_phonemes(sixteen, "cmn", ipa=False))  # e.g. n'y214
    assert len(tones) == 16
    assert re.findall(r"\d{2,3}", speech.espeak_phonemes(sixteen, "en", ipa=False)) == []
    assert "tʃaɪniːz" in ipa(four, "en")  # what the wrong voice would say
    assert wav_seconds(speech.espeak_speak(sixteen, "en")) / 16 > 0.6


# ------------------------------------------------------------------------------ unknown languages

@pytest.mark.parametrize("code", ["xx", "it", "pt", "nl", "hi", "cmn", "zh-CN"])
def test_unknown_language_is_a_clear_error(code):
    def must_not_run(*args):
        raise AssertionError("no engine may be asked to speak an unknown language")

    with pytest.raises(speech.SpeechError, match=f"no voice for language '{code}': choose one of en, de, zh, fr, es"):
        speech.speak("hello", code, online=must_not_run, offline=must_not_run)


@settings(max_examples=60, deadline=None)
@given(code=st.sampled_from(sorted(LANGUAGES)), spelling=st.sampled_from([str, str.upper, lambda c: f" {c} "]),
       text=st.text(min_size=1, max_size=40).filter(  # something visible to say (else NothingToSay), one voice
           lambda t: any(not c.isspace() and unicodedata.category(c) not in ("Cc", "Cf") for c in t)
           and len(speech.voice_runs(t, "en")) == 1 and speech.voice_runs(t, "en")[0][1] != "zh"))
def test_any_spelling_of_a_caption_language_reaches_its_voices(code, spelling, text):
    """(Hanzi in a sentence of another language goes to the Chinese voice: test_reading.py checks that.)"""
    speech.clear_cache()  # the autouse fixture runs once per test, not per example
    asked = []
    online = lambda said, lang, timeout: asked.append(lang) or b"ID3"  # noqa: E731
    offline = lambda said, voice: asked.append(voice) or b"RIFF"  # noqa: E731
    speech.speak(text, spelling(code), online=online, offline=offline)
    speech.speak(text, spelling(code), engine="espeak", online=online, offline=offline)
    assert asked == [GTTS_LANG[code], ESPEAK_VOICE[code]]
