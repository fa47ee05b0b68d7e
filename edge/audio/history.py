"""A bounded buffer of recent stream samples addressed by absolute sample index.

End-pointing decides that speech started a little after it did, so it keeps the last few hundred
milliseconds (the pre-roll) at all times and takes the clip's start from here: the first syllable
is kept. While a clip is open the buffer holds the clip (at most 30 s), and is trimmed after.
"""

from __future__ import annotations

import numpy as np


class SampleHistory:
    """Samples [start, end) of a stream, appended in order; older ones are dropped on request."""

    def __init__(self, capacity: int):
        self._buf = np.zeros(max(1, int(capacity)), dtype=np.float32)
        self._len = 0
        self.start = 0  # absolute index of the oldest sample held

    @property
    def end(self) -> int:
        """Absolute index one past the newest sample."""
        return self.start + self._len

    def append(self, samples: np.ndarray) -> None:
        n = len(samples)
        if self._len + n > len(self._buf):
            # Grow rather than lose audio: callers trim, so this only happens on odd block sizes.
            bigger = np.zeros(max(len(self._buf) * 2, self._len + n), dtype=np.float32)
            bigger[: self._len] = self._buf[: self._len]
            self._buf = bigger
        self._buf[self._len : self._len + n] = samples
        self._len += n

    def get(self, a: int, b: int) -> np.ndarray:
        """A copy of samples [a, b), clamped to what is held."""
        a, b = max(a, self.start), min(b, self.end)
        if b <= a:
            return np.zeros(0, dtype=np.float32)
        return self._buf[a - self.start : b - self.start].copy()

    def discard_before(self, index: int) -> None:
        drop = min(max(0, index - self.start), self._len)
        if drop:
            self._buf[: self._len - drop] = self._buf[drop : self._len]
            self._len -= drop
            self.start += drop
