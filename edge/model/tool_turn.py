"""A reply that may call tools: declarations rendered by the model's template, decoding held to
Gemma 4's call syntax by a grammar whenever a call is (or may be) written, and the reply split into
text and calls as it streams, so call markup never reaches the text.

tool_choice, as OpenAI defines it: "none" (no tools offered, text only), "auto" (text, or calls: the
grammar starts at the first call token), "required" (calls to any tool from the first token), or a
function's name (calls to that one from the first token).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from edge.model.chat_format import Message
from edge.model.engine import Generation, LoadedModel, Sampling
from edge.model.reply_events import CallEvent, TextEvent
from edge.model.tool_calls import (
    CALL_CLOSE,
    MARKUP_TOKENS,
    CallSplitter,
    SplitReply,
    ToolCall,
    ToolSchemaError,
    ToolSpec,
)
from edge.model.tool_grammar import call_grammar, clamp_to_schema
from edge.vision.images import Picture


@dataclass(frozen=True)
class ToolSetup:
    tools: tuple[ToolSpec, ...]
    choice: str = "auto"  # "none" | "auto" | "required" | a function name
    parallel: bool = True  # several calls in one turn

    def __post_init__(self) -> None:
        names = [t.name for t in self.tools]
        if self.choice not in ("none", "auto", "required") and self.choice not in names:
            raise ToolSchemaError(
                f"tool_choice names {self.choice!r}, which is not among the tools ({', '.join(names) or 'none'})"
            )
        if self.choice == "required" and not names:
            raise ToolSchemaError("tool_choice 'required' needs at least one tool")

    @property
    def offered(self) -> bool:
        return bool(self.tools) and self.choice != "none"

    def declarations(self) -> list[dict] | None:
        return [t.declaration() for t in self.tools] if self.offered else None

    def sampling(self, base: Sampling) -> Sampling:
        if not self.offered:
            return base
        only = self.choice if self.choice not in ("auto", "required") else None
        return base.with_(
            grammar=call_grammar(self.tools, only=only, parallel=self.parallel, lazy=self.choice == "auto")
        )


class ToolTurn:
    """Iterate for events: TextEvent as text streams, CallEvent as each call completes.
    Afterwards `.reply` holds the text and the calls, `.stats` the generation's numbers."""

    def __init__(self, generation: Generation, setup: ToolSetup):
        self.generation, self.setup = generation, setup
        self._splitter = CallSplitter(frozenset(t.name for t in setup.tools))
        self.reply: SplitReply | None = None

    @classmethod
    def chat(
        cls, loaded: LoadedModel, messages: list[Message], setup: ToolSetup, sampling: Sampling, **kwargs
    ) -> ToolTurn:
        """A reply to `messages` (clips, cancelled... go to the generation)."""
        generation = loaded.chat(
            messages, setup.sampling(sampling), tools=setup.declarations(), special=markup_tokens(loaded), **kwargs
        )
        return cls(generation, setup)

    @classmethod
    def after_results(
        cls, loaded: LoadedModel, calls: list[ToolCall], results: list[object], setup: ToolSetup, sampling: Sampling
    ) -> ToolTurn:
        """The same model turn, continued in the KV cache: the results are read, the reply goes on.
        Nothing before them is evaluated again (a spoken turn's audio included). A result's pictures
        (a camera's frame) are shown after the results, fitted to the model's image budget."""
        pictures = [loaded.fit_image(p) for p in pictures_in(results)]
        text = results_text(loaded, calls, results) + "".join("\n\n" + loaded.projector.marker for _ in pictures)
        generation = loaded.continue_turn(
            text + ("\n\n" if pictures else ""), setup.sampling(sampling), media=pictures, special=markup_tokens(loaded)
        )
        return cls(generation, setup)

    @property
    def stats(self):
        return self.generation.stats

    @property
    def prefill(self):
        return self.generation.prefill

    def __iter__(self) -> Iterator[TextEvent | CallEvent]:
        pieces = iter(self.generation)
        try:
            for piece in pieces:
                yield from self._events(*self._splitter.feed(piece))
            yield from self._events(*self._splitter.finish())
        finally:
            pieces.close()
            self.reply = self._splitter.result()
            if not self.setup.offered:
                self.reply.calls = []  # tool_choice none: whatever the weights wrote is not a call
            self.reply.calls = [clamp_to_schema(c, self.setup.tools) for c in self.reply.calls]

    def _events(self, text: str, calls: list[ToolCall]) -> Iterator[TextEvent | CallEvent]:
        if text:
            yield TextEvent(text)
        if self.setup.offered:
            for call in calls:
                yield CallEvent(clamp_to_schema(call, self.setup.tools))

    def run(self) -> SplitReply:
        for _ in self:
            pass
        return self.reply


def markup_tokens(loaded: LoadedModel) -> frozenset[int]:
    """The call markup's token ids: rendered as text in a tool turn (other control tokens are not)."""
    ids = (loaded.engine.tokenize(text, bos=False) for text in MARKUP_TOKENS)
    return frozenset(tokens[0] for tokens in ids if len(tokens) == 1)


def results_text(loaded: LoadedModel, calls: list[ToolCall], results: list[object]) -> str:
    """What follows the model's calls in its turn: the results and the prompt to go on, exactly as
    the model's own template renders them (taken from a rendering of the same calls and results)."""
    rendered = loaded.chat_prompt([{"role": "user", "content": "-"}, with_results(calls, results)]).text
    return rendered[rendered.rindex(CALL_CLOSE) + len(CALL_CLOSE) :]


def with_results(calls: list[ToolCall], results: list[object], text: str = "") -> Message:
    """The model's turn as the template renders it: its calls, their results, then (once written) its
    text. A picture in a result is named, not rendered: it is shown after the results (after_results)
    and does not stay in the history."""
    return {
        "role": "assistant",
        "content": text,
        "tool_calls": [{"id": c.id, "function": {"name": c.name, "arguments": c.arguments}} for c in calls],
        "tool_responses": [{"name": c.name, "response": _named(r)} for c, r in zip(calls, results)],
    }


SHOWN_BELOW = "the picture is shown below"


def pictures_in(results: list[object]) -> list[Picture]:
    """The pictures tools returned (a dict value that is a Picture), in order."""
    return [v for r in results if isinstance(r, dict) for v in r.values() if isinstance(v, Picture)]


def _named(result: object) -> object:
    if isinstance(result, dict):
        return {k: SHOWN_BELOW if isinstance(v, Picture) else v for k, v in result.items()}
    return result
