"""Acoustic echo cancellation: what the loudspeaker plays is taken out of what the microphone hears.

A shelf speaker's microphone hears its own replies. Without this, voice barge-in stops every reply at
its first word. WebRTC's AEC3 (the canceller in Chrome and in PipeWire/PulseAudio's echo-cancel
module) through pywebrtc-audio: in-process, wheels for x86-64 and aarch64, about 1% of one core.

The wake word hears another stream of the same microphone: the echo taken out by Speex's adaptive
filter alone (`LinearCanceller`). AEC3's residual suppressor, which keeps the end-pointer from taking
the reply's leftovers for speech, takes a name said over the reply out with the reply; a linear filter
leaves the user in, and a reply that never says the name cannot wake it (docs/performance.md, "Echo").

The output callback hands every block the device plays, silence included, to an `EchoReference`;
the microphone side takes as many reference samples as each block it reads. Both run on the sound
card's clocks, so the two streams stay in step; AEC3 finds and follows the delay between them (the
output and input buffering plus the room) itself, starting from the `delay_ms` hint.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

from edge.audio.capture import AudioSource, FilteredSource
from edge.audio.resample import StreamResampler
from edge.audio_format import SAMPLE_RATE
from edge.errors import AudioError

FRAME = SAMPLE_RATE // 100  # AEC3 works on 10 ms frames
MAX_BACKLOG_S = 2.0  # reference not yet used beyond this is dropped: the microphone stopped reading
# The reference may lead the microphone by the output's and input's buffering (the echo of a sample
# reaches the microphone that much after it was played), never by more than this: older reference
# (the output started before the microphone) is dropped, or AEC3 would look seconds back for the echo.
MAX_LEAD_S = 0.5
# AEC3 learns the room from what is played: over its first seconds of playback the echo leaks through
# (in simulated rooms it took out up to 15 dB less in its first second than later). Until it has
# heard this much, the microphone is muted while something plays, so a leak is never taken for speech.
LEARN_S = 2.5
PLAYING_DB = -60.0  # a reference frame above this is playback, not silence
# What AEC3 leaves of the echo still sounds like speech to an end-pointer (a residual 30-40 dB down is
# heard in a quiet room). While something plays, a frame passes only when it stands GATE_DB above the
# residual AEC3 has been leaving: the RESIDUAL_PERCENTILE of output level minus reference level over
# the last RESIDUAL_S of frames judged residual. A person talking over the reply passes; the reply's
# residual does not. Chosen on scripts/echo_bench.py's rooms (seed 2026), reported on others
# (docs/performance.md, "Echo").
GATE_DB = 6.0
RESIDUAL_PERCENTILE = 95
ECHO_TAIL_S = 0.5  # a room rings on after the reference falls quiet: the delay plus the reverberation
SUPPRESS = 0.001  # -60 dB, not silence: the end-pointer's noise floor stays that of a room
RESIDUAL_S = 3.0
# The linear filter's length: the delay and the room's ringing it models. 128 ms heard names over a
# reply 10 dB louder than the user as well as 256 and 512 ms in echo_bench's rooms, for the least CPU.
LINEAR_TAIL_S = 0.128


class EchoReference:
    """What the loudspeaker played, oldest first, at 16 kHz. `played` is called from the output's
    audio thread (cheap: a copy and an append); `take` from the microphone's reader."""

    def __init__(self) -> None:
        self._blocks: deque[np.ndarray] = deque()
        self._lock = threading.Lock()
        self._rate: int | None = None
        self._resampler: StreamResampler | None = None
        self._ready = np.empty(0, np.float32)  # resampled, not yet taken
        self._queued = 0  # samples in _blocks

    def played(self, pcm: np.ndarray, rate: int) -> None:
        with self._lock:
            if rate != self._rate:
                self._rate, self._blocks, self._queued = rate, deque(), 0
                self._resampler = StreamResampler(rate, SAMPLE_RATE) if rate != SAMPLE_RATE else None
            self._blocks.append(np.array(pcm, dtype=np.float32, copy=True))
            self._queued += len(pcm)
            while self._queued > MAX_BACKLOG_S * rate:
                self._queued -= len(self._blocks.popleft())

    def take(self, n: int) -> np.ndarray:
        """The next `n` samples played (silence where the output has not played that far)."""
        with self._lock:
            blocks, self._blocks, self._queued = list(self._blocks), deque(), 0
            resampler = self._resampler
        for block in blocks:
            converted = resampler.process(block) if resampler is not None else block
            self._ready = np.concatenate([self._ready, converted])
        lead = len(self._ready) - n
        if lead > MAX_LEAD_S * SAMPLE_RATE:
            self._ready = self._ready[lead - int(MAX_LEAD_S * SAMPLE_RATE) :]
        out, self._ready = self._ready[:n], self._ready[n:]
        return out if len(out) == n else np.concatenate([out, np.zeros(n - len(out), np.float32)])


