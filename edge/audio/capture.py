"""Audio sources: fixed-size float32 16 kHz mono blocks from a microphone, an array or a file.

The voice loop only sees `AudioSource` (a context manager with `read(timeout)`), so a microphone, a
file or a test signal can stand behind it. `MicrophoneSource` keeps PortAudio's real-time callback
trivial (it only enqueues what it is given); a worker thread mixes to mono, resamples when the
device cannot do 16 kHz, cuts fixed-size blocks and keeps them in a bounded ring, dropping the
oldest if the reader falls behind so memory stays flat and the newest audio wins.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from edge.audio.devices import AudioDevice, pick_stream_format, resolve_device, sounddevice
from edge.audio.files import DEFAULT_MAX_SECONDS, load_audio
from edge.audio.resample import TARGET_RATE, StreamResampler, resample, to_mono
from edge.errors import AudioError

BLOCK_SIZE = 480  # 30 ms at 16 kHz: fine enough for end-pointing, coarse enough to be cheap


class AudioSource(ABC):
    """Yields float32 mono blocks of `block_size` samples at 16 kHz. Use as a context manager."""

    sample_rate = TARGET_RATE

    def __init__(self, block_size: int = BLOCK_SIZE):
        if block_size <= 0:
            raise AudioError(f"block_size must be a positive number of samples, got {block_size}")
        self.block_size = int(block_size)

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def read(self, timeout: float | None = None) -> np.ndarray | None:
        """The next block, or None when none arrived within `timeout` or the source has ended."""

    @property
    @abstractmethod
    def ended(self) -> bool:
        """True once no more blocks will come (file exhausted, stream closed or lost)."""

    @property
    def live(self) -> bool:
        """True when blocks arrive at speaking pace (a microphone, a paced file), so the listener
        keeps talking while a reply is made; False when they come as fast as they are read."""
        return False

    @property
    def latency_s(self) -> float:
        """How long ago a block's last sample was spoken when the block is read (input buffering)."""
        return 0.0

    def blocks(self, timeout: float | None = 0.5) -> Iterator[np.ndarray]:
        """Every block until the source ends (for a microphone: until closed from another thread)."""
        while True:
            block = self.read(timeout)
            if block is not None:
                yield block
            elif self.ended:
                return

    def __enter__(self) -> AudioSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ArraySource(AudioSource):
    """Blocks from a numpy array (any rate; resampled to 16 kHz). The last block is zero-padded.

    With `realtime=True` each block is released at the pace a microphone would deliver it.
    """

    def __init__(
        self,
        samples: np.ndarray,
        sample_rate: int = TARGET_RATE,
        *,
        block_size: int = BLOCK_SIZE,
        realtime: bool = False,
    ):
        super().__init__(block_size)
        pcm = to_mono(samples)
        self._pcm = resample(pcm, sample_rate, TARGET_RATE) if sample_rate != TARGET_RATE else pcm
        self._pos = 0
        self._realtime = realtime
        self._t0: float | None = None

    @property
    def duration_s(self) -> float:
        return len(self._pcm) / TARGET_RATE

    @property
    def live(self) -> bool:
        return self._realtime

    def open(self) -> None:
        self._pos = 0
        self._t0 = time.monotonic()

    def close(self) -> None:
        self._pos = len(self._pcm)

    @property
    def ended(self) -> bool:
        return self._pos >= len(self._pcm)

    def read(self, timeout: float | None = None) -> np.ndarray | None:
        if self.ended:
            return None
        if self._realtime:
            t0 = self._t0 if self._t0 is not None else time.monotonic()
            self._t0 = t0
            wait = t0 + (self._pos + self.block_size) / TARGET_RATE - time.monotonic()
            if timeout is not None and wait > timeout:
                time.sleep(max(timeout, 0.0))
                return None
            if wait > 0:
                time.sleep(wait)
        block = np.zeros(self.block_size, dtype=np.float32)
        chunk = self._pcm[self._pos : self._pos + self.block_size]
        block[: len(chunk)] = chunk
        self._pos += self.block_size
        return block


class FileSource(ArraySource):
    """Blocks from an audio file (WAV/FLAC/MP3, any rate or channel count)."""

    def __init__(
        self,
        path: str | Path,
        *,
        block_size: int = BLOCK_SIZE,
        realtime: bool = False,
        max_seconds: float = DEFAULT_MAX_SECONDS,
    ):
        super().__init__(load_audio(path, max_seconds=max_seconds), block_size=block_size, realtime=realtime)
        self.path = Path(path)


