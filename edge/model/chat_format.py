"""Turn chat messages into one prompt string for llama.cpp.

Order of preference: the GGUF's own chat template (rendered with jinja2, thinking off); a Gemma turn
format for Gemma-family models that ship without one (the embedded base model); raw completion of
the last user message, with a notice, for anything else.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Required, TypedDict

from edge.errors import UsageError
from edge.model.gguf import GGUFInfo


class Message(TypedDict, total=False):
    role: Required[str]  # "system" | "user" | "assistant"
    content: Required[str]
    # An assistant turn that called tools: [{"function": {"name", "arguments": {...}}}], and the
    # results given back in the same turn: [{"name", "response": {...} or text}] (Gemma 4's template).
    tool_calls: list[dict]
    tool_responses: list[dict]
    # A spoken user turn kept as heard (engine.EncodedAudio), its content the media marker: when the
    # transcript step gave way to the next question (voice/audio_conversation.py).
    audio: object


@dataclass(frozen=True)
class ChatPrompt:
    text: str  # without a leading BOS: llama.cpp adds it when tokenizing
    stop: list[str]
    format_name: str  # "gguf-template" | "gemma-turns" | "gemma4-turns" | "raw"
    notice: str | None = None  # something the user should know about the format

    @property
    def system_end(self) -> int:
        """Characters of `text` up to the end of a Gemma 4 system turn (the system prompt and any tool
        declarations: a prefix other prompts share), or 0 when the prompt opens with none."""
        opener = self.text.find(SYSTEM_TURN)
        if opener < 0 or self.text[:opener].strip() not in ("", "<bos>"):
            return 0
        close = self.text.find(GEMMA4_STOP[0], opener)
        return close + len(GEMMA4_STOP[0]) + 1 if close >= 0 else 0  # through the newline after it


GEMMA3_STOP = ["<end_of_turn>"]
GEMMA4_STOP = ["<turn|>"]
SYSTEM_TURN = "<|turn>system\n"


def build_chat_prompt(
    info: GGUFInfo,
    messages: list[Message],
    *,
    bos_text: str = "<bos>",
    eos_text: str = "<eos>",
    tools: list[dict] | None = None,
) -> ChatPrompt:
    """`tools`: OpenAI-style declarations, rendered by the model's own template (Gemma 4 has them)."""
    if not messages or not (messages[-1]["role"] == "user" or messages[-1].get("tool_responses")):
        raise ValueError("a chat prompt needs messages ending with a user message or tool results")
    if info.chat_template:
        return _from_template(info, messages, bos_text, eos_text, tools)
    if tools:
        raise UsageError(f"{info.architecture} models here have no tool-call format; use a Gemma 4 model")
    if info.architecture == "gemma4":
        return ChatPrompt(_gemma4_turns(messages), GEMMA4_STOP, "gemma4-turns")
    if info.is_gemma:
        return ChatPrompt(
            _gemma_turns(messages),
            GEMMA3_STOP,
            "gemma-turns",
            notice="this model has no chat template; using Gemma's turn format",
        )
    return ChatPrompt(
        messages[-1]["content"],
        [],
        "raw",
        notice="this model has no chat template and is not a Gemma model: continuing your text as a plain completion",
    )


@functools.lru_cache(maxsize=8)
def _formatter(template: str, bos_text: str, eos_text: str):
    """Compiling Gemma 4's template takes ~60 ms: once per model, not once per prompt (a voice turn
    renders its prompt twice, to fit the history and to evaluate it)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    return Jinja2ChatFormatter(template=template, eos_token=eos_text, bos_token=bos_text)


def _from_template(
    info: GGUFInfo, messages: list[Message], bos_text: str, eos_text: str, tools: list[dict] | None = None
) -> ChatPrompt:
    formatter = _formatter(info.chat_template, bos_text, eos_text)
    if tools and "tool_call" not in info.chat_template:
        raise UsageError("this model's chat template has no tool calls; use a Gemma 4 model")
    # enable_thinking=False: Gemma 4's template then closes the thought channel itself.
    rendered = formatter(messages=list(messages), tools=tools or None, enable_thinking=False).prompt
    # The template writes <bos> itself and llama.cpp adds one when tokenizing: keep only one.
    if bos_text and rendered.startswith(bos_text):
        rendered = rendered[len(bos_text) :]
    stop = [eos_text] + (GEMMA4_STOP if "<|turn>" in rendered else GEMMA3_STOP if info.is_gemma else [])
    return ChatPrompt(rendered, stop, "gguf-template")


def _gemma_turns(messages: list[Message]) -> str:
    """Gemma 1-3 format. There is no system role: the system text opens the first user turn."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    parts = []
    for message in (m for m in messages if m["role"] != "system"):
        role = "model" if message["role"] == "assistant" else "user"
        content = message["content"]
        if system and role == "user":
            content, system = f"{system}\n\n{content}", ""
        parts.append(f"<start_of_turn>{role}\n{content}<end_of_turn>\n")
    return "".join(parts) + "<start_of_turn>model\n"


def _gemma4_turns(messages: list[Message]) -> str:
    """Gemma 4 format, which has a real system turn."""
    roles = {"system": "system", "user": "user", "assistant": "model"}
    turns = [f"<|turn>{roles[m['role']]}\n{m['content']}<turn|>\n" for m in messages]
    return "".join(turns) + "<|turn>model\n"
