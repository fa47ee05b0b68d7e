"""Noise suppression and automatic gain for a live microphone: WebRTC's audio processing, as Home
Assistant's own satellites use it (webrtc-noise-gain).

A far-field USB array across the room hears fans and the dishwasher, and a quiet voice; a headset
hears neither. `--noise-suppression 0-4` and `--auto-gain 0-31` (dBFS target; 0 = off) choose; a
device profile can set them (`noise_suppression`, `auto_gain_dbfs`). Never applied to files: a
recording is what it is, and tests and transcripts must hear exactly it.
"""

from __future__ import annotations

import numpy as np

from edge.audio.capture import AudioSource, FilteredSource
from edge.audio_format import SAMPLE_RATE
from edge.errors import AudioError

FRAME = SAMPLE_RATE // 100  # WebRTC works on 10 ms frames


class NoiseCleaner:
    """Frames a float32 stream into 10 ms of 16-bit audio for WebRTC and back; output lags input by
    less than one frame (the remainder waits for the next block)."""

    def __init__(self, noise_suppression: int = 2, auto_gain_dbfs: int = 0):
        if not (0 <= noise_suppression <= 4 and 0 <= auto_gain_dbfs <= 31):
            raise AudioError("--noise-suppression takes 0-4 and --auto-gain 0-31 (dBFS; 0 turns it off)")
        try:
            from webrtc_noise_gain import AudioProcessor
        except ImportError as exc:
            raise AudioError("noise suppression needs webrtc-noise-gain: pip install 'edge-gemma[voice]'") from exc
        self._processor = AudioProcessor(auto_gain_dbfs, noise_suppression)
        self._pending = np.zeros(0, dtype=np.int16)

    def process(self, block: np.ndarray) -> np.ndarray:
        pcm16 = np.concatenate([self._pending, (np.clip(block, -1, 1) * 32767).astype(np.int16)])
        whole = len(pcm16) // FRAME * FRAME
        self._pending = pcm16[whole:]
        out = [
            np.frombuffer(self._processor.Process10ms(pcm16[i : i + FRAME].tobytes()).audio, dtype=np.int16)
            for i in range(0, whole, FRAME)
        ]
        return (np.concatenate(out).astype(np.float32) / 32768.0) if out else np.zeros(0, dtype=np.float32)


def cleaned(source: AudioSource, cleaner: NoiseCleaner) -> FilteredSource:
    """`source` with its blocks through `cleaner` (a partial 10 ms frame waits for the next block)."""
    return FilteredSource(source, cleaner.process, FRAME / SAMPLE_RATE)
