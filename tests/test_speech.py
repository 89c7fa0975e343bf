"""Speech: gTTS failures fall back to the offline voice; the offline WAV is real audio; caching; locking."""
from __future__ import annotations

import io
import threading
import wave

import pytest
from gtts.tts import gTTSError

from captioner.serving import speech


@pytest.fixture(autouse=True)
def _fresh_cache():
    speech.clear_cache()
    yield
    speech.clear_cache()


def wav_seconds(data: bytes) -> float:
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    with wave.open(io.BytesIO(data)) as wav:
        assert wav.getnchannels() == 1 and wav.getsampwidth() == 2
        return wav.getnframes() / wav.getframerate()


def test_offline_voice_writes_a_real_wav():
    assert wav_seconds(speech.espeak_speak("a dog runs on the grass")) > 0.3


def test_gtts_failure_engages_the_offline_voice():
    calls = []

    def failing_gtts(text, lang, timeout):
        calls.append(timeout)
        raise gTTSError("429 (Too Many Requests) from TTS API. Probable cause: Unknown")

    result = speech.speak("a man rides a bike", online=failing_gtts)
    assert result.engine.startswith("espeak-ng") and result.mime == "audio/wav"
    assert "gTTSError" in result.notes[0] and "429" in result.notes[0]
    assert calls == [speech.GTTS_TIMEOUT_S]  # always called with a timeout
    assert wav_seconds(result.audio) > 0.3


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
    with pytest.raises(speech.SpeechError, match="empty"):
        speech.speak("   ")
    with pytest.raises(speech.SpeechError, match="unknown speech engine"):
        speech.speak("hi", engine="festival")


def test_forced_engines():
    def must_not_run(*args):
        raise AssertionError("gTTS must not be called when espeak is forced")

    assert speech.speak("hello", engine="espeak", online=must_not_run).engine.startswith("espeak")
    with pytest.raises(speech.SpeechError, match="online voice unavailable"):
        speech.speak("hello", engine="gtts", online=lambda *a: (_ for _ in ()).throw(gTTSError("DNS")))


def test_real_auto_mode_always_produces_audio():
    """Whatever the network does here (gTTS answers, or fails fast), the person gets audio."""
    result = speech.speak("a child plays in the water", timeout=5)
    assert result.audio and (result.mime == "audio/mpeg" or wav_seconds(result.audio) > 0.3)


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
