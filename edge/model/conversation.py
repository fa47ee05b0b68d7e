"""A conversation that never outgrows the context: chat, voice and serve all keep their turns here.

Each reply is prompted with the pinned system prompt and as many recent turns as the context budget
allows (context_budget.fit_history, the one history fitter); turns that had to go are gone for good,
so the prompt's cached prefix stays valid until the next drop. A failed reply leaves the history as
it was: a turn joins the history only through `remember()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from edge.errors import EdgeError
from edge.jsonio import read_json, write_json_atomic
from edge.model.chat_format import Message
from edge.model.context_budget import Fitted, fit_history, pinned_system
from edge.model.engine import GEMMA_SAMPLING, EncodedAudio, Generation, LoadedModel, PrefillReport, Sampling
from edge.model.tool_turn import ToolSetup, ToolTurn
from edge.vision.images import Picture

SAVE_FORMAT = "edge-gemma-chat/1"


def media_of(messages: list[Message]) -> list:
    """The media the messages carry, in the order of their markers: each message's pictures
    (`"images"`), then its audio if it was kept as audio (`"audio"`)."""
    return [item for m in messages for item in (*m.get("images", ()), *([m["audio"]] if "audio" in m else ()))]


def with_pictures(content: str, pictures, marker: str) -> Message:
    """A user message showing `pictures` (fitted: LoadedModel.fit_image) before its text, each set
    apart by a blank line as Gemma 4's template sets apart an image part."""
    pictures = list(pictures)
    message: Message = {"role": "user", "content": (marker + "\n\n") * len(pictures) + content}
    if pictures:
        message["images"] = pictures
    return message


def count_prompt(loaded: LoadedModel, messages: list[Message], tools=None) -> int:
    """Prompt positions of `messages`: text as rendered, the rows of turns kept as audio, the
    pictures' image tokens (their markers counted as text too: a few tokens of slack)."""
    media = media_of(messages)
    rows = sum(len(m.embeddings) for m in media if isinstance(m, EncodedAudio))
    return loaded.count_tokens(loaded.chat_prompt(messages, tools=tools).text) + rows + image_tokens_in(loaded, media)


def image_tokens_in(loaded: LoadedModel, media: list) -> int:
    """Context positions the pictures among `media` take (fitted pictures; none without a projector)."""
    pictures = [p for p in media if isinstance(p, Picture)]
    return sum(loaded.projector.image_tokens(p) for p in pictures) if pictures else 0


def _with_media(messages: list[Message], clips):
    """The media of the messages, then this turn's clips (`clips` may be a function: see Generation)."""
    earlier = media_of(messages)
    if not earlier:
        return clips
    return (lambda: earlier + list(clips())) if callable(clips) else earlier + list(clips)