class LinearCanceller:
    """Speex's multidelay adaptive filter (MDF, through pyaec) on 10 ms frames, without Speex's
    preprocessor: the echo a linear model of the room predicts is subtracted, nothing else is touched."""

    def __init__(self, tail_s: float = LINEAR_TAIL_S):
        try:
            from pyaec import Aec
        except (ImportError, AttributeError, OSError) as exc:  # AttributeError: pyaec's library did not load
            raise AudioError(
                "echo cancellation needs pyaec: pip install 'edge-gemma[voice]', or --echo-cancel off"
            ) from exc
        self._aec = Aec(FRAME, int(tail_s * SAMPLE_RATE), SAMPLE_RATE, False)

    def process(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        out = self._aec.cancel_echo(_int16(near).tolist(), _int16(far).tolist())
        return np.asarray(out, np.float32) / 32768


class EchoCanceller:
    """AEC3 over 16 kHz mono blocks of any length (a partial frame waits for the next block); beside
    it the linear filter alone, whose output of the last block is `linear` (what the wake word hears)."""

    def __init__(self, reference: EchoReference, *, delay_ms: int = 0):
        try:
            from pywebrtc_audio import EchoCanceller as Aec3
        except ImportError as exc:
            raise AudioError(
                "echo cancellation needs pywebrtc-audio: pip install 'edge-gemma[voice]', or --echo-cancel off"
            ) from exc
        self.reference = reference
        self._aec = Aec3(SAMPLE_RATE, 1, max(0, int(delay_ms)))
        self._linear = LinearCanceller()
        self.linear = np.empty(0, np.float32)
        self._near = np.empty(0, np.float32)
        self._far = np.empty(0, np.float32)
        self.heard_playing_s = 0.0  # playback AEC3 has learnt from
        self._residual_db: deque[float] = deque(maxlen=int(RESIDUAL_S * 100))  # output minus reference, per frame
        self._recent_far_db: deque[float] = deque(maxlen=int(ECHO_TAIL_S * 100))  # the reference, per frame

    def process(self, block: np.ndarray) -> np.ndarray:
        self._near = np.concatenate([self._near, np.asarray(block, np.float32)])
        self._far = np.concatenate([self._far, self.reference.take(len(block))])
        whole = len(self._near) // FRAME * FRAME
        out, linear = np.empty(whole, np.float32), np.empty(whole, np.float32)
        for at in range(0, whole, FRAME):
            near, far = self._near[at : at + FRAME], self._far[at : at + FRAME]
            linear[at : at + FRAME] = self._linear.process(near, far)
            frame = self._aec.process(near, far)
            self._recent_far_db.append(_db(far))
            echo_from_db = max(self._recent_far_db)  # what may still ring in the room
            if echo_from_db > PLAYING_DB:
                above = _db(frame) - echo_from_db
                learning = self.heard_playing_s < LEARN_S
                if learning or above < np.percentile(self._residual_db, RESIDUAL_PERCENTILE) + GATE_DB:
                    self._residual_db.append(above)  # only what was judged residual: a talker's frames are not
                    frame = frame * SUPPRESS  # the reply's residual (or AEC3 still learning the room)
                self.heard_playing_s += FRAME / SAMPLE_RATE
            out[at : at + FRAME] = frame
        self._near, self._far = self._near[whole:], self._far[whole:]
        self.linear = linear
        return out


def echo_cancelled(source: AudioSource, canceller: EchoCanceller) -> FilteredSource:
    """`source` with the loudspeaker's echo taken out of its blocks."""
    return FilteredSource(source, canceller.process, FRAME / SAMPLE_RATE)


def _int16(pcm: np.ndarray) -> np.ndarray:
    return np.clip(np.round(pcm * 32768), -32768, 32767).astype(np.int16)


def _db(frame: np.ndarray) -> float:
    return 10 * np.log10(float(np.mean(frame.astype(np.float64) ** 2)) + 1e-12)
