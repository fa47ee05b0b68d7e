"""Acoustic echo cancellation: what the loudspeaker plays is taken out of what the microphone hears.

A shelf speaker's microphone hears its own replies. Without this, voice barge-in stops every reply at
its first word. Speex's multidelay adaptive filter (speexdsp's MDF through pyaec: wheels for x86-64 and
aarch64) subtracts the echo a linear model of the room predicts and nothing else, so a voice talking
over the reply stays in at full strength. Two streams come out of one filter:
- the wake word hears the filter's output as it is: the user is in it, the reply's residual never
  says the name (docs/performance.md, "Echo");
- the end-pointer hears it through a gate: while something plays, a frame passes only when it stands
  above the residual the filter has been leaving (a residual 20 dB down still sounds like speech to
  an end-pointer in a quiet room), and the HOLD_S after it, so a trained VAD hears words.
WebRTC's AEC3 (pywebrtc-audio) did this before: its residual suppressor took a voice talking over a
reply 10 dB louder out with the reply (in echo_bench's rooms the end-pointer caught 24 of 50 such
interruptions with the energy VAD and none with the trained one; the filter and gate caught 48 and 38).

The output callback hands every block the device plays, silence included, to an `EchoReference`;
the microphone side takes as many reference samples as each block it reads. Both run on the sound
card's clocks, so the two streams stay in step, some constant delay apart: the output's and input's
buffering plus the room. `EchoDelay` finds that delay, which can exceed the filter's reach, and
the filter hears the reference that much later.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

import numpy as np

from edge.audio.capture import AudioSource, FilteredSource
from edge.audio.resample import StreamResampler
from edge.audio_format import SAMPLE_RATE
from edge.errors import AudioError

FRAME = SAMPLE_RATE // 100  # the filter works on 10 ms frames
MAX_BACKLOG_S = 2.0  # reference not yet used beyond this is dropped: the microphone stopped reading
# The reference may lead the microphone by the output's and input's buffering (the echo of a sample
# reaches the microphone that much after it was played), never by more than this: older reference
# (the output started before the microphone) is dropped. EchoDelay looks this far back.
MAX_LEAD_S = 0.5
# The filter learns the room from what is played: over its first seconds of playback the echo leaks
# through. Until it has heard this much, the end-pointer's stream is muted while something plays, so a
# leak is never taken for speech (again after the delay changed and the filter starts afresh).
LEARN_S = 2.5
PLAYING_DB = -60.0  # a reference frame above this is playback, not silence
# While something plays, a frame passes the gate only when it stands GATE_DB above the residual the
# filter has been leaving: the RESIDUAL_PERCENTILE of output level minus reference level over the last
# RESIDUAL_S of frames judged residual. A person talking over the reply passes; the reply's residual
# does not. GATE_DB and HOLD_S were chosen on scripts/echo_bench.py's rooms with seed 2026 (4.5 dB
# caught more than 6 dB with no self-interruption), reported on others (docs/performance.md, "Echo").
GATE_DB = 4.5
# A talker's words are not all loud: once HOLD_AFTER_FRAMES in a row stand above the residual (a
# syllable, not the filter's slip at a loud onset of the reply), the next HOLD_S pass too, so the
# end-pointer hears words, not islands of frames. The micro VAD says "speech" only after about 0.35 s
# of it, and an island of the user's first syllables 0.3 s long often was not enough: on seed 2026's
# rooms (40 replies, the loudspeaker 10 dB over the user) a 0.3 s hold caught 32 with the micro VAD,
# 0.6 s 36, 1 s 39, as many as the energy VAD; on seed 11's 34 of 40 with either VAD; in all four rows
# of both seeds no reply stopped itself. A hold after one frame let a later reply (the filter settled,
# its residual steady) stop itself 4 times in 20 with the energy VAD; after five, none.
HOLD_S = 1.0
HOLD_FRAMES = int(HOLD_S * 100)
HOLD_AFTER_FRAMES = 5
RESIDUAL_PERCENTILE = 95
ECHO_TAIL_S = 0.5  # a room rings on after the (delayed) reference falls quiet
SUPPRESS = 0.001  # -60 dB, not silence: the end-pointer's noise floor stays that of a room
# Tried and left: judging by the residual only after the filter's first 1.5 s (it leaves more while it
# learns) caught 4 more of 40 in a first reply with the echo 200 ms late, but after a relearn the gate
# then had 1 s of residual to judge by, and one reply in 50 stopped itself (echo_bench, seed 7).
RESIDUAL_S = 3.0
# The linear filter's length: the room's ringing it models once EchoDelay has taken the delay out.
# 128 ms heard names over a reply 10 dB louder than the user as well as 256 and 512 ms in
# echo_bench's rooms, for the least CPU.
LINEAR_TAIL_S = 0.128
DELAY_WINDOW_S = 1.0  # the echo's delay is found in this much of both streams (EchoDelay)
DELAY_EVERY_S = 0.5  # so two agreeing estimates take 1.5 s of playback
DELAY_AGREE = 32  # samples (2 ms): two estimates this close agree; a smaller change is not made
DELAY_MARGIN_S = 0.032  # the filter also models this much before the peak: early reflections, a misjudged peak
DELAY_CONFIDENCE = 8.0  # the correlation's peak over its spread (30-60 for a reply's echo): below, no estimate


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


class EchoDelay:
    """How far the echo lags the reference, for the linear filter, whose 128 ms reach a sound card's
    buffering can exceed (a microphone and a speaker on separate devices, each with its own buffers).
    GCC-PHAT over the last DELAY_WINDOW_S of both streams, every DELAY_EVERY_S while something plays;
    a new delay is taken when two estimates in a row agree. `delayed(far)` is the reference that
    many samples late, with DELAY_MARGIN_S left so the filter also sees a little before the peak."""

    def __init__(self, delay: int = 0) -> None:
        # samples: the echo's lag behind the reference, as last agreed (or as a session before agreed)
        self.delay = min(max(0, delay), int(MAX_LEAD_S * SAMPLE_RATE))
        self._candidate: int | None = None
        self._near: deque[np.ndarray] = deque(maxlen=int(DELAY_WINDOW_S * 100))
        self._playing = 0  # frames since the last estimate in which something played
        self._frames = 0
        # The reference, newest last: the window the delay is found in, and the frames `delayed` reaches back to.
        self._far = np.zeros(max(int(DELAY_WINDOW_S * SAMPLE_RATE), int(MAX_LEAD_S * SAMPLE_RATE) + FRAME), np.float32)

    @property
    def shift(self) -> int:
        return max(0, self.delay - int(DELAY_MARGIN_S * SAMPLE_RATE))

    def delayed(self, far: np.ndarray) -> np.ndarray:
        """`far` (one frame) into the history; out: the frame `shift` samples earlier."""
        self._far = np.concatenate([self._far[len(far) :], far])
        end = len(self._far) - self.shift
        return self._far[end - len(far) : end]

    def recent(self) -> tuple[np.ndarray, np.ndarray]:
        """The last DELAY_WINDOW_S of the microphone and of the reference as the filter hears it now."""
        near, far = np.concatenate(self._near), self._window()
        return near[self.shift :], far[: len(far) - self.shift]

    def add(self, near: np.ndarray, playing: bool) -> bool:
        """The microphone's frame heard with the reference frame last `delayed`; True when the
        reference's shift changed (the filter must relearn)."""
        self._near.append(near)
        self._playing += playing
        self._frames += 1
        if self._frames < DELAY_EVERY_S * 100:
            return False
        enough = self._playing >= self._frames // 2 and len(self._near) == self._near.maxlen
        self._frames = self._playing = 0
        if not enough:
            return False
        lag = _gcc_phat_lag(np.concatenate(self._near), self._window(), int(MAX_LEAD_S * SAMPLE_RATE))
        agreed = lag is not None and self._candidate is not None and abs(lag - self._candidate) <= DELAY_AGREE
        self._candidate = lag
        if not agreed or abs(lag - self.delay) <= DELAY_AGREE:
            return False
        shift, self.delay = self.shift, lag
        return self.shift != shift

    def _window(self) -> np.ndarray:
        return self._far[-int(DELAY_WINDOW_S * SAMPLE_RATE) :]


