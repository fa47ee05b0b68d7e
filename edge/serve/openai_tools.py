"""OpenAI's tool-calling shapes <-> edge-gemma's: `tools`/`tool_choice` into a ToolSetup, the
history's assistant `tool_calls` and `role: tool` results into Gemma 4's turns, calls back out.

Gemma 4's template keeps a call, its results and the text written after them in one model turn,
so an OpenAI assistant message with tool_calls, the tool messages answering it and the assistant
text that follows become one message here.
"""

from __future__ import annotations

import json
from typing import Any

from edge.model.chat_format import Message
from edge.model.tool_calls import ToolCall, ToolSchemaError, tool_specs
from edge.model.tool_turn import ToolSetup
from edge.serve.api_error import ApiError


def tool_setup(tools: list[dict] | None, tool_choice: Any, parallel: bool | None) -> ToolSetup | None:
    """None when the request has no tools. Bad schemas or a forced unknown name: 400."""
    if not tools:
        if tool_choice not in (None, "none", "auto"):
            raise ApiError(400, "tool_choice needs tools", param="tool_choice")
        return None
    try:
        specs = tuple(tool_specs(tools))
        return ToolSetup(specs, _choice(tool_choice), parallel is not False)
    except ToolSchemaError as exc:
        raise ApiError(400, str(exc), param="tool_choice" if "tool_choice" in str(exc) else "tools") from None


def _choice(choice: Any) -> str:
    if choice is None:
        return "auto"
    if isinstance(choice, str) and choice in ("none", "auto", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if isinstance(name, str):
            return name
    raise ToolSchemaError(
        'tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}'
    )


def merge_tool_turns(messages: list[dict]) -> list[Message]:
    """Fold OpenAI's tool turns into Gemma 4's: each `{role, content}` plus `tool_calls`/`tool_call_id`."""
    out: list[Message] = []
    names: dict[str, str] = {}
    for index, m in enumerate(messages):
        role = m["role"]
        if role == "tool":
            turn = out[-1] if out else None
            if turn is None or turn["role"] != "assistant" or "tool_calls" not in turn:
                raise ApiError(
                    400, "a tool message must follow the assistant message that called it", param=f"messages[{index}]"
                )
            name = names.get(m.get("tool_call_id") or "", m.get("name") or "")
            if not name:
                raise ApiError(
                    400,
                    "tool_call_id does not match a call in the assistant message",
                    param=f"messages[{index}].tool_call_id",
                )
            turn.setdefault("tool_responses", []).append({"name": name, "response": _result(m["content"])})
            continue
        if (
            role == "assistant"
            and out
            and out[-1].get("tool_responses")
            and not out[-1]["content"]
            and not m.get("tool_calls")
        ):
            out[-1]["content"] = m["content"]  # the text the model wrote after the results: same turn
            continue
        message: Message = {"role": role, "content": m["content"]}
        if m.get("images"):
            message["images"] = m["images"]
        if role == "assistant" and m.get("tool_calls"):
            message["tool_calls"] = [
                _call(call, f"messages[{index}].tool_calls[{j}]", names) for j, call in enumerate(m["tool_calls"])
            ]
        out.append(message)
    return out


def _call(call: dict, param: str, names: dict[str, str]) -> dict:
    fn = call.get("function") or {}
    name, raw = fn.get("name"), fn.get("arguments") or "{}"
    if not isinstance(name, str) or not name:
        raise ApiError(400, "a tool call needs function.name", param=param)
    try:
        arguments = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        raise ApiError(400, "function.arguments must be a JSON object (as a string)", param=param) from None
    if not isinstance(arguments, dict):
        raise ApiError(400, "function.arguments must be a JSON object", param=param)
    if call.get("id"):
        names[call["id"]] = name
    return {"id": call.get("id", ""), "function": {"name": name, "arguments": arguments}}


def _result(content: str) -> Any:
    """A tool's answer: JSON objects stay structured (the template writes their keys), text stays text."""
    try:
        value = json.loads(content)
    except (json.JSONDecodeError, TypeError):
        return content
    return value if isinstance(value, dict) else content


def calls_json(calls: list[ToolCall]) -> list[dict]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json()}} for c in calls
    ]
