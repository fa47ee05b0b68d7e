"""Noise suppression and gain on a live stream (webrtc-noise-gain), with real Piper speech and noise."""

import numpy as np
import pytest

from edge.audio.capture import ArraySource
from edge.audio.cleanup import NoiseCleaner, cleaned
from edge.audio.piper import PiperBackend
from edge.audio.resample import resample
from edge.audio_format import SAMPLE_RATE
from edge.errors import AudioError


def level_db(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-12)


@pytest.fixture(scope="module")
def noisy():
    """3 s of fan-like noise, a sentence, 1 s of noise: (stream, where the speech is)."""
    pcm, rate = PiperBackend("joe").synthesize("Turn on the kitchen light, please.")
    speech = 0.5 * resample(pcm, rate, SAMPLE_RATE)
    rng = np.random.default_rng(7)
    pad = lambda s: np.zeros(int(s * SAMPLE_RATE), np.float32)  # noqa: E731
    clean = np.concatenate([pad(3.0), speech, pad(1.0)])
    noise = np.convolve(rng.standard_normal(len(clean)), np.ones(8) / 8, mode="same")  # low-passed: a fan
    stream = (clean + 0.03 * noise).astype(np.float32)
    return stream, slice(3 * SAMPLE_RATE, 3 * SAMPLE_RATE + len(speech))


def test_suppression_lowers_the_noise_and_keeps_the_speech(noisy):
    stream, speech = noisy
    cleaner = NoiseCleaner(noise_suppression=3)
    out = np.concatenate([cleaner.process(stream[i : i + 1024]) for i in range(0, len(stream), 1024)])
    assert abs(len(out) - len(stream)) < 160  # less than one 10 ms frame behind
    noise_only = slice(2 * SAMPLE_RATE, 3 * SAMPLE_RATE)  # after two seconds of adapting
    assert level_db(out[noise_only]) < level_db(stream[noise_only]) - 6
    assert abs(level_db(out[speech]) - level_db(stream[speech])) < 6


def test_a_cleaned_source_passes_blocks_through_and_bad_levels_are_one_line(noisy):
    stream, _ = noisy
    with cleaned(ArraySource(stream), NoiseCleaner(noise_suppression=2, auto_gain_dbfs=3)) as source:
        blocks = list(source.blocks(timeout=0.1))
    assert sum(len(b) for b in blocks) > len(stream) - 160 and not source.live
    for bad in (dict(noise_suppression=5), dict(auto_gain_dbfs=40)):
        with pytest.raises(AudioError, match="0-4.*0-31"):
            NoiseCleaner(**bad)
