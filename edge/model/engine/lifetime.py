"""When a model's native memory may be freed: only once nothing is using it.

Every call into llama.cpp or libmtmd on a model's memory runs inside `Lifetime.use()`. `close()`
first refuses new uses and asks running jobs to stop (decode loops read `closing` between tokens and
batches), then waits, without a timeout, until the last use has left, and only then frees. A slow
machine makes closing slower, never unsafe: a join with a timeout followed by a free is how a reply
ends up decoding on freed memory.

Uses nest (a prefill calls the decoder) and may come from any thread. A thread that is inside a
use must not close: that would wait for itself (close() refuses, naming the mistake).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from edge.errors import GenerationError


class ModelClosedError(GenerationError):
    """The model was closed (the program is stopping): the request in progress ends here."""


class Lifetime:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._users: dict[int, int] = {}  # thread id -> nesting depth
        self._closing = False
        self.closed = False

    @property
    def closing(self) -> bool:
        """Set once close() has begun: jobs stop at their next token or batch."""
        return self._closing

    @contextlib.contextmanager
    def use(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._closing and me not in self._users:
                raise ModelClosedError("the model was closed while this request was running; the program is stopping")
            self._users[me] = self._users.get(me, 0) + 1
        try:
            yield
        finally:
            with self._cond:
                self._users[me] -= 1
                if not self._users[me]:
                    del self._users[me]
                    self._cond.notify_all()

    def check(self) -> None:
        """Between steps of a long job: stop here if the model is closing."""
        if self._closing:
            raise ModelClosedError("the model was closed while this request was running; the program is stopping")

    def close(self, free: Callable[[], None]) -> None:
        """Stop new uses, wait for every running one to end (however long), then `free()` once.

        A Ctrl-C while waiting does not cut the wait short (that would free under a decode): it is
        raised once the memory is freed."""
        interrupted = False
        with self._cond:
            if threading.get_ident() in self._users:
                raise RuntimeError("a model cannot be closed from inside one of its own calls")
            self._closing = True
            while self._users:
                try:
                    self._cond.wait()
                except KeyboardInterrupt:
                    interrupted = True
            if self.closed:
                return
            self.closed = True
        free()
        if interrupted:
            raise KeyboardInterrupt
