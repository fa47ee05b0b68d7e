"""Audio sinks: where spoken replies go. `SoundDeviceSink` plays through PortAudio, `NullSink` nowhere.

`play()` blocks until the device has taken the sound (so a TTS worker is paced by playback and
sentences follow each other without gaps), `drain()` until it has been heard; both return False
when `stop()` cut them short. `stop()` is safe from any thread and silences the device at once,
which is what barge-in needs.
"""

from __future__ import annotations

import collections
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from edge.audio.devices import AudioDevice, pick_stream_format, resolve_device, sounddevice
from edge.audio.resample import TARGET_RATE, StreamResampler, resample, to_mono
from edge.errors import AudioError

OnStart = Callable[[float], None]  # told the perf_counter time a play()'s first sample went out


class AudioSink(ABC):
    """Plays float32 mono audio. Use as a context manager; `stop()` may be called from any thread."""

    def open(self) -> None:
        """Acquire the output (default: nothing to acquire)."""

    def close(self) -> None:
        """Release the output (default: nothing to release)."""

    @abstractmethod
    def play(self, samples: np.ndarray, sample_rate: int = TARGET_RATE, on_start: OnStart | None = None) -> bool:
        """Play, returning once the device has taken it all; False if `stop()` cut it.

        Back-to-back calls play gaplessly; `drain()` waits until the last one has been heard.
        `on_start` is told the perf_counter time the first sample went to the device, as soon as it has
        (a long sentence is still playing then): voice turns time their first sound with it.
        """

    def drain(self) -> bool:
        """Wait until everything played so far has been heard; False if `stop()` cut it."""
        return True

    @property
    def output_latency_s(self) -> float:
        """How long a sample handed to the device takes to be heard (the stream's own buffering)."""
        return 0.0

    @abstractmethod
    def stop(self) -> None:
        """Cut what is playing now (later `play` calls work again)."""

    def __enter__(self) -> AudioSink:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NullSink(AudioSink):
    """Discards audio but remembers it (for tests and `--tts none` style dry runs).

    With `realtime=True` play() takes as long as the sound would, so barge-in can be exercised;
    `keep=False` forgets the audio (long runs, soak tests).
    """

    def __init__(self, realtime: bool = False, keep: bool = True):
        self.realtime, self.keep = realtime, keep
        self.played: list[np.ndarray] = []  # each play() call's audio, at 16 kHz (when keep)
        self.played_seconds = 0.0  # how much was actually "heard" (less than the total after a stop)
        self._stop = threading.Event()

    def play(self, samples: np.ndarray, sample_rate: int = TARGET_RATE, on_start: OnStart | None = None) -> bool:
        pcm = to_mono(samples)
        pcm = resample(pcm, sample_rate, TARGET_RATE) if sample_rate != TARGET_RATE else pcm
        self._stop.clear()
        if on_start is not None:
            on_start(time.perf_counter())
        if self.keep:
            self.played.append(pcm)
        duration = len(pcm) / TARGET_RATE
        if not self.realtime:
            self.played_seconds += duration
            return True
        t0 = time.monotonic()
        stopped = self._stop.wait(duration)
        self.played_seconds += min(duration, time.monotonic() - t0)
        return not stopped

    def stop(self) -> None:
        self._stop.set()


@dataclass(eq=False)  # identity comparison: deque.remove must not compare arrays
class _Item:
    pcm: np.ndarray  # (frames, channels) at the device rate
    pos: int = 0
    started_at: float | None = None  # perf_counter time its first sample went to the device
    done: threading.Event = field(default_factory=threading.Event)
    stopped: bool = False