class MicrophoneSource(AudioSource):
    """Live capture through sounddevice. `device` is an index, a (fragment of a) name, or None."""

    def __init__(
        self,
        device: int | str | None = None,
        *,
        block_size: int = BLOCK_SIZE,
        device_rate: int | None = None,
        buffer_seconds: float = 10.0,
        stream_block_s: float = 0.05,
        latency_s: float = 0.2,
    ):
        """`device_rate` forces the capture rate (else 16 kHz when the device can, its own rate if not).

        PortAudio's ALSA->PulseAudio path silently loses samples with periods under ~25 ms or a
        buffer under ~0.1 s on a busy machine: hence 50 ms blocks and 200 ms of device buffering
        (it only bounds the worst case; blocks still arrive every 50 ms).
        """
        super().__init__(block_size)
        self.device_spec = device
        self.requested_rate = device_rate
        self.device: AudioDevice | None = None
        self.device_rate = 0
        self.channels = 0
        self.dropped_blocks = 0  # blocks thrown away because the reader fell behind
        self.overflows = 0  # times PortAudio reported lost input
        self._stream_block_s = stream_block_s
        self._latency_s = latency_s
        self._ring: collections.deque[np.ndarray] = collections.deque(
            maxlen=max(1, int(buffer_seconds * TARGET_RATE / block_size))
        )
        self._ready = threading.Condition()
        self._raw: queue.SimpleQueue[np.ndarray | None] = queue.SimpleQueue()
        self._stream = None
        self._worker: threading.Thread | None = None
        self._resampler: StreamResampler | None = None
        self._pending = np.zeros(0, dtype=np.float32)  # resampled audio short of a whole block
        self._ended = threading.Event()
        self._ended.set()  # not open: nothing will come
        self._error: str | None = None
        self._closing = False
        self.lost = False  # the stream ended without close(): the device went away
        self.samples_captured = 0

    @property
    def ended(self) -> bool:
        return self._ended.is_set() and not self._ring

    @property
    def live(self) -> bool:
        return True

    @property
    def latency_s(self) -> float:
        # PortAudio's input latency, plus the partly filled device block a sample waits in.
        stream = self._stream
        return float(getattr(stream, "latency", 0.0) or 0.0) + self._stream_block_s / 2 if stream else 0.0

    @property
    def position_s(self) -> float:
        """Seconds of 16 kHz audio produced so far (the time base of the endpointer's clips)."""
        return self.samples_captured / TARGET_RATE

    def open(self) -> None:
        if self._stream is not None:
            return
        sd = sounddevice()
        self.device = resolve_device(self.device_spec, "input")
        self.device_rate, self.channels = pick_stream_format(
            sd, self.device, "input", self.requested_rate or TARGET_RATE
        )
        self._resampler = StreamResampler(self.device_rate, TARGET_RATE)
        self._pending = np.zeros(0, dtype=np.float32)
        self._raw = queue.SimpleQueue()  # fresh: a stale end marker would stop the new worker
        self._ring.clear()
        self.samples_captured = 0
        self._error = None
        self._closing, self.lost = False, False
        self._ended.clear()
        self._worker = threading.Thread(target=self._work, name="edge-audio-capture", daemon=True)
        self._worker.start()
        try:
            self._stream = sd.InputStream(
                device=self.device.index,
                samplerate=self.device_rate,
                channels=self.channels,
                dtype="float32",
                blocksize=max(1, int(self.device_rate * self._stream_block_s)),
                latency=max(self._latency_s, 2 * self._stream_block_s),
                callback=self._callback,
                finished_callback=self._finished,
            )
            self._stream.start()
        except Exception as e:  # PortAudioError, or the device vanished between listing and opening
            self._raw.put(None)
            self._worker.join()
            self._stream = None
            raise AudioError(f"cannot record from audio device {self.device.index} ({self.device.name}): {e}") from e

    def _callback(self, indata: np.ndarray, frames: int, time_info: object, status: object) -> None:
        # Real-time thread: copy and hand off, nothing else (no allocation-heavy work, no locks).
        if status:
            self.overflows += 1
        self._raw.put(indata.copy())

    def _finished(self) -> None:
        if not self._closing:
            self.lost = True  # PortAudio ended the stream by itself: the device is gone
        self._raw.put(None)

    def _work(self) -> None:
        try:
            while True:
                frames = self._raw.get()
                if frames is None:
                    break
                mono = to_mono(frames)
                self._pending = np.concatenate([self._pending, self._resampler.process(mono)])
                n = len(self._pending) // self.block_size
                if n:
                    blocks = self._pending[: n * self.block_size].reshape(n, self.block_size)
                    self._pending = self._pending[n * self.block_size :]
                    with self._ready:
                        for b in blocks:
                            if len(self._ring) == self._ring.maxlen:
                                self.dropped_blocks += 1
                            self._ring.append(b.copy())
                            self.samples_captured += self.block_size
                        self._ready.notify_all()
        except Exception as e:  # never die silently: read() reports it
            self._error = f"audio capture worker failed: {e}"
        finally:
            with self._ready:
                self._ended.set()
                self._ready.notify_all()

    def read(self, timeout: float | None = None) -> np.ndarray | None:
        with self._ready:
            if not self._ring and not self._ended.is_set():
                self._ready.wait_for(lambda: self._ring or self._ended.is_set(), timeout)
            if self._ring:
                return self._ring.popleft()
        if self._error:
            raise AudioError(self._error)
        return None

    def drain(self) -> int:
        """Throw away buffered blocks (e.g. our own TTS echo after speaking); returns how many."""
        with self._ready:
            n = len(self._ring)
            self._ring.clear()
            return n

    def close(self) -> None:
        self._closing = True
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()
                stream.close()
            except Exception:  # closing a stream whose device vanished: nothing left to release
                pass
        if self._worker is not None:
            self._raw.put(None)
            self._worker.join(timeout=5)
            self._worker = None
        self._ended.set()


class FilteredSource(AudioSource):
    """A live source whose blocks go through `process` (noise cleanup, echo cancellation) on the way
    out; everything else is the source's own. `added_latency_s`: what the processing holds back."""

    def __init__(self, source: AudioSource, process: Callable[[np.ndarray], np.ndarray], added_latency_s: float = 0.0):
        super().__init__(source.block_size)
        self.source, self.process, self.added_latency_s = source, process, added_latency_s

    def open(self) -> None:
        self.source.open()

    def close(self) -> None:
        self.source.close()

    def read(self, timeout: float | None = None) -> np.ndarray | None:
        block = self.source.read(timeout)
        return None if block is None else self.process(block)

    @property
    def ended(self) -> bool:
        return self.source.ended

    @property
    def live(self) -> bool:
        return self.source.live

    @property
    def latency_s(self) -> float:
        return self.source.latency_s + self.added_latency_s

    def drain(self) -> None:
        if hasattr(self.source, "drain"):
            self.source.drain()
