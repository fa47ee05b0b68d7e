"""A conversation that never outgrows the context: chat, voice and serve all keep their turns here.

Each reply is prompted with the pinned system prompt and as many recent turns as the context budget
allows (context_budget.fit_history, the one history fitter); turns that had to go are gone for good,
so the prompt's cached prefix stays valid until the next drop. A failed reply leaves the history as
it was: a turn joins the history only through `remember()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge.errors import EdgeError
from edge.jsonio import read_json, write_json_atomic
from edge.model.chat_format import Message
from edge.model.context_budget import Fitted, fit_history, pinned_system
from edge.model.engine import GEMMA_SAMPLING, Generation, LoadedModel, Sampling
from edge.model.tool_turn import ToolSetup, ToolTurn

SAVE_FORMAT = "edge-gemma-chat/1"


class Conversation:
    def __init__(self, loaded: LoadedModel, *, system: str | None = None, history: list[Message] | None = None):
        self.loaded = loaded
        self.history: list[Message] = (
            list(history) if history is not None else ([{"role": "system", "content": system}] if system else [])
        )
        self.last_fit: Fitted | None = None
        self._asked: Message | None = None

    def reply(
        self,
        content: str,
        sampling: Sampling = GEMMA_SAMPLING,
        *,
        clips: Sequence[np.ndarray] = (),
        reserve_extra: int = 0,
        what: str = "this message",
        fix: str = "raise --ctx, lower --max-tokens or send a shorter message",
        **generation_args,
    ) -> Generation:
        """Stream the reply to a user message; call `remember()` with the finished text to keep the turn.

        `reserve_extra`: context the turn takes beyond its text and reply (a clip's audio tokens, a
        transcript step). Old turns that do not fit are dropped first (see `last_fit`).
        """
        messages = self._fitted(content, sampling, reserve_extra, what, fix)
        return self.loaded.chat(messages, sampling, clips=clips, **generation_args)

    def reply_with_tools(
        self,
        content: str,
        tools: ToolSetup,
        sampling: Sampling = GEMMA_SAMPLING,
        *,
        clips: Sequence[np.ndarray] = (),
        reserve_extra: int = 0,
        what: str = "this message",
        fix: str = "raise --ctx, lower --max-tokens or send a shorter message",
        **generation_args,
    ) -> ToolTurn:
        """As `reply`, with tools the model may call (their declarations count against the context)."""
        messages = self._fitted(content, sampling, reserve_extra, what, fix, tools.declarations())
        return ToolTurn.chat(self.loaded, messages, tools, sampling, clips=clips, **generation_args)

    def _fitted(self, content, sampling, reserve_extra, what, fix, tools=None) -> list[Message]:
        asked: Message = {"role": "user", "content": content}
        # Room for the reply, but never more than half the context: llama.cpp stops a reply that
        # reaches the end of the context, which is better than refusing a long conversation.
        reserve = min(sampling.max_tokens, self.loaded.n_ctx // 2) + reserve_extra
        fitted = fit_history(
            self.history,
            asked,
            n_ctx=self.loaded.n_ctx,
            reserve=reserve,
            count_tokens=lambda messages: self.loaded.count_tokens(self.loaded.chat_prompt(messages, tools=tools).text),
            what=what,
            fix=fix,
        )
        self.history, self.last_fit, self._asked = fitted.history, fitted, asked
        return self.history + [asked]

    def remember(self, reply_text: str, *, user_text: str | None = None, answer: Message | None = None) -> None:
        """Keep the last turn; `user_text` replaces what was asked (a transcript in place of audio),
        `answer` the plain reply (a turn with tool calls and their results: tool_turn.with_results)."""
        if self._asked is not None:
            asked = self._asked if user_text is None else {"role": "user", "content": user_text}
            self.history += [asked, answer or {"role": "assistant", "content": reply_text.strip()}]
            self._asked = None

    def clear(self) -> None:
        """Forget every turn; the system prompt stays."""
        self.history = pinned_system(self.history)

    @property
    def turns(self) -> int:
        return sum(1 for m in self.history if m["role"] == "user")

    def save(self, path: Path) -> Path:
        return write_json_atomic(Path(path), {"format": SAVE_FORMAT, "messages": self.history})


def load_history(path: Path) -> list[Message]:
    """A conversation saved with /save, checked message by message."""
    data = read_json(Path(path))
    if data is None:
        raise EdgeError(f"cannot read a saved chat from {path}: check the path (save one with /save FILE)")
    messages = data.get("messages") if isinstance(data, dict) and data.get("format") == SAVE_FORMAT else None
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and m.get("role") in ("system", "user", "assistant") and isinstance(m.get("content"), str)
        for m in messages
    ):
        raise EdgeError(f"{path} is not a chat saved by edge-gemma (/save FILE writes one)")
    return [{"role": m["role"], "content": m["content"]} for m in messages]