class SoundDeviceSink(AudioSink):
    """Plays through a sounddevice OutputStream kept open between calls (no per-sentence open delay)."""

    def __init__(
        self,
        device: int | str | None = None,
        *,
        stream_block_s: float = 0.01,
        latency_s: float = 0.05,
        max_latency_s: float = 0.5,
        reference=None,
    ):
        """10 ms blocks and 50 ms of device buffering: the first word is heard ~60 ms after it is handed over.

        A device that cannot keep up (audio runs dry while a reply plays: the callback reports an
        underflow) gets twice the buffering at the next sentence, up to `max_latency_s`: the
        smallest latency this device sustains. (ALSA's PulseAudio plugin underran endlessly with
        50 ms blocks below 0.5 s while capture ran in the same process; 10 ms blocks at 50 ms
        did not, even with both cores busy.) `stop()` still cuts at once: it aborts the stream,
        which drops what the device buffers.
        `reference` (an echo.EchoReference) is handed every block the device plays, silence
        included: the echo canceller's far end.
        """
        self.device_spec = device
        self.reference = reference
        self._latency_s = latency_s
        self.device: AudioDevice | None = None
        self.device_rate = 0
        self.channels = 0
        self.underflows = 0
        self.max_latency_s = max_latency_s
        self._starved = 0  # underflows while our sound was playing, since the stream opened
        self._callbacks = 0
        self._stream_block_s = stream_block_s
        self._queue: collections.deque[_Item] = collections.deque()
        self._lock = threading.Lock()
        self._stops = 0  # bumped by stop(): lets drain() see the cut
        self._handed_over = 0.0  # when the device took the last queued sample
        self._stream = None

    def open(self) -> None:
        if self._stream is not None:
            return
        sd = sounddevice()
        self.device = resolve_device(self.device_spec, "output")
        self.device_rate, self.channels = pick_stream_format(sd, self.device, "output", TARGET_RATE)
        self._starved = 0
        try:
            self._stream = sd.OutputStream(
                device=self.device.index,
                samplerate=self.device_rate,
                channels=self.channels,
                dtype="float32",
                blocksize=max(1, int(self.device_rate * self._stream_block_s)),
                latency=max(self._latency_s, self._stream_block_s),
                callback=self._callback,
            )
            self._stream.start()
            self._settle()
        except Exception as e:  # PortAudioError: busy, vanished or refused device
            self._stream = None
            raise AudioError(f"cannot play on audio device {self.device.index} ({self.device.name}): {e}") from e

    def _settle(self, timeout: float = 2.0) -> None:
        """Wait until the device pulls audio at a steady pace before queueing any.

        ALSA's PulseAudio plugin underruns while a new stream starts; sound queued then was
        consumed in a burst and lost (seen with capture running in the same process).
        """
        deadline = time.monotonic() + timeout
        while self._callbacks < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(float(self._stream.latency))

    def _callback(self, outdata: np.ndarray, frames: int, time_info: object, status: object) -> None:
        self._callbacks += 1
        if status:
            self.underflows += 1
            if self._queue:
                self._starved += 1
        outdata.fill(0.0)
        filled = 0
        with self._lock:
            while filled < frames and self._queue:
                item = self._queue[0]
                n = min(frames - filled, len(item.pcm) - item.pos)
                if item.pos == 0:
                    item.started_at = time.perf_counter()
                outdata[filled : filled + n] = item.pcm[item.pos : item.pos + n]
                item.pos += n
                filled += n
                if item.pos >= len(item.pcm):
                    self._queue.popleft()
                    item.done.set()
        if self.reference is not None:
            self.reference.played(outdata[:, 0], self.device_rate)

    def play(self, samples: np.ndarray, sample_rate: int = TARGET_RATE, on_start: OnStart | None = None) -> bool:
        """Queue and wait until the device has taken the last sample (call `drain()` to hear it out)."""
        if self._stream is None:
            raise AudioError(
                "SoundDeviceSink is not open; use it as a context manager (with SoundDeviceSink() as sink)"
            )
        if self._starved >= 3 and self._latency_s < self.max_latency_s and not self._queue:
            # The device ran dry while speaking: give it more buffering from this sentence on.
            self._latency_s = min(2 * self._latency_s, self.max_latency_s)
            self.drain()  # the last sentence's end is still in the device buffer: let it be heard
            self._reopen()
        if not self._stream.active and not self._reopen():
            raise AudioError(
                f"the output device ({self.device.name if self.device else '?'}) is gone; "
                "the reply is shown as text until it comes back"
            )
        items = []
        for pcm in self._device_pieces(to_mono(samples), sample_rate):
            # Queued as soon as each piece is ready: the first sound does not wait for the whole
            # sentence to be resampled (~40 ms per 5 s of speech), and pieces play back to back.
            items.append(_Item(np.repeat(np.clip(pcm, -1.0, 1.0)[:, None], self.channels, axis=1)))
            with self._lock:
                self._queue.append(items[-1])
        if not items:
            return True
        first, last = items[0], items[-1]
        # Poll rather than block forever: a stream that dies must not hang the caller.
        deadline = time.monotonic() + sum(len(i.pcm) for i in items) / self.device_rate + 5.0
        announced = on_start is None
        # Short polls until the first sample is out (its time goes to on_start), then relaxed ones.
        while not last.done.wait(0.1 if announced else 0.005):
            if not announced and first.started_at is not None:
                on_start(first.started_at)
                announced = True
            if self._stream is None or not self._stream.active or time.monotonic() > deadline:
                for item in items:
                    self._discard(item)
                raise AudioError("audio output stopped while playing; check the output device")
        if not announced and first.started_at is not None:
            on_start(first.started_at)
        self._handed_over = time.monotonic()
        return not last.stopped

    def _device_pieces(self, pcm: np.ndarray, sample_rate: int, piece_s: float = 0.25) -> Iterator[np.ndarray]:
        """`pcm` at the device rate, in pieces of about `piece_s` (one when no resampling is needed)."""
        if sample_rate == self.device_rate:
            if len(pcm):
                yield pcm
            return
        resampler = StreamResampler(sample_rate, self.device_rate)
        step = max(1, int(sample_rate * piece_s))
        for at in range(0, len(pcm), step):
            if len(out := resampler.process(pcm[at : at + step])):
                yield out
        if len(tail := resampler.flush()):
            yield tail

    @property
    def output_latency_s(self) -> float:
        return float(getattr(self._stream, "latency", 0.0) or 0.0)

    def _reopen(self) -> bool:
        """PortAudio ended the stream (the device went away): open it again if it is back."""
        stream, self._stream = self._stream, None
        try:
            stream.close()
        except Exception:  # noqa: BLE001  (a stream whose device vanished may refuse even this)
            pass
        try:
            self.open()
        except AudioError:
            self._stream = stream  # keep the dead one so play() keeps saying why
            return False
        return True

    def drain(self) -> bool:
        """Wait until what the device buffers has been heard; False if `stop()` cut it."""
        stops = self._stops
        end = self._handed_over + float(getattr(self._stream, "latency", 0.0) or 0.0)
        while time.monotonic() < end and self._stops == stops:
            time.sleep(min(0.01, max(0.0, end - time.monotonic())))
        return self._stops == stops

    def _discard(self, item: _Item) -> None:
        with self._lock:
            if item in self._queue:
                self._queue.remove(item)

    def stop(self) -> None:
        with self._lock:
            self._stops += 1
            items = list(self._queue)
            self._queue.clear()
        for item in items:
            item.stopped = True
            item.done.set()
        self._handed_over = 0.0
        stream = self._stream
        # A deep device buffer would go on talking over the user: abort drops it. A shallow one
        # (the default 50 ms) plays out instead, because a restarted stream takes 0.2-0.4 s to pull
        # audio again (measured on PulseAudio), and that would delay the very next reply.
        if stream is not None and stream.active and self.output_latency_s > 0.15:
            try:  # drop the ~latency of sound the device still buffers, then carry on
                stream.abort()
                stream.start()
            except Exception:  # the device vanished; the next play() reports it
                pass

    def close(self) -> None:
        """Release the device after what it buffers has been heard (call `stop()` first to cut it)."""
        with self._lock:
            items = list(self._queue)
            self._queue.clear()
        for item in items:  # nobody may wait forever on a closed sink
            item.stopped = True
            item.done.set()
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()  # PortAudio plays out the device buffer first
                stream.close()
            except Exception:  # the device vanished; nothing left to release
                pass
