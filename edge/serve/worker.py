"""One model, one worker: every request that needs the model runs on this thread, in order.

A llama context and libmtmd are not thread-safe, so the HTTP (or Wyoming) side never touches the
model: it submits a job and awaits the job's events. The queue is bounded; a full queue is refused
at once (the caller answers 503 with Retry-After) rather than letting latency grow without limit.
A job whose caller went away is cancelled between tokens. Stopping cancels the running job and
waits for the thread, with no timeout: the model is freed only once nothing runs on it.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from edge.errors import EdgeError
from edge.model.reply_events import DoneEvent, ErrorEvent, ReplyEvent


class Busy(EdgeError):
    """The queue is full: try again shortly."""


class NotReady(EdgeError):
    """The model is still loading, or failed to load."""


@dataclass
class Job:
    """A unit of work for the model thread; its events reach the caller's event loop."""

    run: Callable[[Job], Any]  # runs on the model thread; may emit() text and calls; returns the result
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted_at: float = field(default_factory=time.perf_counter)
    outcome: Any = None  # what run() returned, or the exception it raised

    def emit(self, event: ReplyEvent) -> None:
        """From the model thread: hand an event to the caller. A caller whose event loop has ended
        (the server is shutting down) is gone: the job is cancelled and the event dropped."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # "Event loop is closed"
            self.cancelled.set()

    async def stream(self) -> AsyncIterator[ReplyEvent]:
        """The job's events until it ends: TextEvent and CallEvent..., then DoneEvent or ErrorEvent."""
        try:
            while True:
                event = await self.events.get()
                yield event
                if isinstance(event, DoneEvent | ErrorEvent):
                    return
        finally:
            self.cancelled.set()  # the caller stopped listening (disconnect): stop generating

    async def result(self) -> Any:
        async for event in self.stream():
            if isinstance(event, ErrorEvent):
                raise event.error
            if isinstance(event, DoneEvent):
                return event.result
        return None


class ModelWorker:
    """Loads the model on its own thread, then runs jobs one at a time."""

    def __init__(self, load: Callable[[], Any], *, max_queue: int = 8, on_job_end: Callable[[Job], None] | None = None):
        """`load()` returns the resources jobs use (e.g. the loaded model and audio projector)."""
        self._load, self._jobs = load, queue.Queue(maxsize=max_queue)
        self.max_queue = max_queue
        self.resources: Any = None
        self.state = "loading"  # loading | ready | failed | stopped
        self.error: str | None = None
        self.busy = False
        self._running: Job | None = None
        self._stopping = threading.Event()
        self._on_job_end = on_job_end
        self._thread = threading.Thread(target=self._main, name="edge-model-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def depth(self) -> int:
        """Jobs waiting plus the one running."""
        return self._jobs.qsize() + (1 if self.busy else 0)

    def submit(self, run: Callable[[Job], Any]) -> Job:
        if self.state != "ready":
            raise NotReady(self.error or f"the model is {self.state}; try again shortly")
        job = Job(run, asyncio.get_running_loop())
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            raise Busy(f"{self.depth} requests are queued for the model; try again shortly") from None
        return job

    def stop(self) -> None:
        """Refuse new jobs, end the running one at its next token and the queued ones unrun, then
        wait until the thread has freed the model (however long the last token takes)."""
        self._stopping.set()
        if self.state in ("ready", "loading"):
            self.state = "stopped"
        running = self._running
        if running is not None:
            running.cancelled.set()
        if not self._thread.is_alive():
            return
        while True:  # the queue may be full: jobs drain fast once stopping (each is refused unrun)
            try:
                self._jobs.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        self._thread.join()

    def _main(self) -> None:
        try:
            self.resources = self._load()
        except Exception as exc:  # noqa: BLE001  (reported through /health and every request)
            self.state, self.error = "failed", f"the model failed to load: {exc}"
            return
        if self._stopping.is_set():  # stopped while loading
            self._close_resources()
            return
        self.state = "ready"
        try:
            while (job := self._jobs.get()) is not None:
                self._run(job)
        finally:
            self._close_resources()

    def _close_resources(self) -> None:
        close = getattr(self.resources, "close", None)
        if close:
            close()

    def _run(self, job: Job) -> None:
        if job.cancelled.is_set():
            return
        if self._stopping.is_set():
            job.emit(ErrorEvent(NotReady("the server is stopping; try again once it is back")))
            return
        self.busy, self._running = True, job
        if self._stopping.is_set():  # stop() may have looked for a running job just before
            job.cancelled.set()
        try:
            job.outcome = job.run(job)
            job.emit(DoneEvent(job.outcome))
        except Exception as exc:  # noqa: BLE001  (one bad request never takes the worker down)
            job.outcome = exc
            job.emit(ErrorEvent(exc))
        finally:
            self.busy, self._running = False, None
            if self._on_job_end:
                self._on_job_end(job)