class Conversation:
    def __init__(self, loaded: LoadedModel, *, system: str | None = None, history: list[Message] | None = None):
        self.loaded = loaded
        self.history: list[Message] = (
            list(history) if history is not None else ([{"role": "system", "content": system}] if system else [])
        )
        self.last_fit: Fitted | None = None
        self._asked: Message | None = None
        self._dropped_ahead = 0  # turns dropped by fits made before this turn's reply

    def reply(
        self,
        content: str,
        sampling: Sampling = GEMMA_SAMPLING,
        *,
        clips: Sequence[np.ndarray] = (),
        images: Sequence[Picture] = (),
        reserve_extra: int = 0,
        what: str = "this message",
        fix: str = "raise --ctx, lower --max-tokens or send a shorter message",
        **generation_args,
    ) -> Generation:
        """Stream the reply to a user message; call `remember()` with the finished text to keep the turn.

        `images`: pictures shown with the message (fitted: LoadedModel.fit_image), kept in the history
        with it, so later turns can ask about them (found in the KV cache, not encoded again).
        `reserve_extra`: context the turn takes beyond its text and reply (a clip's audio tokens, a
        transcript step). Old turns that do not fit are dropped first (see `last_fit`).
        """
        messages = self._fitted(content, sampling, reserve_extra, what, fix, images=images)
        return self.loaded.chat(messages, sampling, clips=_with_media(messages, clips), **generation_args)

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
        clips = _with_media(messages, clips)
        return ToolTurn.chat(self.loaded, messages, tools, sampling, clips=clips, **generation_args)

    def prefill_ahead(
        self,
        content: str,
        heard: EncodedAudio,
        sampling: Sampling = GEMMA_SAMPLING,
        *,
        tools: ToolSetup | None = None,
        reserve_extra: int = 0,
        what: str = "this message",
        fix: str = "raise --ctx",
    ) -> PrefillReport:
        """Evaluate the prompt `reply` (or `reply_with_tools`) would make for a spoken message, up to
        the rows of its clip heard so far (`heard`): the rest of the turn is left for the reply."""
        declarations = tools.declarations() if tools is not None else None
        messages = self._fitted(content, sampling, reserve_extra, what, fix, declarations, ahead=True)
        self._asked = None  # nothing was asked yet: the reply fits the history again
        prompt = self.loaded.chat_prompt(messages, tools=declarations)
        media = _with_media(messages, [heard])
        return self.loaded.engine.prefill(
            prompt.text, media, audio_rows=len(heard.embeddings), pin_chars=prompt.system_end
        )

    def _fitted(
        self, content, sampling, reserve_extra, what, fix, tools=None, *, ahead=False, images=()
    ) -> list[Message]:
        asked = (
            with_pictures(content, images, self.loaded.projector.marker)
            if images
            else {"role": "user", "content": content}
        )
        # Room for the reply, but never more than half the context: llama.cpp stops a reply that
        # reaches the end of the context, which is better than refusing a long conversation.
        reserve = min(sampling.max_tokens, self.loaded.n_ctx // 2) + reserve_extra
        fitted = fit_history(
            self.history,
            asked,
            n_ctx=self.loaded.n_ctx,
            reserve=reserve,
            count_tokens=lambda messages: self._count(messages, tools),
            what=what,
            fix=fix,
        )
        # Turns dropped while listening ahead count for the turn that replies.
        dropped = fitted.dropped_turns + self._dropped_ahead
        self._dropped_ahead = dropped if ahead else 0
        fitted = replace(fitted, dropped_turns=dropped)
        self.history, self.last_fit, self._asked = fitted.history, fitted, asked
        return self.history + [asked]

    def _count(self, messages: list[Message], tools) -> int:
        return count_prompt(self.loaded, messages, tools)

    def remember(
        self,
        reply_text: str,
        *,
        user_text: str | None = None,
        answer: Message | None = None,
        asked: Message | None = None,
    ) -> None:
        """Keep the last turn; `user_text` replaces what was asked (a transcript in place of audio), or
        `asked` (a spoken turn kept as audio); `answer` the plain reply (a turn with tool calls and
        their results: tool_turn.with_results)."""
        if self._asked is not None:
            asked = asked or (self._asked if user_text is None else {"role": "user", "content": user_text})
            self.history += [asked, answer or {"role": "assistant", "content": reply_text.strip()}]
            self._asked = None

    def clear(self) -> None:
        """Forget every turn; the system prompt stays."""
        self.history = pinned_system(self.history)

    @property
    def turns(self) -> int:
        return sum(1 for m in self.history if m["role"] == "user")

    def save(self, path: Path) -> Path:
        # Audio and pictures stay in memory only: a spoken turn is saved as a note that it was
        # spoken, a picture as its name where it was shown.
        messages = [_saved(m, self.loaded.projector) for m in self.history]
        return write_json_atomic(Path(path), {"format": SAVE_FORMAT, "messages": messages})


def _saved(message: Message, projector) -> Message:
    if "audio" in message:
        return {"role": message["role"], "content": "(spoken message)"}
    if "images" in message:
        content = message["content"]
        for picture in message["images"]:
            content = content.replace(projector.marker, f"(picture: {Path(picture.name).name})", 1)
        return {"role": message["role"], "content": content}
    return message


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
