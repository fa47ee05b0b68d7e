"""One voice turn's timeline: when each stage happened, in seconds after the end of speech.

The listener's wait runs from the moment they stop talking to the moment they hear the reply.
Every stage in between is marked (from whichever thread does it) and reported relative to the end
of speech, so the pipeline's own delay (end-pointing, hand-offs, synthesis, output buffering) is
visible apart from the model's compute.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# In the order they happen on a committed turn (a speculative turn starts before clip_closed).
STAGES = (
    "reply_start",  # the model worker took the turn (speculatively after a short pause, or at end-point)
    "clip_closed",  # the end-pointer's full trailing silence passed: the turn is certain
    "prompt_ready",  # history fitted to the context and the chat prompt rendered: model compute starts
    "audio_eval_start",  # text prefix done; audio encoder + audio prefill start
    "audio_eval_end",
    "first_token",
    "first_clause",  # the first piece of the reply long enough to speak was handed to the speaker
    "synth_done",  # ... and synthesised
    "first_sample",  # its first sample went to the output device
    "audible",  # first_sample + the output stream's own latency: when the listener hears it
)


class TurnTimeline:
    """Marks stages as they happen (first mark wins), against the speech end's perf_counter time."""

    def __init__(self, speech_end_at: float):
        self.speech_end_at = speech_end_at
        self._marks: dict[str, float] = {}
        self._marked = threading.Condition()
        self.output_latency_s = 0.0
        self.encode_ms = 0.0

    def mark(self, stage: str, at: float | None = None) -> None:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        with self._marked:
            self._marks.setdefault(stage, time.perf_counter() if at is None else at)
            self._marked.notify_all()

    def has(self, stage: str) -> bool:
        with self._marked:
            return stage in self._marks

    def wait_for(self, stage: str, timeout: float, *, unless: Callable[[], bool]) -> bool:
        """Wait until `stage` is marked, or `unless()` says it never will be; False if it was not."""
        deadline = time.monotonic() + timeout
        with self._marked:
            while stage not in self._marks and not unless() and time.monotonic() < deadline:
                self._marked.wait(0.02)
            return stage in self._marks

    def seconds(self) -> dict[str, float]:
        """Each marked stage, in seconds after the end of speech (ms precision), in stage order."""
        with self._marked:
            marks = dict(self._marks)
        if "first_sample" in marks:
            marks["audible"] = marks["first_sample"] + self.output_latency_s
        return {s: round(marks[s] - self.speech_end_at, 3) for s in STAGES if s in marks}

    def model_s(self) -> float | None:
        """The model's share of the wait: text prefill, audio encode and prefill, decoding up to the
        first clause. Fitting the history and rendering the prompt count as pipeline."""
        t = self.seconds()
        if "first_clause" not in t or "prompt_ready" not in t:
            return None
        return round(t["first_clause"] - t["prompt_ready"], 3)

    def pipeline_s(self) -> float | None:
        """The rest of end-of-speech -> audible: what edge-gemma itself adds."""
        t, model = self.seconds(), self.model_s()
        if "audible" not in t or model is None:
            return None
        return round(t["audible"] - model, 3)
