"""Gemma 4's tool-call syntax: tool declarations checked, calls parsed, a reply split as it streams.

The model writes a call as `<|tool_call>call:NAME{key:value,...}<tool_call|>`: keys bare, strings
between `<|"|>` tokens, numbers, booleans and null bare, nested `{}` and `[]`. Several calls may follow
one another; the model then ends its turn with `<|tool_response>` (an end-of-generation token) and
waits for the results. Declarations and past calls are rendered by the GGUF's own chat template
(chat_format.py); decoding is kept to this syntax by a grammar (tool_grammar.py).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edge.errors import UsageError

CALL_OPEN, CALL_CLOSE, QUOTE = "<|tool_call>", "<tool_call|>", '<|"|>'
# The control tokens a tool turn needs rendered as text; every other control token renders empty.
MARKUP_TOKENS = (CALL_OPEN, CALL_CLOSE, QUOTE)
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
JSON_TYPES = ("string", "integer", "number", "boolean", "object", "array", "null")


class ToolSchemaError(UsageError):
    """A tool declaration that cannot be turned into a grammar (the HTTP side answers 400)."""


@dataclass(frozen=True)
class ToolSpec:
    """One function the model may call: its name, what it does, and a JSON schema of its arguments."""

    name: str
    description: str = ""
    parameters: dict = field(default_factory=lambda: {"type": "object", "properties": {}})

    def declaration(self) -> dict:
        """The OpenAI shape the chat template renders."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]
    id: str = ""

    def arguments_json(self) -> str:
        return json.dumps(self.arguments, ensure_ascii=False)


def tool_specs(tools: Sequence[dict], where: str = "tools") -> list[ToolSpec]:
    """OpenAI-style `tools` ([{type: function, function: {name, description, parameters}}]), checked."""
    specs: list[ToolSpec] = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or tool.get("type", "function") != "function":
            raise ToolSchemaError(f"{where}[{i}] must be {{type: function, function: {{name, parameters}}}}")
        name = fn.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise ToolSchemaError(f"{where}[{i}].function.name must be letters, digits, _ . or - (got {name!r})")
        parameters = fn.get("parameters") or {"type": "object", "properties": {}}
        check_schema(parameters, f"{where}[{i}].function.parameters", top=True)
        if name in {s.name for s in specs}:
            raise ToolSchemaError(f"{where}[{i}]: a second function named {name!r}")
        specs.append(ToolSpec(name, str(fn.get("description") or ""), parameters))
    return specs


def check_schema(schema: Any, where: str, *, top: bool = False) -> None:
    """The JSON-schema subset the grammar knows: types, enums, properties/required, items, min/max, anyOf."""
    if not isinstance(schema, dict):
        raise ToolSchemaError(f"{where} must be a JSON schema object")
    kind = schema.get("type")
    if top and kind not in (None, "object"):
        raise ToolSchemaError(f"{where}.type must be 'object' (arguments are named)")
    kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
    for k in kinds:
        if k not in JSON_TYPES:
            raise ToolSchemaError(f"{where}.type {k!r} is not one of {', '.join(JSON_TYPES)}")
    if "enum" in schema and (not isinstance(schema["enum"], list) or not schema["enum"]):
        raise ToolSchemaError(f"{where}.enum must be a non-empty list")
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        raise ToolSchemaError(f"{where}.properties must be an object")
    for key, sub in properties.items():
        if not NAME.match(str(key)):
            raise ToolSchemaError(f"{where}.properties: {key!r} is not a usable argument name")
        check_schema(sub, f"{where}.properties.{key}")
    required = schema.get("required", [])
    if not isinstance(required, list) or any(r not in properties for r in required):
        raise ToolSchemaError(f"{where}.required must list names from properties")
    if "items" in schema:
        check_schema(schema["items"], f"{where}.items")
    for key in ("anyOf", "oneOf"):
        for j, sub in enumerate(schema.get(key, [])):
            check_schema(sub, f"{where}.{key}[{j}]")
    for key in ("minimum", "maximum"):
        if key in schema and not isinstance(schema[key], int | float):
            raise ToolSchemaError(f"{where}.{key} must be a number")


# -- parsing ------------------------------------------------------------------------------------


class CallSyntaxError(ValueError):
    pass


def parse_call(body: str) -> ToolCall:
    """`call:NAME{...}` (the text between the call tokens) -> ToolCall."""
    if not body.startswith("call:"):
        raise CallSyntaxError("a call starts with 'call:'")
    brace = body.find("{")
    if brace < 0:
        raise CallSyntaxError("no arguments object")
    name = body[5:brace]
    if not NAME.match(name):
        raise CallSyntaxError(f"bad function name {name!r}")
    reader = _Reader(body, brace)
    arguments = reader.value()
    if reader.pos != len(body) or not isinstance(arguments, dict):
        raise CallSyntaxError("text after the arguments")
    return ToolCall(name, arguments)


