"""One voice turn's timeline: when each stage happened, in seconds after the end of speech.

The listener's wait runs from the moment they stop talking to the moment they hear the reply.
Every stage in between is marked (from whichever thread does it) and reported relative to the end
of speech, so the pipeline's own delay (end-pointing, hand-offs, synthesis, output buffering) is
visible apart from the model's compute.
"""

from __future__ import annotations

import threading
import time

# In the order they happen on a committed turn (a speculative turn starts before clip_closed).
STAGES = (
    "reply_start",  # the model worker took the turn (speculatively after a short pause, or at end-point)
    "clip_closed",  # the end-pointer's full trailing silence passed: the turn is certain
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
        self._lock = threading.Lock()
        self.output_latency_s = 0.0
        self.encode_ms = 0.0

    def mark(self, stage: str, at: float | None = None) -> None:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        with self._lock:
            self._marks.setdefault(stage, time.perf_counter() if at is None else at)

    def seconds(self) -> dict[str, float]:
        """Each marked stage, in seconds after the end of speech (ms precision), in stage order."""
        with self._lock:
            marks = dict(self._marks)
        if "first_sample" in marks:
            marks["audible"] = marks["first_sample"] + self.output_latency_s
        return {s: round(marks[s] - self.speech_end_at, 3) for s in STAGES if s in marks}

    def model_s(self) -> float | None:
        """The model's share of the wait: encode, prefill and decoding up to the first clause."""
        t = self.seconds()
        if "first_clause" not in t or "reply_start" not in t:
            return None
        return round(t["first_clause"] - t["reply_start"], 3)

    def pipeline_s(self) -> float | None:
        """The rest of end-of-speech -> audible: what edge-gemma itself adds."""
        t, model = self.seconds(), self.model_s()
        if "audible" not in t or model is None:
            return None
        return round(t["audible"] - model, 3)
