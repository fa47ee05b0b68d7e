"""One context budget for every kept conversation (chat, voice, and later serve).

The system prompt is pinned. Room is reserved for what the turn still adds after the prompt: the
reply (max tokens) and, for a spoken turn, its audio tokens (25 per second, known before the encoder
runs) and the transcript step. When the next turn would not fit, the oldest whole turns (user +
assistant together) go, half of the droppable history at a time rather than one turn per turn: the
cached KV prefix then stays valid for many turns and the re-prefill after a drop is rare.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edge.audio_format import MAX_CLIP_SECONDS, TOKENS_PER_SECOND
from edge.errors import ContextFullError
from edge.model.chat_format import Message

AUDIO_CHUNK_OVERHEAD = 8  # begin/end-of-audio markers around each 30 s piece, with a margin


def audio_tokens_for(seconds: float) -> int:
    """Context positions a clip will take, before the encoder has seen it."""
    pieces = max(1, math.ceil(seconds / MAX_CLIP_SECONDS))
    return math.ceil(seconds * TOKENS_PER_SECOND) + pieces * AUDIO_CHUNK_OVERHEAD


@dataclass(frozen=True)
class Fitted:
    """The history to prompt with, and what was dropped to get there."""

    history: list[Message]  # pinned system message (if any) + the turns kept, oldest first
    dropped_turns: int
    prompt_tokens: int  # of history + the new user message, as rendered and tokenized

    @property
    def note(self) -> str | None:
        if not self.dropped_turns:
            return None
        return f"context: dropped {self.dropped_turns} old turn{'s' if self.dropped_turns > 1 else ''}"


def fit_history(
    history: Sequence[Message],
    new_user: Message,
    *,
    n_ctx: int,
    reserve: int,
    count_tokens: Callable[[list[Message]], int],
    what: str = "this message",
    fix: str = "raise --ctx",
) -> Fitted:
    """Keep as much of `history` as fits with `new_user` and `reserve` tokens of room after it.

    `count_tokens(messages)` is the prompt length of those messages as the model sees them.
    Raises ContextFullError (with the numbers and `fix`) when even the pinned system prompt and the
    new message alone do not leave `reserve`.
    """
    pinned = pinned_system(history)
    turns = _turns(list(history[len(pinned) :]))
    dropped = 0
    while True:
        kept = pinned + [m for turn in turns for m in turn]
        used = count_tokens(kept + [new_user])
        if used + reserve <= n_ctx:
            return Fitted(kept, dropped, used)
        if not turns:
            raise ContextFullError(
                f"{what} needs {used} tokens plus {reserve} reserved for the reply, but the context holds "
                f"{n_ctx} ({used + reserve - n_ctx} over): {fix}"
            )
        step = max(1, (len(turns) + 1) // 2)  # half the droppable history at once
        turns, dropped = turns[step:], dropped + step


def pinned_system(history: Sequence[Message]) -> list[Message]:
    """The system message that opens a history (a list of it, empty without one): it is never dropped."""
    return [m for m in history[:1] if m["role"] == "system"]


def _turns(messages: list[Message]) -> list[list[Message]]:
    """Group messages into turns: a user message and the replies that follow it."""
    turns: list[list[Message]] = []
    for message in messages:
        if message["role"] == "user" or not turns:
            turns.append([message])
        else:
            turns[-1].append(message)
    return turns
