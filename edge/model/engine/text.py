"""Token bytes -> text, as it streams: UTF-8 split across tokens, and stop strings cut exactly.

Text that could be the start of a stop string is held back until it is clear that it is not, so a
stop string never reaches the caller, not even in part.
"""

from __future__ import annotations

import codecs


class TextStream:
    def __init__(self, stop: tuple[str, ...] | list[str] = ()):
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = tuple(s for s in stop if s)
        self._held = ""
        self.text = ""  # everything released so far
        self.stopped = False

    def push(self, data: bytes) -> str:
        """Add one token's bytes; return the text that can be released now ('' at or after a stop)."""
        if self.stopped:
            return ""
        self._held += self._decoder.decode(data)
        cut = min((i for i in (self._held.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            return self._release(len(self._held[:cut]), drop_rest=True)
        return self._release(len(self._held) - self._partial_stop_length())

    def flush(self) -> str:
        """The held-back text, once no more tokens are coming."""
        if self.stopped:
            return ""
        self._held += self._decoder.decode(b"", final=True)
        return self._release(len(self._held))

    def _release(self, n: int, *, drop_rest: bool = False) -> str:
        out, self._held = self._held[:n], ("" if drop_rest else self._held[n:])
        self.text += out
        return out

    def _partial_stop_length(self) -> int:
        """Length of the longest tail of the held text that begins some stop string."""
        best = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(self._held)), best, -1):
                if self._held.endswith(stop[:k]):
                    best = k
                    break
        return best
