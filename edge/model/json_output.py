"""Structured output: a reply that is JSON, or JSON that validates against a schema, whatever the
weights say. The schema becomes a GBNF grammar through llama-cpp-python's port of llama.cpp's
json-schema-to-grammar; the engine then checks each drawn token against it (sampling.py).

That converter quietly ignores keywords it cannot express (`minimum`, `uniqueItems`, ...), which
would break the promise that the reply validates. So every keyword is checked first: one it cannot
enforce is refused with a message naming it. Annotations (`title`, `description`, ...) are fine.
"""

from __future__ import annotations

import json
from typing import Any

from edge.errors import UsageError
from edge.model.engine import Grammar

ANY_OBJECT: dict = {"type": "object"}  # "json" mode (Ollama's format: "json", OpenAI's json_object)
ENFORCED = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "enum",
    "const",
    "anyOf",
    "$ref",
    "$defs",
    "definitions",
    "pattern",
    "minLength",
    "maxLength",
}
# Words that describe, never constrain (a validator ignores them too; `format` is an annotation by
# default in JSON Schema, and the known date/time/uuid formats are enforced besides).
ANNOTATIONS = {
    "title",
    "description",
    "default",
    "examples",
    "example",
    "$schema",
    "$id",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
    "format",
    "nullable",
    "strict",
}
TYPES = {"string", "number", "integer", "boolean", "null", "object", "array"}
ADVICE = {
    "oneOf": "use anyOf (a grammar cannot make the choices exclusive)",
    "allOf": "merge the parts into one schema",
}


class SchemaError(UsageError):
    """A schema the grammar cannot enforce; the message names the keyword and where it is."""


def json_grammar(schema: Any) -> Grammar:
    """A grammar whose every complete text is JSON that validates against `schema`."""
    if not isinstance(schema, dict):
        raise SchemaError('the JSON schema must be an object, e.g. {"type": "object", "properties": {...}}')
    _check(schema, "schema")
    from llama_cpp import llama_grammar

    # The port nests one optional group per repetition ("(c (c (c)?)?)?"); llama.cpp's parser refuses
    # that past about 1,000 (a maxLength of 2,000). llama.cpp's own converter writes c{0,2000}, which
    # its parser expands flat: the same language, any length.
    llama_grammar._build_repetition = braced_repetition
    try:
        gbnf = llama_grammar.json_schema_to_gbnf(json.dumps(schema))
    except (ValueError, KeyError, AssertionError, RecursionError) as exc:
        raise SchemaError(f"the JSON schema cannot become a grammar: {exc}") from None
    return Grammar(gbnf)


def braced_repetition(item_rule: str, min_items: int, max_items: int | None, separator_rule=None, _literal=False):
    """`item_rule` min..max times (max None: unbounded), separated by `separator_rule` if given, in
    GBNF's {m,n} form, as llama.cpp's common/json-schema-to-grammar.cpp build_repetition writes it."""
    if max_items == 0:
        return ""
    if min_items == 0 and max_items == 1:
        return f"{item_rule}?"
    if not separator_rule:
        if max_items is None and min_items <= 1:
            return f"{item_rule}{'+' if min_items else '*'}"
        return f"{item_rule}{{{min_items},{'' if max_items is None else max_items}}}"
    rest = braced_repetition(
        f"({separator_rule} {item_rule})", max(min_items - 1, 0), None if max_items is None else max_items - 1
    )
    result = f"{item_rule} {rest}"
    return result if min_items > 0 else f"({result})?"


def _check(schema: Any, where: str) -> None:
    if isinstance(schema, bool):
        if not schema:
            raise SchemaError(f"{where} is false: nothing could match it")
        return
    if not isinstance(schema, dict):
        raise SchemaError(f"{where} must be a schema object, not {type(schema).__name__}")
    for key, value in schema.items():
        if key in ANNOTATIONS:
            continue
        if key not in ENFORCED:
            advice = ADVICE.get(key, "remove it, or check the value after the reply")
            raise SchemaError(f"{where} uses {key!r}, which structured output cannot enforce: {advice}")
        if key == "type":
            kinds = value if isinstance(value, list) else [value]
            for kind in kinds:
                if kind not in TYPES:
                    raise SchemaError(f"{where}.type {kind!r} is not a JSON Schema type ({', '.join(sorted(TYPES))})")
        elif key in ("properties", "$defs", "definitions"):
            if not isinstance(value, dict):
                raise SchemaError(f"{where}.{key} must be an object of schemas")
            for name, sub in value.items():
                _check(sub, f"{where}.{key}.{name}")
        elif key in ("items", "additionalProperties") and not isinstance(value, list):
            _check(value, f"{where}.{key}")
        elif key in ("prefixItems", "anyOf", "items"):
            if not isinstance(value, list) or not value:
                raise SchemaError(f"{where}.{key} must be a non-empty list of schemas")
            for i, sub in enumerate(value):
                _check(sub, f"{where}.{key}[{i}]")
        elif key == "required":
            declared = schema.get("properties", {})
            missing = [n for n in value if n not in declared] if isinstance(value, list) else None
            if missing is None:
                raise SchemaError(f"{where}.required must be a list of property names")
            if missing:
                raise SchemaError(f"{where}.required names {missing[0]!r}, which its properties do not declare")
        elif key == "enum" and (not isinstance(value, list) or not value):
            raise SchemaError(f"{where}.enum must be a non-empty list")
        elif key == "$ref" and not (isinstance(value, str) and value.startswith("#/")):
            raise SchemaError(f"{where}.$ref must point inside the schema (#/$defs/...); nothing is fetched")
