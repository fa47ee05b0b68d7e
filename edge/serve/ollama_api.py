"""Ollama's API shapes and the checks between them and the model (the routes are in ollama_routes.py).

Ollama clients (Home Assistant's Ollama integration, Open WebUI, the `ollama` package) send chat
messages with base64 `images`, `tools` with tool results as `role: tool` (by name or by order, no
ids), `format` ("json" or a JSON schema), `options` and `keep_alive`, and read NDJSON back. Everything
is checked here, before a job is queued; errors are Ollama's `{"error": "..."}` with a 4xx status.
"""

from __future__ import annotations

import re
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.model.chat_format import Message
from edge.model.engine import GEMMA_SAMPLING, Sampling
from edge.model.json_output import ANY_OBJECT, SchemaError, json_grammar
from edge.serve.api_error import ApiError
from edge.serve.openai_api import MAX_IMAGES, decode_base64_image, plain_text
from edge.serve.openai_tools import merge_tool_turns, tool_setup
from edge.serve.tasks import Completion
from edge.vision.images import Picture

API_VERSION = "0.13.0"  # the Ollama API these routes follow (clients compare versions for features)
NO_LIMIT = (-1, -2)  # num_predict: -1 "until done", -2 "fill the context": both our max, never past the context


class Options(BaseModel):
    """Ollama's runtime options; the ones a GGUF server sets at load (num_gpu, num_thread, ...) are ignored."""

    model_config = ConfigDict(extra="ignore")

    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0, le=1000)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    seed: int | None = None
    num_predict: int | None = Field(None, ge=-2, le=32768)
    num_ctx: int | None = Field(None, ge=1)
    stop: list[str] | str | None = None


class Generating(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    stream: bool = True  # Ollama streams unless told not to
    format: str | dict[str, Any] | None = None
    options: Options = Field(default_factory=Options)
    keep_alive: float | int | str | None = None
    think: bool | str | None = None  # accepted: Gemma 4 thinks only when asked, and never here

    def sampling(self, default_max_tokens: int) -> Sampling:
        o = self.options
        stop = [o.stop] if isinstance(o.stop, str) else list(o.stop or [])
        limit = default_max_tokens if o.num_predict in (None, 0, *NO_LIMIT) else o.num_predict
        return GEMMA_SAMPLING.with_(
            max_tokens=limit,
            temperature=o.temperature,
            top_p=o.top_p,
            top_k=o.top_k,
            min_p=o.min_p,
            seed=o.seed,
            stop=tuple(s for s in stop if s),
            grammar=self.grammar(),
        )

    def grammar(self):
        """`format`: "json" (any object), a JSON schema, or nothing; a schema we cannot enforce is a 400."""
        if self.format in (None, ""):
            return None
        if self.format == "json":
            return json_grammar(ANY_OBJECT)
        if not isinstance(self.format, dict):
            raise ApiError(400, 'format must be "json" or a JSON schema object')
        try:
            return json_grammar(self.format)
        except SchemaError as exc:
            raise ApiError(400, f"format: {exc}") from None

    def keep_alive_seconds(self) -> float | None:
        """keep_alive as seconds (-1: forever); None when not given. A bad duration is a 400."""
        return parse_duration(self.keep_alive)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = ""
    images: list[str] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_name: str | None = None
    thinking: str | None = None  # a past reply's thoughts: not shown to the model again


class ChatRequest(Generating):
    messages: list[ChatMessage] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None

    def tool_setup(self):
        if self.tools and self.format not in (None, ""):
            raise ApiError(400, "format and tools together are not supported: send one or the other")
        return tool_setup(self.tools, None, True)


class GenerateRequest(Generating):
    prompt: str = ""
    system: str | None = None
    images: list[str] | None = None
    raw: bool = False
    suffix: str | None = None
    template: str | None = None
    context: list[int] | None = None

    def check_supported(self) -> None:
        for field, value, why in (
            ("suffix", self.suffix, "fill-in-the-middle is not supported by Gemma 4's chat models"),
            ("template", self.template, "the model's own chat template is always used; send raw: true instead"),
            ("context", self.context, "send the conversation as messages to /api/chat instead"),
        ):
            if value:
                raise ApiError(400, f"{field} is not supported: {why}")
        if self.raw and self.images:
            raise ApiError(400, "images need the chat template: send them without raw: true")


class NameRequest(BaseModel):
    """show, pull, delete: Ollama's clients send `model` (older ones `name`)."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    name: str | None = None
    stream: bool = True

    @property
    def requested(self) -> str:
        value = self.model or self.name
        if not value:
            raise ApiError(400, "model is required")
        return value


def parse_duration(value) -> float | None:
    """Ollama's keep_alive: a number of seconds, or a Go duration ("5m", "1h30m", "-1", "0")."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return -1.0 if value < 0 else float(value)
    text = str(value).strip()
    try:
        number = float(text)
        return -1.0 if number < 0 else number
    except ValueError:
        pass
    if text.startswith("-"):
        return -1.0
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ApiError(400, f'keep_alive {text[:40]!r} is not a duration such as "5m", "30s", -1 or 0')
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * scale[u] for n, u in parts)


