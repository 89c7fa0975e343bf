"""Comparing spoken audio with the sentence it should say: WAV duration, and the loudness envelope of its
first or last seconds (which tells which words come first, where raw waveforms differ by a few samples)."""
from __future__ import annotations

import io
import wave

import numpy as np


def wav_seconds(data: bytes) -> float:
    """Length of a WAV file in seconds (16-bit mono, as espeak-ng writes it)."""
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE", "not a WAV file"
    with wave.open(io.BytesIO(data)) as wav:
        assert wav.getnchannels() == 1 and wav.getsampwidth() == 2
        return wav.getnframes() / wav.getframerate()


def envelope(data: bytes, seconds: float = 3.0, end: bool = False) -> np.ndarray:
    """RMS loudness in 50 ms frames over the first (or, ``end``, the last) ``seconds`` of a WAV."""
    with wave.open(io.BytesIO(data)) as wav:
        rate = wav.getframerate()
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), np.int16).astype(np.float64)
    n = int(seconds * rate)
    pcm = pcm[-n:] if end else pcm[:n]
    frame = rate // 20
    usable = len(pcm) // frame * frame
    return np.sqrt((pcm[:usable].reshape(-1, frame) ** 2).mean(axis=1))


def sounds_alike(a: bytes, b: bytes, seconds: float = 3.0, end: bool = False) -> float:
    """Correlation of two WAVs' loudness envelopes over their first (or last) ``seconds``: about 1 when they
    say the same words there (measured 0.68-1.0 for espeak-ng: a sentence's last words are said a little
    differently than alone), about 0 when they say different ones."""
    x, y = envelope(a, seconds, end), envelope(b, seconds, end)
    n = min(len(x), len(y))
    if end:
        x, y = x[-n:], y[-n:]
    return float(np.corrcoef(x[:n], y[:n])[0, 1])
