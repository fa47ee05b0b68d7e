"""The OpenAI API's request and response shapes, and the checks between them and the model.

Requests are parsed with pydantic (what FastAPI validates with); everything the model will see is
checked here, on the HTTP side, before a job is queued: bad parts, bad base64, audio that is not
audio or is too long all become an `ApiError` with OpenAI's error shape and a 4xx status.
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge.audio.files import decode_audio
from edge.audio_format import SAMPLE_RATE
from edge.errors import AudioError, ImageError
from edge.model.chat_format import Message
from edge.model.engine import GEMMA_SAMPLING, Sampling
from edge.model.json_output import ANY_OBJECT, SchemaError, json_grammar
from edge.serve.api_error import ApiError
from edge.serve.openai_tools import calls_json, merge_tool_turns, tool_setup
from edge.serve.tasks import Completion
from edge.vision.images import IMAGE_TOKEN_BUDGETS, MAX_IMAGE_BYTES, Picture, decode_image

AUDIO_FORMATS = ("wav", "mp3", "flac")
MAX_IMAGES = 8  # per request: each is a vision-encoder run, seconds to minutes on a small board
LOW_DETAIL_TOKENS = IMAGE_TOKEN_BUDGETS[0]
MEDIA_MARKER = "<__media__>"  # libmtmd's default marker (mtmd_default_marker)


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send fields we do not use (user, n=1, ...)

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1, le=32768)
    temperature: float | None = Field(None, ge=0.0, le=2.0)  # None: Gemma's recommended sampling
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False

    def sampling(self, default_max_tokens: int) -> Sampling:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return GEMMA_SAMPLING.with_(
            max_tokens=self.max_tokens or default_max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            stop=tuple(s for s in stop if s),
        )


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[dict[str, Any]] | None = None  # an assistant turn that called tools
    tool_call_id: str | None = None  # a tool message: which call it answers
    name: str | None = None


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=32768)
    stream_options: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None

    def tool_setup(self):
        """The tools and how they may be called (None: no tools); bad schemas are a 400."""
        return tool_setup(self.tools, self.tool_choice, self.parallel_tool_calls)

    def sampling(self, default_max_tokens: int) -> Sampling:
        sampling = super().sampling(self.max_completion_tokens or default_max_tokens)
        return sampling.with_(grammar=self.output_grammar())

    def output_grammar(self):
        """response_format: text, json_object (any object) or json_schema (one that validates)."""
        kind = (self.response_format or {}).get("type", "text")
        if kind == "text":
            return None
        if self.tools:
            raise ApiError(400, "response_format and tools together are not supported", param="response_format")
        if kind == "json_object":
            return json_grammar(ANY_OBJECT)
        spec = self.response_format.get("json_schema")
        if kind != "json_schema" or not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise ApiError(
                400,
                'response_format must be {"type": "text"}, {"type": "json_object"} or '
                '{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}',
                param="response_format",
            )
        try:
            return json_grammar(spec["schema"])
        except SchemaError as exc:
            raise ApiError(400, str(exc), param="response_format.json_schema.schema") from None


class CompletionRequest(_Request):
    prompt: str


def parse_messages(request: ChatRequest, *, max_audio_seconds: float) -> tuple[list[Message], np.ndarray | None]:
    """Our messages, and the audio of the last user message (16 kHz mono) if it has any. A user
    message's pictures go in its "images": (Picture, image tokens or None for the server's budget)."""
    messages: list[dict] = []
    audio: np.ndarray | None = None
    shown = 0
    for index, message in enumerate(request.messages):
        role = "system" if message.role == "developer" else message.role
        param = f"messages[{index}].content"
        text, clips, pictures = _content(message.content, param, max_audio_seconds)
        if pictures and role != "user":
            raise ApiError(400, "images are taken in user messages only", param=param)
        shown += len(pictures)
        if shown > MAX_IMAGES:
            raise ApiError(400, f"at most {MAX_IMAGES} images per request; send fewer", param=param)
        if clips and (index != len(request.messages) - 1 or role != "user"):
            raise ApiError(
                400,
                "audio is taken in the last user message only; send earlier turns as text",
                param=f"messages[{index}].content",
            )
        if clips:
            audio = np.concatenate(clips)
            if len(audio) / SAMPLE_RATE > max_audio_seconds:
                raise ApiError(
                    413,
                    f"the audio is {len(audio) / SAMPLE_RATE:.0f} s; this server takes at most "
                    f"{max_audio_seconds:.0f} s per request",
                    param=f"messages[{index}].content",
                    code="audio_too_long",
                )
        messages.append(
            {"role": role, "content": text, "tool_calls": message.tool_calls, "tool_call_id": message.tool_call_id}
            | ({"images": pictures} if pictures else {})
        )
    merged = merge_tool_turns(messages)
    if not (merged[-1]["role"] == "user" or merged[-1].get("tool_responses")):
        raise ApiError(400, "the last message must be from the user, or a tool's result", param="messages")
    return merged, audio


def _content(content, param: str, max_audio_seconds: float) -> tuple[str, list[np.ndarray], list]:
    if content is None or isinstance(content, str):
        return plain_text(content or "", param), [], []
    texts, clips, pictures = [], [], []
    for i, part in enumerate(content):
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(plain_text(part["text"], f"{param}[{i}]"))
        elif kind == "input_audio" and isinstance(part.get("input_audio"), dict):
            clips.append(decode_input_audio(part["input_audio"], f"{param}[{i}]", max_audio_seconds))
        elif kind == "image_url" and isinstance(part.get("image_url"), dict | str):
            pictures.append(decode_image_url(part["image_url"], f"{param}[{i}]"))
        else:
            raise ApiError(
                400,
                f"content part of type {kind!r} is not understood; use text, image_url or input_audio",
                param=f"{param}[{i}]",
            )
    return "\n".join(texts), clips, pictures


def plain_text(text: str, param: str) -> str:
    """Text as the user wrote it: the projector's media marker would be taken for a picture."""
    if MEDIA_MARKER in text:
        raise ApiError(400, f"text may not contain {MEDIA_MARKER!r} (it marks where media goes)", param=param)
    return text