def chat_messages(request: ChatRequest) -> list[Message]:
    """Ollama's messages as ours: pictures decoded and sized later, tool calls given ids so each
    `role: tool` answer (by `tool_name`, else by order) folds into the turn that called it."""
    messages: list[dict] = []
    shown = 0
    pending: list[dict] = []  # the last assistant turn's calls not yet answered, in order
    for index, m in enumerate(request.messages):
        param = f"messages[{index}]"
        content = plain_text(m.content or "", f"{param}.content")
        pictures = [decode_image_b64(b64, f"{param}.images[{i}]") for i, b64 in enumerate(m.images or ())]
        if pictures and m.role != "user":
            raise ApiError(400, "images are taken in user messages only")
        shown += len(pictures)
        if shown > MAX_IMAGES:
            raise ApiError(400, f"at most {MAX_IMAGES} images per request; send fewer")
        message = {"role": m.role, "content": content, "tool_calls": None, "tool_call_id": None}
        if pictures:
            message["images"] = [(p, None) for p in pictures]
        if m.role == "assistant" and m.tool_calls:
            calls = enumerate(m.tool_calls)
            message["tool_calls"] = [_call(call, i, f"{param}.tool_calls[{i}]") for i, call in calls]
            pending = list(message["tool_calls"])
        elif m.role == "tool":
            answered = _answered(pending, m.tool_name)
            if answered is None:
                raise ApiError(400, f"{param}: a tool message must follow the assistant message whose call it answers")
            message["tool_call_id"], message["name"] = answered["id"], answered["function"]["name"]
        messages.append(message)
    if not messages:
        raise ApiError(400, "messages is empty")
    merged = merge_tool_turns(messages)
    if not (merged[-1]["role"] == "user" or merged[-1].get("tool_responses")):
        raise ApiError(400, "the last message must be from the user, or a tool's result")
    return merged


def _call(call: dict, index: int, param: str) -> dict:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise ApiError(400, f"{param}: a tool call needs function.name")
    arguments = fn.get("arguments") or {}
    if not isinstance(arguments, dict):
        raise ApiError(400, f"{param}: function.arguments must be an object")
    return {"id": f"call_{index}", "function": {"name": fn["name"], "arguments": arguments}}


def _answered(pending: list[dict], name: str | None) -> dict | None:
    """The call a tool message answers: the first unanswered one with its name, else the next one."""
    for i, call in enumerate(pending):
        if name is None or call["function"]["name"] == name:
            return pending.pop(i)
    return None


def generate_messages(request: GenerateRequest) -> list[Message]:
    pictures = [decode_image_b64(b64, f"images[{i}]") for i, b64 in enumerate(request.images or ())]
    if len(pictures) > MAX_IMAGES:
        raise ApiError(400, f"at most {MAX_IMAGES} images per request; send fewer")
    user: Message = {"role": "user", "content": plain_text(request.prompt, "prompt")}
    if pictures:
        user["images"] = [(p, None) for p in pictures]
    system = [{"role": "system", "content": plain_text(request.system, "system")}] if request.system else []
    return system + [user]


def decode_image_b64(data: str, param: str) -> Picture:
    return decode_base64_image(data, param, what=f"{param} (a base64 image)")


# -- responses --------------------------------------------------------------------------------------


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"


def calls_json(calls) -> list[dict]:
    """Tool calls as Ollama sends them: arguments as an object, not a string."""
    return [{"function": {"name": c.name, "arguments": c.arguments}} for c in calls]


def timings(c: Completion, started: float) -> dict:
    """Ollama's counts and durations (nanoseconds) for a finished reply."""
    ns = 1_000_000_000
    eval_s = c.completion_tokens / c.generation_tps if c.generation_tps else 0.0
    return {
        "done_reason": "length" if c.finish_reason == "length" else "stop",
        "total_duration": int((time.perf_counter() - started) * ns),
        "load_duration": 0,  # the model is loaded before the server answers
        "prompt_eval_count": c.prompt_tokens,
        "prompt_eval_duration": int(c.prompt_seconds * ns),
        "eval_count": c.completion_tokens,
        "eval_duration": int(eval_s * ns),
    }


def chat_line(model: str, content: str = "", calls=(), *, done: bool = False, **extra) -> dict:
    message: dict = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls_json(calls)
    return {"model": model, "created_at": now(), "message": message, "done": done, **extra}


def generate_line(model: str, response: str = "", calls=(), *, done: bool = False, **extra) -> dict:
    """A /api/generate line (`calls` never come: generate offers no tools)."""
    return {"model": model, "created_at": now(), "response": response, "done": done, **extra}