class _Reader:
    """A recursive-descent reader of Gemma 4's argument values."""

    def __init__(self, text: str, pos: int):
        self.text, self.pos = text, pos

    def value(self) -> Any:
        t = self.text
        if t.startswith(QUOTE, self.pos):
            end = t.find(QUOTE, self.pos + len(QUOTE))
            if end < 0:
                raise CallSyntaxError("an unclosed string")
            out, self.pos = t[self.pos + len(QUOTE) : end], end + len(QUOTE)
            return out
        if t.startswith("{", self.pos):
            return self._sequence("{", "}", keyed=True)
        if t.startswith("[", self.pos):
            return self._sequence("[", "]", keyed=False)
        match = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?|true|false|null").match(t, self.pos)
        if not match:
            raise CallSyntaxError(f"no value at {t[self.pos : self.pos + 12]!r}")
        self.pos = match.end()
        word = match.group(0)
        if word in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[word]
        return float(word) if match.group(1) or match.group(2) else int(word)

    def _sequence(self, open_: str, close: str, *, keyed: bool):
        self.pos += 1
        items: dict | list = {} if keyed else []
        while not self.text.startswith(close, self.pos):
            if items:
                if not self.text.startswith(",", self.pos):
                    raise CallSyntaxError(f"expected ',' or '{close}'")
                self.pos += 1
            if keyed:
                key = self._key()
                if not self.text.startswith(":", self.pos):
                    raise CallSyntaxError(f"expected ':' after {key!r}")
                self.pos += 1
                items[key] = self.value()
            else:
                items.append(self.value())
            if self.pos >= len(self.text):
                raise CallSyntaxError(f"unclosed '{open_}'")
        self.pos += 1
        return items

    def _key(self) -> str:
        if self.text.startswith(QUOTE, self.pos):
            key = self.value()
            return str(key)
        match = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*").match(self.text, self.pos)
        if not match:
            raise CallSyntaxError("expected a key")
        self.pos = match.end()
        return match.group(0)


@dataclass
class SplitReply:
    """A finished reply: its text (no call markup) and its calls; `malformed` counts calls that
    did not parse (dropped, never shown)."""

    content: str
    calls: list[ToolCall]
    malformed: int = 0


class CallSplitter:
    """Feed streamed text; get back content to show and calls as each one completes.

    Text from `<|tool_call>` to `<tool_call|>` never reaches the content, and a tail that could be the
    start of `<|tool_call>` is held back until it is clear either way. `names`: the functions offered;
    a call to any other is malformed (the grammar holds from the call token; a call spelled out of
    ordinary tokens is not held to it).
    """

    def __init__(self, names: frozenset[str] | None = None) -> None:
        self._names = names
        self._buffer = ""
        self._in_call = False
        self.content = ""
        self.calls: list[ToolCall] = []
        self.malformed = 0

    def feed(self, text: str) -> tuple[str, list[ToolCall]]:
        self._buffer += text
        shown, done = "", []
        while True:
            if self._in_call:
                end = self._buffer.find(CALL_CLOSE)
                if end < 0:
                    return self._shown(shown), done
                body, self._buffer = self._buffer[:end], self._buffer[end + len(CALL_CLOSE) :]
                self._in_call = False
                call = self._parsed(body)
                if call is not None:
                    done.append(call)
                continue
            start = self._buffer.find(CALL_OPEN)
            if start >= 0:
                shown += self._buffer[:start]
                self._buffer, self._in_call = self._buffer[start + len(CALL_OPEN) :], True
                continue
            keep = _partial_suffix(self._buffer, CALL_OPEN)
            shown += self._buffer[: len(self._buffer) - keep]
            self._buffer = self._buffer[len(self._buffer) - keep :]
            return self._shown(shown), done

    def finish(self) -> tuple[str, list[ToolCall]]:
        """The end of the reply: an unfinished call counts as malformed; held text is released."""
        shown, done = "", []
        if self._in_call:
            call = self._parsed(self._buffer)  # the grammar may have stopped at max_tokens
            if call is not None:
                done.append(call)
        else:
            shown = self._buffer
        self._buffer, self._in_call = "", False
        return self._shown(shown), done

    def result(self) -> SplitReply:
        return SplitReply(self.content.strip(), list(self.calls), self.malformed)

    def _shown(self, text: str) -> str:
        text = text.replace(QUOTE, '"').replace(CALL_CLOSE, "")  # stray markup never shows
        self.content += text
        return text

    def _parsed(self, body: str) -> ToolCall | None:
        try:
            call = parse_call(body)
        except CallSyntaxError:
            self.malformed += 1
            return None
        if self._names is not None and call.name not in self._names:
            self.malformed += 1
            return None
        call = ToolCall(call.name, call.arguments, f"call_{uuid.uuid4().hex[:16]}")
        self.calls.append(call)
        return call


def split_reply(text: str) -> SplitReply:
    splitter = CallSplitter()
    splitter.feed(text)
    splitter.finish()
    return splitter.result()


def _partial_suffix(text: str, marker: str) -> int:
    for k in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:k]):
            return k
    return 0
