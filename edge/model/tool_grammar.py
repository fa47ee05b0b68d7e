"""A GBNF grammar, in Gemma 4's call syntax, built from the tools' JSON schemas.

With it a call always parses, whatever the weights say: the function is one of the declared names,
every required argument is there, strings sit between `<|"|>` tokens, enums are one of their values,
small integer ranges are exact, objects and arrays nest as declared. Keys come in alphabetical order,
as the chat template writes past calls. Larger number ranges are kept to their sign and digit count
here and clamped when the call is parsed (`clamp_to_schema`).

The markup (`<|tool_call>`, `<|"|>`, `<tool_call|>`) is matched as Gemma 4's control tokens (GBNF's
`<token>` syntax), not as their characters: a model writes each as one token, so each is one forced
token rather than a spelling to choose among (random weights would otherwise spell `<`, `|`, `t`...).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from edge.model.engine import Grammar
from edge.model.tool_calls import CALL_CLOSE, CALL_OPEN, MARKUP_TOKENS, QUOTE, ToolCall, ToolSpec

MAX_ENUMERATED_RANGE = 200  # integer ranges up to this many values are listed exactly
# Bounds that make a call end whatever the weights say: a string of random tokens never closes by
# itself, and after a call the model may start another. A schema's maxLength overrides the first.
MAX_STRING_CHARS = 64
MAX_CALLS = 4


def _literal(text: str) -> str:
    return json.dumps(text)  # GBNF string literals use JSON's escapes


def _token(markup: str) -> str:
    return markup  # one control token of the vocabulary, written as GBNF's <token> (the markup is <...>)


QUOTED = _token(QUOTE)


class _Builder:
    def __init__(self) -> None:
        self.rules: dict[str, str] = {}
        self._count = 0

    def rule(self, body: str, hint: str) -> str:
        for name, existing in self.rules.items():
            if existing == body:
                return name
        self._count += 1
        name = f"{''.join(c if c.isalnum() else '-' for c in hint.lower())[:24] or 'r'}-{self._count}"
        self.rules[name] = body
        return name

    def value(self, schema: dict, hint: str) -> str:
        if "enum" in schema:
            return self.rule(" | ".join(self._const(v) for v in schema["enum"]), hint + "-enum")
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self.rule(" | ".join(self.value(s, hint) for s in schema[key]), hint + "-any")
        kind = schema.get("type")
        if isinstance(kind, list):
            return self.rule(" | ".join(self.value({**schema, "type": k}, hint) for k in kind), hint + "-types")
        if kind == "string":
            limit = int(schema.get("maxLength", MAX_STRING_CHARS))
            if limit == MAX_STRING_CHARS:
                return "string"
            return self.rule(f"{QUOTED} string-char{{0,{max(0, limit)}}} {QUOTED}", "string")
        if kind == "integer":
            return self._integer(schema, hint)
        if kind == "number":
            return "number-nonneg" if schema.get("minimum", -1) >= 0 else "number"
        if kind == "boolean":
            return "boolean"
        if kind == "null":
            return "null"
        if kind == "array":
            item = self.value(schema.get("items", {}), hint + "-item")
            return self.rule(f'"[" ( {item} ( "," {item} )* )? "]"', hint + "-array")
        if kind == "object" or "properties" in schema:
            return self.object(schema, hint)
        return "any-value"

    def object(self, schema: dict, hint: str) -> str:
        properties = schema.get("properties", {})
        if not properties:  # no arguments declared: none may be invented
            return self.rule('"{}"', "no-arguments")
        required = set(schema.get("required", []))
        keys = sorted(properties)
        pairs = [f"{_literal(k + ':')} {self.value(properties[k], hint + '-' + k)}" for k in keys]
        # rest(i, first): the pairs from i on, with a comma before each unless it is the first.
        memo: dict[tuple[int, bool], str] = {}

        def rest(i: int, first: bool) -> str:
            if i == len(keys):
                return ""
            if (i, first) in memo:
                return memo[(i, first)]
            sep = "" if first else '"," '
            with_it = f"{sep}{pairs[i]} {rest(i + 1, False)}".strip()
            without = rest(i + 1, first) or '""'
            body = with_it if keys[i] in required else f"( {with_it} ) | ( {without} )"
            memo[(i, first)] = self.rule(body, f"{hint}-{keys[i]}")
            return memo[(i, first)]

        return self.rule(f'"{{" {rest(0, True)} "}}"', hint + "-object")

    def _integer(self, schema: dict, hint: str) -> str:
        low, high = schema.get("minimum"), schema.get("maximum")
        if isinstance(low, int | float) and isinstance(high, int | float) and 0 <= high - low <= MAX_ENUMERATED_RANGE:
            values = range(int(-(-low // 1)), int(high // 1) + 1)
            return self.rule(" | ".join(_literal(str(v)) for v in values) or '"0"', hint + "-range")
        digits = len(str(int(max(abs(low or 0), abs(high))))) if isinstance(high, int | float) else 12
        sign = "" if isinstance(low, int | float) and low >= 0 else '"-"? '
        return self.rule(f"{sign}[0-9]{{1,{max(1, digits)}}}", hint + "-int")

    @staticmethod
    def _const(value: Any) -> str:
        if isinstance(value, str):
            return f"{QUOTED} {_literal(value)} {QUOTED}" if value else f"{QUOTED} {QUOTED}"
        return _literal(json.dumps(value))


COMMON_RULES = {
    "string": f"{QUOTED} string-char{{0,{MAX_STRING_CHARS}}} {QUOTED}",
    # Anything but the start of a control token; "<" alone is fine.
    "string-char": '[^<] | "<" [^|]',
    "number": '"-"? [0-9]{1,15} ( "." [0-9]{1,8} )?',
    "number-nonneg": '[0-9]{1,15} ( "." [0-9]{1,8} )?',
    "boolean": '"true" | "false"',
    "null": '"null"',
    "any-value": "string | number | boolean | null | free-object | free-array",
    # Values of no declared type: bounded too, so random weights cannot write one forever.
    "free-object": '"{" ( any-pair ( "," any-pair ){0,7} )? "}"',
    "free-array": '"[" ( any-value ( "," any-value ){0,7} )? "]"',
    "any-pair": '[A-Za-z_] [A-Za-z0-9_]{0,31} ":" any-value',
}


def call_grammar(tools: Sequence[ToolSpec], *, only: str | None = None, parallel: bool = True, lazy: bool) -> Grammar:
    """Calls to `tools` (or the one named `only`); several in a row when `parallel`.

    `lazy`: free text until the model starts a call (tool_choice auto), else a call from the first
    token (required, or a named function)."""
    builder = _Builder()
    chosen = [t for t in tools if only is None or t.name == only]
    alternatives = []
    for tool in chosen:
        args = builder.object({"type": "object", **tool.parameters}, tool.name)
        alternatives.append(f"{_token(CALL_OPEN)} {_literal('call:' + tool.name)} {args} {_token(CALL_CLOSE)}")
    rules = {"root": f"call{{1,{MAX_CALLS}}}" if parallel else "call", "call": " | ".join(alternatives)}
    rules.update(builder.rules)
    rules.update(COMMON_RULES)
    gbnf = "\n".join(f"{name} ::= {body}" for name, body in rules.items())
    if not lazy:
        return Grammar(gbnf, tokens=MARKUP_TOKENS)
    # The call-opening marker is one control token: the grammar starts when it is drawn.
    return Grammar(gbnf, trigger=CALL_OPEN, tokens=MARKUP_TOKENS)


def clamp_to_schema(call: ToolCall, tools: Sequence[ToolSpec]) -> ToolCall:
    """Numbers outside a declared minimum/maximum, clamped (the grammar cannot list every large range)."""
    spec = next((t for t in tools if t.name == call.name), None)
    if spec is None:
        return call
    return ToolCall(call.name, _clamp(call.arguments, spec.parameters), call.id)


def _clamp(value: Any, schema: dict) -> Any:
    if isinstance(value, dict):
        props = schema.get("properties", {})
        return {k: _clamp(v, props.get(k, {})) for k, v in value.items()}
    if isinstance(value, list):
        return [_clamp(v, schema.get("items", {})) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        low, high = schema.get("minimum"), schema.get("maximum")
        value = max(value, low) if isinstance(low, int | float) else value
        value = min(value, high) if isinstance(high, int | float) else value
        return int(value) if schema.get("type") == "integer" else value
    return value
