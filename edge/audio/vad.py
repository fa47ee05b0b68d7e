"""End-pointing: turn a 16 kHz stream into speech clips of at most 30 s, hands-free or push-to-talk.

The detector is energy-based with an adaptive noise floor (numpy only). Per 10 ms frame it measures
the energy in the speech band (200-4000 Hz). The noise floor is the minimum
of that energy over the last 1.5 s ("minimum statistics"): speech always has short dips, steady noise
does not, so the floor follows fans and hiss but not a talker. A frame is speech when it is
`threshold_db` above the floor. A clip starts after `min_speech_s` of speech (starting
`pre_roll_s` earlier, so the first syllable is kept) and ends after `trailing_silence_s` without.
A clip whose level barely moves is steady sound (a fan switching on), not speech: it is dropped.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edge.audio.capture import AudioSource
from edge.audio.history import SampleHistory
from edge.audio.resample import TARGET_RATE
from edge.audio_format import MAX_CLIP_SECONDS
from edge.errors import AudioError

FRAME = 160  # 10 ms at 16 kHz
_FLOOR_WINDOW = 150  # frames (1.5 s) the noise floor is the minimum over
_SILENCE_DB = -100.0  # energy of digital silence, so log(0) never appears

ClipReason = Literal["pause", "max_length", "end_of_stream", "push_to_talk"]


@dataclass(frozen=True, eq=False)
class Clip:
    """One utterance. Times are seconds from the start of the stream; pcm spans [start_s, end_s)."""

    pcm: np.ndarray  # float32 mono 16 kHz in [-1, 1]
    start_s: float  # includes the pre-roll
    end_s: float  # includes a short tail after the last speech
    speech_start_s: float  # where the detector heard speech begin
    speech_end_s: float  # where it heard speech end
    endpoint_delay_s: float  # stream time from speech end until the clip was closed
    peak: float  # max |sample| before limiting to [-1, 1]
    clipped: bool  # the input hit full scale: too loud, the model may hear distortion
    reason: ClipReason
    sample_rate: int = TARGET_RATE

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / self.sample_rate


@dataclass(frozen=True)
class EndpointConfig:
    pre_roll_s: float = 0.3
    trailing_silence_s: float = 0.7
    max_seconds: float = MAX_CLIP_SECONDS  # may be lowered, never raised above 30 s
    min_speech_s: float = 0.1  # shorter blips (clicks, a cough's edge) start nothing
    threshold_db: float = 9.0  # speech is this far above the noise floor
    min_level_dbfs: float = -55.0  # never speech below this (digital silence, faint hiss)
    tail_s: float = 0.2  # kept after the last speech frame: soft endings stay audible
    cut_search_s: float = 3.0  # over-long speech is cut at the quietest point this close to the cap
    min_modulation_db: float = 6.0  # speech level varies at least this much (p90 - p10 of frames)
    # What decides speech from non-speech frame by frame: "energy" (level over the adaptive noise
    # floor) or "micro": the same level test AND Home Assistant's trained micro VAD (pymicro-vad)
    # agreeing, so music and steady noise start and hold nothing; the end-pointing rules around
    # both are the same. scripts/vad_compare.py measures one against the other.
    detector: str = "energy"

    @property
    def reach_back_s(self) -> float:
        """How far before the detected start a clip begins: the micro VAD decides ~0.3 s late."""
        return self.pre_roll_s + (_MicroVad.LAG_S if self.detector == "micro" else 0.0)

    def __post_init__(self) -> None:
        check_max_seconds(self.max_seconds)
        for name in ("pre_roll_s", "trailing_silence_s", "min_speech_s", "tail_s", "cut_search_s"):
            if getattr(self, name) < 0:
                raise AudioError(f"{name} must be >= 0 seconds, got {getattr(self, name)}")
        if self.trailing_silence_s < 0.05:
            raise AudioError("trailing_silence_s must be at least 0.05 s, or every pause ends a clip")
        if self.detector not in ("energy", "micro"):
            raise AudioError(f"detector must be energy or micro, not {self.detector!r}")
        if self.pre_roll_s >= self.max_seconds:
            raise AudioError(f"pre_roll_s ({self.pre_roll_s}) must be shorter than max_seconds ({self.max_seconds})")


def check_max_seconds(max_seconds: float) -> float:
    if not (0 < max_seconds <= MAX_CLIP_SECONDS):
        raise AudioError(
            f"max_seconds={max_seconds:g} is not allowed: clips must be longer than 0 and at most "
            f"{MAX_CLIP_SECONDS:g} s, the longest audio Gemma's encoder was trained on"
        )
    return float(max_seconds)


def _s(samples: int) -> float:
    return samples / TARGET_RATE


def _frames(seconds: float) -> int:
    return int(round(seconds * TARGET_RATE / FRAME))


class _FrameMeter:
    """Cuts a stream into 10 ms frames and measures each frame's speech-band energy in dBFS.

    Only 200-4000 Hz counts: it holds most speech energy and leaves out DC, mains hum and rumble
    below and hiss above, which raises the speech-to-noise ratio the threshold sees.
    """

    _WINDOW = np.hanning(FRAME).astype(np.float32)
    _BAND = slice(2, 41)  # rfft bins of a 160-sample frame are 100 Hz apart: 200..4000 Hz
    # Scale so a full-scale in-band sine reads about 0 dBFS, like a plain RMS would.
    _SCALE = 2.0 / (np.sum(np.hanning(FRAME)) ** 2)

    def __init__(self) -> None:
        self._carry = np.zeros(0, dtype=np.float32)
        self.frames = 0  # frames measured so far; frame i covers samples [i*FRAME, (i+1)*FRAME)

    def feed(self, pcm: np.ndarray) -> np.ndarray:
        x = np.concatenate([self._carry, pcm])
        n = len(x) // FRAME
        self._carry = x[n * FRAME :]
        if n == 0:
            return np.zeros(0)
        spectrum = np.fft.rfft(x[: n * FRAME].reshape(n, FRAME) * self._WINDOW, axis=1)
        power = np.sum(np.abs(spectrum[:, self._BAND]) ** 2, axis=1) * self._SCALE
        self.frames += n
        return np.maximum(10.0 * np.log10(power + 1e-30), _SILENCE_DB)


class _MicroVad:
    """pymicro-vad's speech probability for each 10 ms frame, aligned with _FrameMeter's frames."""

    ON, HOLD = 0.5, 0.3  # probability that starts speech, and that keeps it going (hysteresis)
    LAG_S = 0.3  # its decisions trail the sound by about this much (scripts/vad_compare.py)

    def __init__(self) -> None:
        try:
            from pymicro_vad import MicroVad
        except ImportError as exc:
            raise AudioError("the micro VAD needs pymicro-vad: pip install 'edge-gemma[voice]'") from exc
        self._vad = MicroVad()
        self._carry = np.zeros(0, dtype=np.int16)

    def feed(self, pcm: np.ndarray) -> list[float]:
        x = np.concatenate([self._carry, (np.clip(pcm, -1, 1) * 32767).astype(np.int16)])
        n = len(x) // FRAME
        self._carry = x[n * FRAME :]
        return [max(0.0, self._vad.process_10ms(x[k * FRAME : (k + 1) * FRAME].tobytes())) for k in range(n)]


def _clean(block: np.ndarray) -> np.ndarray:
    """Float32 1-D with NaN/inf replaced: a glitching driver must not crash the loop."""
    x = np.asarray(block, dtype=np.float32).reshape(-1)
    if not np.all(np.isfinite(x)):
        x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    return x


def _make_clip(raw: np.ndarray, start: int, speech: tuple[int, int], closed_at: int, reason: ClipReason) -> Clip:
    peak = float(np.max(np.abs(raw))) if raw.size else 0.0
    # Full scale for int16 sources is 32767/32768; a few such samples mean the input was clipped.
    clipped = int(np.count_nonzero(np.abs(raw) >= 0.999)) >= 3 or peak > 1.0
    return Clip(
        pcm=np.clip(raw, -1.0, 1.0).astype(np.float32, copy=False),
        start_s=_s(start),
        end_s=_s(start + len(raw)),
        speech_start_s=_s(speech[0]),
        speech_end_s=_s(speech[1]),
        endpoint_delay_s=max(0.0, _s(closed_at - speech[1])),
        peak=peak,
        clipped=clipped,
        reason=reason,
    )


def _quietest_cut(energy: dict[int, float], lo: int, hi: int) -> int:
    """Frame index in [lo, hi) whose ~100 ms neighbourhood is quietest (where a cut hurts least)."""
    idx = np.arange(lo, hi)
    levels = np.array([energy.get(int(i), _SILENCE_DB) for i in idx])
    power = 10.0 ** (levels / 10.0)
    smooth = np.convolve(power, np.ones(9) / 9.0, mode="same")
    return int(idx[int(np.argmin(smooth))])


@dataclass
class _Open:
    """The clip being recorded."""

    start: int  # first sample (absolute), pre-roll included
    speech_start: int  # first sample the detector called speech
    last_speech_frame: int


class Endpointer:
    """Feed 16 kHz blocks of any size; get finished `Clip`s back. `flush()` at end of stream."""

    def __init__(self, config: EndpointConfig | None = None):
        self.config = config or EndpointConfig()
        self._reset()

    def _reset(self) -> None:
        c = self.config
        self._meter = _FrameMeter()
        self._vad = _MicroVad() if c.detector == "micro" else None
        self._history = SampleHistory(int((c.max_seconds + c.reach_back_s + 2.0) * TARGET_RATE))
        self._recent: collections.deque[float] = collections.deque(maxlen=_FLOOR_WINDOW)
        self._energy: dict[int, float] = {}  # frame -> dB, for frames of the open clip
        self._candidate: tuple[int, int, int] | None = None  # (first frame, speech frames, last speech frame)
        self._open: _Open | None = None
        self.noise_floor_db = _SILENCE_DB

    @property
    def in_speech(self) -> bool:
        return self._open is not None

    @property
    def position_s(self) -> float:
        return _s(self._history.end)

    @property
    def silence_s(self) -> float:
        """How long the clip in progress has been quiet (0 while speech goes on or no clip is open)."""
        if self._open is None:
            return 0.0
        return max(0.0, (self._meter.frames - 1 - self._open.last_speech_frame) * FRAME / TARGET_RATE)

    @property
    def last_speech_s(self) -> float | None:
        """Stream time where the speech of the clip in progress last ended (None: no clip open)."""
        return None if self._open is None else _s((self._open.last_speech_frame + 1) * FRAME)

    def snapshot(self) -> Clip | None:
        """The clip in progress as it would be if the pause going on now ended it, without ending it.

        For starting a reply before the end-pointing silence is complete: if no more speech comes,
        the clip `feed()` closes later is this one (same start, speech end and samples).
        None when no clip is open or it is steady sound, not speech.
        """
        if self._open is None:
            return None
        return self._clip_of_open(self._open.last_speech_frame + 1, self._history.end, "pause")

    def feed(self, block: np.ndarray) -> list[Clip]:
        pcm = _clean(block)
        self._history.append(pcm)
        first = self._meter.frames
        clips: list[Clip] = []
        levels = self._meter.feed(pcm)
        probabilities = self._vad.feed(pcm) if self._vad is not None else [None] * len(levels)
        for k, (level, probability) in enumerate(zip(levels, probabilities)):
            clip = self._step(first + k, float(level), probability)
            if clip is not None:
                clips.append(clip)
        if self._open is None:  # while idle keep only what a clip starting now could reach back to
            since = self._candidate[0] if self._candidate else self._meter.frames
            self._history.discard_before(since * FRAME - int(self.config.reach_back_s * TARGET_RATE))
        return clips

    def flush(self) -> list[Clip]:
        """End of stream: close the clip in progress (if any) and start over."""
        clip = None
        if self._open is not None:
            end_frame = self._open.last_speech_frame + 1
            clip = self._close(end_frame, self._history.end, "end_of_stream")
        self._reset()
        return [clip] if clip is not None else []

    def _step(self, i: int, level: float, probability: float | None = None) -> Clip | None:
        c = self.config
        self._recent.append(level)
        floor = min(self._recent)
        self.noise_floor_db = floor
        threshold = max(floor + c.threshold_db, c.min_level_dbfs)
        if self._open is None:
            speech = level > threshold and (probability is None or probability >= _MicroVad.ON)
            return self._idle(i, speech)
        self._energy[i] = level
        # Hysteresis: once talking, a slightly lower level (and probability) still counts as speech.
        if level > threshold - 3.0 and (probability is None or probability >= _MicroVad.HOLD):
            self._open.last_speech_frame = i
        now = (i + 1) * FRAME
        if i - self._open.last_speech_frame >= _frames(c.trailing_silence_s):
            return self._close(self._open.last_speech_frame + 1, now, "pause")
        if now - self._open.start >= int(c.max_seconds * TARGET_RATE):
            return self._cut_at_cap(i, now)
        return None

    def _idle(self, i: int, speech: bool) -> None:
        c = self.config
        if not speech:
            if self._candidate and i - self._candidate[2] > _frames(0.1):
                self._candidate = None  # a blip, not the start of speech
            return None
        first, count, _ = self._candidate or (i, 0, i)
        self._candidate = (first, count + 1, i)
        if count + 1 >= max(1, _frames(c.min_speech_s)):
            speech_start = first * FRAME
            start = max(speech_start - int(c.reach_back_s * TARGET_RATE), self._history.start, 0)
            self._open = _Open(start=start, speech_start=speech_start, last_speech_frame=i)
            # Levels of the frames already heard (the candidate's), for the modulation check.
            self._energy = {f: lv for f, lv in zip(range(i + 1 - len(self._recent), i + 1), self._recent)}
            self._candidate = None
        return None

    def _close(self, end_frame: int, closed_at: int, reason: ClipReason) -> Clip | None:
        clip = self._clip_of_open(end_frame, closed_at, reason)
        self._open, self._energy = None, {}
        return clip

    def _clip_of_open(self, end_frame: int, closed_at: int, reason: ClipReason) -> Clip | None:
        c, o = self.config, self._open
        assert o is not None
        speech_end = end_frame * FRAME
        end = min(
            speech_end + int(c.tail_s * TARGET_RATE), self._history.end, o.start + int(c.max_seconds * TARGET_RATE)
        )
        raw = self._history.get(o.start, end)
        levels = [self._energy[f] for f in range(o.speech_start // FRAME, end_frame) if f in self._energy]
        if len(levels) >= 2 and np.percentile(levels, 90) - np.percentile(levels, 10) < c.min_modulation_db:
            return None  # steady sound (a fan, a hum that just started): not speech
        return _make_clip(raw, o.start, (o.speech_start, speech_end), closed_at, reason)

    def _cut_at_cap(self, i: int, now: int) -> Clip:
        c, o = self.config, self._open
        assert o is not None
        cap_frame = (o.start + int(c.max_seconds * TARGET_RATE)) // FRAME
        lo = max(o.speech_start // FRAME + 1, cap_frame - _frames(c.cut_search_s))
        cut = _quietest_cut(self._energy, lo, cap_frame) * FRAME if lo < cap_frame else cap_frame * FRAME
        raw = self._history.get(o.start, cut)
        clip = _make_clip(raw, o.start, (o.speech_start, cut), now, "max_length")
        # The rest continues as the next clip, still in speech.
        self._open = _Open(start=cut, speech_start=cut, last_speech_frame=max(o.last_speech_frame, cut // FRAME))
        self._energy = {f: lv for f, lv in self._energy.items() if f >= cut // FRAME}
        self._history.discard_before(cut)
        return clip


def trim_silence(
    clip: Clip, *, margin_s: float = 0.06, below_peak_db: float = 45.0, first: int | None = None
) -> np.ndarray:
    """The clip's samples without the quiet pre-roll and tail: what the model needs to hear.

    Every second sent becomes 25 audio tokens to prefill, so the silence the end-pointer keeps
    around speech (0.3 s before, 0.2 s after, for safety) is cut back to `margin_s` beyond the
    first and last frame within `below_peak_db` of the loudest (and clearly above the clip's
    quietest frames). Only the edges are trimmed, and never into what the detector called speech.
    `first`: keep the clip from this sample (a start fixed while the clip was still growing).
    """
    start, end = speech_span(clip, margin_s=margin_s, below_peak_db=below_peak_db)
    return clip.pcm[start if first is None else first : end]


def speech_span(clip: Clip, *, margin_s: float = 0.06, below_peak_db: float = 45.0) -> tuple[int, int]:
    """The samples [first, last) of `clip` that trim_silence keeps."""
    pcm, frame = clip.pcm, FRAME
    n = len(pcm) // frame
    if n < 3:
        return 0, len(pcm)
    levels = 10.0 * np.log10(np.mean(pcm[: n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1) + 1e-12)
    threshold = max(levels.max() - below_peak_db, np.percentile(levels, 5) + 6.0)
    active = np.nonzero(levels > threshold)[0]
    if active.size == 0:
        return 0, len(pcm)
    margin = int(margin_s * TARGET_RATE)
    speech_start = int(round((clip.speech_start_s - clip.start_s) * TARGET_RATE))
    speech_end = int(round((clip.speech_end_s - clip.start_s) * TARGET_RATE))
    first = max(0, min(active[0] * frame - margin, speech_start - margin))
    last = min(len(pcm), max((active[-1] + 1) * frame + margin, speech_end + margin))
    return first, last


def iter_clips(
    source: AudioSource, endpointer: Endpointer | None = None, *, timeout: float | None = 0.5
) -> Iterator[Clip]:
    """Clips from an open source until it ends (the voice loop's listening half)."""
    ep = endpointer or Endpointer()
    for block in source.blocks(timeout):
        yield from ep.feed(block)
    yield from ep.flush()


def segment(pcm: np.ndarray, config: EndpointConfig | None = None, *, block: int = 480) -> list[Clip]:
    """End-point a whole 16 kHz buffer at once (files, scripts, tests)."""
    ep = Endpointer(config)
    x = _clean(pcm)
    clips = [clip for k in range(0, len(x), block) for clip in ep.feed(x[k : k + block])]
    return clips + ep.flush()


class PushToTalk:
    """The caller marks start and stop (a key, a button); feed every block, pressed or not.

    The clip reaches `pre_roll_s` back from `start()` (people start talking as they press) and
    obeys the same 30 s cap as hands-free clips, cut at the quietest point near the cap.
    """

    def __init__(self, *, pre_roll_s: float = 0.3, max_seconds: float = MAX_CLIP_SECONDS, cut_search_s: float = 3.0):
        self.max_seconds = check_max_seconds(max_seconds)
        if pre_roll_s < 0 or pre_roll_s >= self.max_seconds:
            raise AudioError(f"pre_roll_s must be in [0, max_seconds), got {pre_roll_s}")
        self.pre_roll_s, self.cut_search_s = pre_roll_s, cut_search_s
        self._meter = _FrameMeter()
        self._history = SampleHistory(int((self.max_seconds + pre_roll_s + 2.0) * TARGET_RATE))
        self._energy: dict[int, float] = {}
        self._start: int | None = None

    @property
    def recording(self) -> bool:
        return self._start is not None

    @property
    def position_s(self) -> float:
        return _s(self._history.end)

    def start(self) -> None:
        if self._start is None:
            self._start = max(self._history.start, self._history.end - int(self.pre_roll_s * TARGET_RATE))

    def feed(self, block: np.ndarray) -> list[Clip]:
        pcm = _clean(block)
        self._history.append(pcm)
        first = self._meter.frames
        levels = self._meter.feed(pcm)
        if self._start is None:
            self._history.discard_before(self._history.end - int(self.pre_roll_s * TARGET_RATE) - FRAME)
            return []
        self._energy.update({first + k: float(v) for k, v in enumerate(levels)})
        cap = self._start + int(self.max_seconds * TARGET_RATE)
        clips = []
        while self._history.end >= cap:
            cap_frame = cap // FRAME
            lo = max(self._start // FRAME + 1, cap_frame - _frames(self.cut_search_s))
            cut = _quietest_cut(self._energy, lo, cap_frame) * FRAME if lo < cap_frame else cap
            raw = self._history.get(self._start, cut)
            clips.append(_make_clip(raw, self._start, (self._start, cut), self._history.end, "max_length"))
            self._start = cut
            self._history.discard_before(cut)
            self._energy = {f: v for f, v in self._energy.items() if f >= cut // FRAME}
            cap = cut + int(self.max_seconds * TARGET_RATE)
        return clips

    def stop(self) -> Clip | None:
        """End the recording; None if under 0.1 s was captured (a tap, not a question)."""
        start, self._start = self._start, None
        self._energy = {}
        if start is None or self._history.end - start < TARGET_RATE // 10:
            return None
        end = self._history.end
        raw = self._history.get(start, end)
        return _make_clip(raw, start, (start, end), end, "push_to_talk")