def decode_image_url(part: dict | str, param: str) -> tuple[Picture, int | None]:
    """An image_url part: a data: URL's picture, and its budget (detail "low": the smallest)."""
    url = part if isinstance(part, str) else part.get("url")
    detail = None if isinstance(part, str) else part.get("detail")
    if not isinstance(url, str) or not url:
        raise ApiError(400, "image_url needs a url: data:image/png;base64,...", param=param)
    if not url.startswith("data:"):
        raise ApiError(
            400,
            "this server never fetches URLs: send the image's bytes as a data URL (data:image/jpeg;base64,...)",
            param=param,
            code="image_url_not_fetched",
        )
    header, comma, data = url.partition(",")
    if not comma or not header.endswith(";base64") or not header[5:].startswith("image/"):
        raise ApiError(400, "an image data URL must be data:image/<type>;base64,<bytes>", param=param)
    picture = decode_base64_image(data, param, what="the image data URL")
    if detail not in (None, "auto", "low", "high"):
        raise ApiError(400, "image_url detail must be low, high or auto", param=param)
    # "high" gets the server's budget, never more: on a small board the operator sets the cost.
    return picture, LOW_DETAIL_TOKENS if detail == "low" else None


def decode_base64_image(data: str, param: str, *, what: str) -> Picture:
    """A picture sent as base64 (OpenAI's data URLs, Ollama's `images`): too big a 413, bad base64 or a
    picture that does not decode a 400."""
    if len(data) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise ApiError(
            413, f"{what} is over {MAX_IMAGE_BYTES >> 20} MiB; shrink it", param=param, code="image_too_large"
        )
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{what} is not valid base64", param=param) from None
    try:
        return decode_image(raw, name=what)
    except ImageError as exc:
        raise ApiError(400, str(exc), param=param, code="invalid_image") from None


def decode_input_audio(part: dict, param: str, max_audio_seconds: float) -> np.ndarray:
    fmt, data = part.get("format"), part.get("data")
    if fmt not in AUDIO_FORMATS:
        raise ApiError(400, f"input_audio format must be one of {', '.join(AUDIO_FORMATS)}", param=param)
    if not isinstance(data, str) or not data:
        raise ApiError(400, "input_audio data is empty; send the file as base64", param=param)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "input_audio data is not valid base64", param=param) from None
    return decode_audio_bytes(raw, param, max_audio_seconds)


def decode_audio_bytes(raw: bytes, param: str, max_audio_seconds: float) -> np.ndarray:
    try:
        return decode_audio(raw, name="the audio", max_seconds=max_audio_seconds)
    except AudioError as exc:
        status, code = (413, "audio_too_long") if " s long, over the " in str(exc) else (400, None)
        raise ApiError(status, f"{exc}", param=param, code=code) from None


# -- responses --------------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(c: Completion) -> dict:
    details = {"cached_tokens": c.prompt_reused}
    if c.image_tokens:
        details["image_tokens"] = c.image_tokens  # not in OpenAI's shape (which counts no images): ours
    return {
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "total_tokens": c.prompt_tokens + c.completion_tokens,
        "prompt_tokens_details": details,
    }


def chat_response(c: Completion, model: str, request_id: str) -> dict:
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": _assistant_message(c), "finish_reason": c.finish_reason}],
        "usage": usage(c),
    }


def _assistant_message(c: Completion) -> dict:
    message = {"role": "assistant", "content": c.text if c.text or not c.tool_calls else None}
    if c.tool_calls:
        message["tool_calls"] = calls_json(c.tool_calls)
    return message


def chat_chunk(
    model: str,
    request_id: str,
    *,
    content: str | None = None,
    role: str | None = None,
    tool_call: tuple[int, object] | None = None,
    finish_reason: str | None = None,
    usage_: dict | None = None,
) -> dict:
    """One streamed chunk; `tool_call` (index, ToolCall) is sent whole, in OpenAI's delta shape."""
    delta = {k: v for k, v in (("role", role), ("content", content)) if v is not None}
    if tool_call is not None:
        index, call = tool_call
        delta["tool_calls"] = [{"index": index, **calls_json([call])[0]}]
    chunk = {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    if usage_ is not None:
        chunk["usage"] = usage_
    return chunk


def completion_response(c: Completion, model: str, request_id: str) -> dict:
    return {
        "id": request_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": c.text, "finish_reason": c.finish_reason, "logprobs": None}],
        "usage": usage(c),
    }


def completion_chunk(model: str, request_id: str, text: str, finish_reason: str | None = None) -> dict:
    return {
        "id": request_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}],
    }


def subtitles(segments: list[dict], fmt: str) -> str:
    """SRT or WebVTT from transcript segments."""

    def stamp(seconds: float, sep: str) -> str:
        ms = int(round(seconds * 1000))
        return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"

    if fmt == "srt":
        return "\n".join(
            f"{i + 1}\n{stamp(s['start'], ',')} --> {stamp(s['end'], ',')}\n{s['text']}\n"
            for i, s in enumerate(segments)
        )
    return "WEBVTT\n\n" + "\n".join(
        f"{stamp(s['start'], '.')} --> {stamp(s['end'], '.')}\n{s['text']}\n" for s in segments
    )