def _gcc_phat_lag(near: np.ndarray, far: np.ndarray, max_lag: int) -> int | None:
    """The lag (0..max_lag samples) at which `near` best matches `far` delayed, or None when no lag
    stands out (the reference was too quiet or the room too noisy to tell)."""
    size = 1 << int(np.ceil(np.log2(len(near) + max_lag)))
    cross = np.fft.rfft(near, size) * np.conj(np.fft.rfft(far, size))
    cc = np.fft.irfft(cross / (np.abs(cross) + 1e-9), size)[: max_lag + 1]
    lag = int(np.argmax(cc))
    return lag if cc[lag] > DELAY_CONFIDENCE * float(np.std(cc)) else None


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

    def learn(self, near: np.ndarray, far: np.ndarray) -> None:
        """Adapt to what was heard already (whole frames), the output unused."""
        for at in range(0, len(near) - FRAME + 1, FRAME):
            self.process(near[at : at + FRAME], far[at : at + FRAME])

    def process(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        out = self._aec.cancel_echo(_int16(near).tolist(), _int16(far).tolist())
        return np.asarray(out, np.float32) / 32768


class EchoCanceller:
    """The echo taken out of 16 kHz mono blocks of any length (a partial frame waits for the next
    block). `process` returns what the end-pointer hears: the linear filter's output, gated while
    something plays; `linear` is the filter's output of the last block, ungated (what the wake word
    hears). `delay`: where the echo was last found on these devices (echo_memory.py), if known;
    `on_delay` is told each delay found, from the thread that calls `process`."""

    def __init__(self, reference: EchoReference, delay: int = 0, on_delay: Callable[[int], None] | None = None):
        self.reference = reference
        self._linear = LinearCanceller()
        self.echo_delay = EchoDelay(delay)
        self._on_delay = on_delay
        self.linear = np.empty(0, np.float32)
        self._near = np.empty(0, np.float32)
        self._far = np.empty(0, np.float32)
        self.heard_playing_s = 0.0  # playback the filter has learnt from
        self._residual_db: deque[float] = deque(maxlen=int(RESIDUAL_S * 100))  # output minus reference, per frame
        self._recent_far_db: deque[float] = deque(maxlen=int(ECHO_TAIL_S * 100))  # the reference, per frame
        self._hold = 0  # frames still passed after one stood above the residual
        self._above = 0  # frames in a row that stood above it

    def process(self, block: np.ndarray) -> np.ndarray:
        self._near = np.concatenate([self._near, np.asarray(block, np.float32)])
        self._far = np.concatenate([self._far, self.reference.take(len(block))])
        whole = len(self._near) // FRAME * FRAME
        out, linear = np.empty(whole, np.float32), np.empty(whole, np.float32)
        for at in range(0, whole, FRAME):
            near, far = self._near[at : at + FRAME], self._far[at : at + FRAME]
            delayed = self.echo_delay.delayed(far)
            self._recent_far_db.append(_db(delayed))
            echo_from_db = max(self._recent_far_db)  # what may still ring in the room
            playing = echo_from_db > PLAYING_DB
            frame = self._linear.process(near, delayed)
            if self.echo_delay.add(near, playing):
                # The old filter modelled the old delay. A new one started mid-reply learnt slowly (5-8 dB
                # over the rest of an echo_bench reply, 20 when started with the reply); after it first
                # learns from the last second again, at the new delay, it reached 20 dB within 3 s.
                self._linear = LinearCanceller()
                self._linear.learn(*self.echo_delay.recent())
                self.heard_playing_s = 0.0
                if self._on_delay is not None:
                    self._on_delay(self.echo_delay.delay)
            linear[at : at + FRAME] = frame
            if playing:
                self.heard_playing_s += FRAME / SAMPLE_RATE
                above = _db(frame) - echo_from_db
                residual = self.heard_playing_s < LEARN_S or (
                    above < np.percentile(self._residual_db, RESIDUAL_PERCENTILE) + GATE_DB
                )
                self._above = 0 if residual else self._above + 1
                if residual:
                    self._residual_db.append(above)  # only what was judged residual: a talker's frames are not
                elif self._above >= HOLD_AFTER_FRAMES:
                    self._hold = HOLD_FRAMES
                if residual and self._hold == 0:
                    frame = frame * SUPPRESS  # the reply's residual (or the filter still learning the room)
                self._hold = max(0, self._hold - 1)
            else:
                self._hold = self._above = 0  # a hold from one reply never opens the next
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
