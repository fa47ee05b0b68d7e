"""A reply's stream as typed events: one vocabulary from the engine's tool turns to every front end
(the terminal, the voice loop, the OpenAI API, Wyoming).

A tool turn yields `TextEvent` and `CallEvent` as the reply streams; a job on serve's model worker
ends with `DoneEvent` (its result) or `ErrorEvent` (what went wrong).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge.model.tool_calls import ToolCall


@dataclass(frozen=True)
class TextEvent:
    text: str  # the next piece of the reply's text (no call markup)


@dataclass(frozen=True)
class CallEvent:
    call: ToolCall  # a whole call, once it parsed


@dataclass(frozen=True)
class DoneEvent:
    result: Any  # what the job returned (serve: a Completion or a Transcription)


@dataclass(frozen=True)
class ErrorEvent:
    error: Exception


ReplyEvent = TextEvent | CallEvent | DoneEvent | ErrorEvent
