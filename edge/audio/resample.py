"""Sample-rate conversion and channel mixing in numpy: a Kaiser-windowed-sinc polyphase resampler.

One implementation serves both whole buffers (`resample`) and live streams (`StreamResampler`, which
keeps the filter's history between blocks), so a microphone that only does 44.1 or 48 kHz and a file
at any rate go through the same filter. No scipy: the filter is ~60 lines and numpy is already here.
"""

from __future__ import annotations

from math import ceil, gcd

import numpy as np

from edge.audio_format import SAMPLE_RATE as TARGET_RATE  # what Gemma's audio encoder takes

# Filter design: 16 zero crossings each side and a Kaiser beta of 8.6 give ~80 dB of stopband;
# the cutoff sits at 90% of the lower Nyquist so the transition band stays out of the passband.
_ZERO_CROSSINGS = 16
_KAISER_BETA = 8.6
_ROLLOFF = 0.9
_CHUNK = 32_768  # outputs per vectorised step: bounds memory on long files


def to_mono(samples: np.ndarray) -> np.ndarray:
    """(frames,) or (frames, channels) of any numeric type -> float32 (frames,) by averaging channels."""
    x = np.asarray(samples)
    if x.ndim == 2:
        x = x.mean(axis=1, dtype=np.float64) if x.shape[1] > 1 else x[:, 0]
    elif x.ndim != 1:
        raise ValueError(f"expected (frames,) or (frames, channels), got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


def _design(up: int, down: int) -> np.ndarray:
    """Polyphase table C[phase, tap]: output n reads inputs i0-half+1 .. i0+half, i0 = n*down // up."""
    half = _ZERO_CROSSINGS * max(1, ceil(down / up))  # taps each side, in input samples
    cutoff = _ROLLOFF * 0.5 / max(up, down)  # cycles per sample at the upsampled rate
    phases = np.arange(up)[:, None]
    taps = np.arange(-half + 1, half + 1)[None, :]
    m = phases - taps * up  # distance, in upsampled samples, from each tap to the output point
    width = half * up
    window = np.i0(_KAISER_BETA * np.sqrt(np.clip(1.0 - (m / width) ** 2, 0.0, None))) / np.i0(_KAISER_BETA)
    table = 2.0 * cutoff * np.sinc(2.0 * cutoff * m) * window
    table /= table.sum(axis=1, keepdims=True)  # unity gain at DC for every phase
    return table.astype(np.float32)


class StreamResampler:
    """Resample a stream block by block; `process` returns what is ready, `flush` the tail."""

    def __init__(self, src_rate: int, dst_rate: int = TARGET_RATE):
        if src_rate <= 0 or dst_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {src_rate} -> {dst_rate}")
        g = gcd(int(src_rate), int(dst_rate))
        self.up, self.down = int(dst_rate) // g, int(src_rate) // g
        self.passthrough = self.up == self.down
        self._table = None if self.passthrough else _design(self.up, self.down)
        self._half = 0 if self.passthrough else self._table.shape[1] // 2
        # Input history with zeros before the first sample; _start is the absolute index of _buf[0].
        self._buf = np.zeros(max(self._half - 1, 0), dtype=np.float32)
        self._start = -len(self._buf)
        self._n_in = 0  # real input samples seen
        self._n_out = 0  # next output index

    def process(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        if self.passthrough:
            return block.copy()
        self._buf = np.concatenate([self._buf, block])
        self._n_in += len(block)
        last = self._start + len(self._buf) - 1  # last absolute input index available
        # Output n is ready once i0(n) + half <= last.
        n_end = ((last - self._half + 1) * self.up + self.down - 1) // self.down
        return self._emit(n_end)

    def flush(self) -> np.ndarray:
        """Emit the remaining outputs (zero-padding the future). Call once, at the end of the stream."""
        if self.passthrough:
            return np.zeros(0, dtype=np.float32)
        self._buf = np.concatenate([self._buf, np.zeros(self._half + 1, dtype=np.float32)])
        n_total = ceil(self._n_in * self.up / self.down)
        return self._emit(n_total)

    def _emit(self, n_end: int) -> np.ndarray:
        if n_end <= self._n_out:
            return np.zeros(0, dtype=np.float32)
        pieces = []
        offsets = np.arange(-self._half + 1, self._half + 1)
        for lo in range(self._n_out, n_end, _CHUNK):
            n = np.arange(lo, min(lo + _CHUNK, n_end), dtype=np.int64)
            pos = n * self.down
            i0, phase = pos // self.up, pos % self.up
            idx = (i0 - self._start)[:, None] + offsets[None, :]
            pieces.append(np.einsum("ij,ij->i", self._buf[idx], self._table[phase]))
        self._n_out = n_end
        # Drop input no future output will read.
        keep_from = (self._n_out * self.down) // self.up - self._half + 1 - self._start
        if keep_from > 0:
            self._buf = self._buf[keep_from:]
            self._start += keep_from
        return np.concatenate(pieces).astype(np.float32, copy=False)


def resample(samples: np.ndarray, src_rate: int, dst_rate: int = TARGET_RATE) -> np.ndarray:
    """Resample a whole mono float buffer; output length is ceil(len * dst / src)."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if src_rate == dst_rate:
        return x.copy()
    r = StreamResampler(src_rate, dst_rate)
    return np.concatenate([r.process(x), r.flush()])
