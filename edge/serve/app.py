"""The HTTP app: the OpenAI-compatible API and Ollama's (ollama_routes.py) on one port, with one
key, one body cap and one queue. The model lives in the worker.

Every failure is an error JSON with its status (400, 401, 404, 413, 422, 503, 500), in OpenAI's shape
under /v1 and Ollama's under /api: never a traceback, never a dropped connection. Nothing a request
says names a path on this machine.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from edge.errors import AudioError, ContextFullError, EdgeError, ImageError, UsageError
from edge.model.reply_events import CallEvent, DoneEvent, ErrorEvent, TextEvent
from edge.serve import openai_api as api
from edge.serve import tasks
from edge.serve.metrics import Metrics
from edge.serve.ollama_routes import add_ollama_routes, error_body
from edge.serve.openai_api import ApiError
from edge.serve.speech import add_speech_route
from edge.serve.worker import Busy, Job, ModelWorker, NotReady
from edge.voice.audio_conversation import language_name

RETRY_AFTER_S = "2"


@dataclass(frozen=True)
class ServeConfig:
    model_name: str
    api_key: str | None = None
    max_body_bytes: int = 50 * 2**20
    max_audio_seconds: float = 600.0
    default_max_tokens: int = 512
    tts: object | None = None  # an audio.tts backend for /v1/audio/speech (None: no voice)
    model_path: Path | None = None  # for Ollama's /api/tags, /api/show and /api/ps
    n_ctx: int = 0  # the context the plan gives the model
    memory_bytes: int = 0  # what the plan's memory check counts for the loaded model


def create_app(worker: ModelWorker, config: ServeConfig, metrics: Metrics | None = None) -> FastAPI:
    metrics = metrics or Metrics()
    app = FastAPI(title="edge-gemma", docs_url=None, redoc_url=None)
    app.state.worker, app.state.config, app.state.metrics = worker, config, metrics
    _add_guards(app, config, metrics)
    _add_status_routes(app, worker, config, metrics)
    _add_model_routes(app, worker, config)
    add_ollama_routes(app, worker, config, _submit, _as_api_error)
    add_speech_route(app, config.tts)
    return app


def _add_guards(app: FastAPI, config: ServeConfig, metrics: Metrics) -> None:
    """Auth and body caps before any parsing; every failure in OpenAI's error shape."""

    @app.middleware("http")
    async def guard(request: Request, call_next):
        """Auth and the body cap before any parsing; a status count after every answer."""
        endpoint = request.url.path
        guarded = endpoint.startswith(("/v1/", "/api/"))
        if guarded and config.api_key and not _authorized(request, config.api_key):
            response = _error(
                ApiError(
                    401,
                    "missing or wrong API key: send Authorization: Bearer <key>",
                    type_="authentication_error",
                    code="invalid_api_key",
                ),
                request,
            )
        elif _declared_length(request) > config.max_body_bytes:
            response = _error(
                ApiError(
                    413, f"the request body is over {config.max_body_bytes // 2**20} MiB", code="request_too_large"
                ),
                request,
            )
        else:
            response = await call_next(request)
        metrics.request(endpoint if endpoint in _KNOWN else "other", response.status_code)
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return _error(exc, request)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(
            ApiError(
                422 if first.get("type") != "json_invalid" else 400,
                f"{where or 'body'}: {first.get('msg', 'invalid request')}",
                param=where or None,
            ),
            request,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(ApiError(exc.status_code, str(exc.detail), type_="invalid_request_error"), request)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception):
        failed = f"the server failed unexpectedly ({type(exc).__name__}); this is a bug"
        return _error(ApiError(500, failed, type_="server_error"), request)


def _add_status_routes(app: FastAPI, worker: ModelWorker, config: ServeConfig, metrics: Metrics) -> None:
    """What a supervisor or a client asks before sending work: health, metrics, the model list."""

    @app.get("/health")
    async def health():
        state = worker.state
        body = {"status": "ready" if state == "ready" else state, "queue_depth": worker.depth}
        if worker.error:
            body["error"] = worker.error
        return JSONResponse(body, status_code=200 if state == "ready" else 503)

    @app.get("/metrics")
    async def prometheus():
        return PlainTextResponse(
            metrics.render(queue_depth=worker.depth, ready=worker.state == "ready"),
            media_type="text/plain; version=0.0.4",
        )

    @app.get("/v1/models")
    async def models():
        return {
            "object": "list",
            "data": [{"id": config.model_name, "object": "model", "created": 0, "owned_by": "edge-gemma"}],
        }


def _add_model_routes(app: FastAPI, worker: ModelWorker, config: ServeConfig) -> None:
    """The endpoints that queue work for the model worker."""

    @app.post("/v1/chat/completions")
    async def chat(body: api.ChatRequest):
        _check_model(body.model, config)
        # Decoding audio and pictures takes a while for a large file: off the event loop.
        messages, audio = await run_in_threadpool(api.parse_messages, body, max_audio_seconds=config.max_audio_seconds)
        tools = body.tool_setup()
        sampling = body.sampling(config.default_max_tokens)
        job = _submit(worker, lambda job: tasks.chat(worker.resources, messages, audio, sampling, job, tools))
        request_id = api.new_id("chatcmpl")
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            return _sse(_chat_events(job, request_id, config.model_name, include_usage))
        result = await _result(job)
        return api.chat_response(result, config.model_name, request_id)

    @app.post("/v1/completions")
    async def completions(body: api.CompletionRequest):
        _check_model(body.model, config)
        sampling = body.sampling(config.default_max_tokens)
        job = _submit(worker, lambda job: tasks.complete(worker.resources, body.prompt, sampling, job))
        request_id = api.new_id("cmpl")
        if body.stream:
            return _sse(_completion_events(job, request_id, config.model_name))
        result = await _result(job)
        return api.completion_response(result, config.model_name, request_id)

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(
        file: UploadFile = File(...),
        model: str | None = Form(None),
        language: str | None = Form(None),
        prompt: str | None = Form(None),
        response_format: str = Form("json"),
        temperature: float = Form(0.0),
    ):
        # Speech clients hard-code OpenAI's "whisper-1": any name is taken here, one model serves.
        if response_format not in ("json", "text", "verbose_json", "srt", "vtt"):
            raise ApiError(400, "response_format must be json, text, verbose_json, srt or vtt", param="response_format")
        pcm = api.decode_audio_bytes(await file.read(), "file", config.max_audio_seconds)
        spoken = language_name(language)
        job = _submit(worker, lambda job: tasks.transcribe(worker.resources, pcm, job, hearing=tasks.Hearing(spoken)))
        result: tasks.Transcript = await _result(job)
        if response_format == "text":
            return PlainTextResponse(result.text + "\n")
        if response_format in ("srt", "vtt"):
            return PlainTextResponse(api.subtitles(result.segments, response_format))
        if response_format == "verbose_json":
            return {
                "task": "transcribe",
                "language": spoken.lower(),
                "duration": round(result.duration, 2),
                "text": result.text,
                "segments": result.segments,
            }
        return {"text": result.text}


_KNOWN = {
    "/health",
    "/metrics",
    "/v1/models",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/audio/transcriptions",
    "/v1/audio/speech",
    "/api/chat",
    "/api/generate",
    "/api/tags",
    "/api/show",
    "/api/ps",
    "/api/pull",
    "/api/version",
}


def _declared_length(request: Request) -> int:
    """The body size the client declares; an unreadable one counts as too big."""
    try:
        return int(request.headers.get("content-length") or 0)
    except ValueError:
        return 1 << 62


def _authorized(request: Request, key: str) -> bool:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


def _check_model(requested: str | None, config: ServeConfig) -> None:
    """One model is served, under the name /v1/models lists; requests never choose a file to load."""
    if requested and requested not in (config.model_name, config.model_name.removesuffix(".gguf")):
        raise ApiError(
            404,
            f"model {requested[:80]!r} is not served here; GET /v1/models lists {config.model_name!r}",
            param="model",
            code="model_not_found",
        )


def _submit(worker: ModelWorker, run) -> Job:
    try:
        return worker.submit(run)
    except Busy as exc:
        raise ApiError(
            503, str(exc), type_="server_error", code="queue_full", headers={"Retry-After": RETRY_AFTER_S}
        ) from None
    except NotReady as exc:
        raise ApiError(
            503, str(exc), type_="server_error", code="model_not_ready", headers={"Retry-After": RETRY_AFTER_S}
        ) from None


async def _result(job: Job):
    try:
        return await job.result()
    except Exception as exc:  # noqa: BLE001  (mapped to a status right here)
        raise _as_api_error(exc) from None


def _as_api_error(exc: Exception) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ContextFullError):
        return ApiError(400, str(exc), code="context_length_exceeded")
    if isinstance(exc, AudioError):
        return ApiError(400, str(exc), code="invalid_audio")
    if isinstance(exc, ImageError):
        return ApiError(400, str(exc), code="invalid_image")
    if isinstance(exc, UsageError):  # e.g. tools for a model whose template has none
        return ApiError(400, str(exc))
    if isinstance(exc, EdgeError):
        return ApiError(500, str(exc), type_="server_error")
    return ApiError(500, f"the model failed unexpectedly ({type(exc).__name__}); this is a bug", type_="server_error")


def _error(exc: ApiError, request: Request) -> JSONResponse:
    """The error in the shape of the API asked: Ollama's under /api, OpenAI's elsewhere."""
    if request.url.path.startswith("/api/"):
        return error_body(exc)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def _sse(events: AsyncIterator[dict | str]) -> StreamingResponse:
    async def encode():
        async for event in events:
            yield f"data: {event if isinstance(event, str) else json.dumps(event)}\n\n"

    return StreamingResponse(encode(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _chat_events(job: Job, request_id: str, model: str, include_usage: bool):
    yield api.chat_chunk(model, request_id, role="assistant", content="")
    calls = 0
    async for event in job.stream():
        match event:
            case TextEvent(text) if text:
                yield api.chat_chunk(model, request_id, content=text)
            case CallEvent(call):  # a whole call at once: it is only sent once it parsed
                yield api.chat_chunk(model, request_id, tool_call=(calls, call))
                calls += 1
            case ErrorEvent(error):
                yield _as_api_error(error).body()  # the status is already sent: the error goes in the stream
            case DoneEvent(result):
                yield api.chat_chunk(model, request_id, finish_reason=result.finish_reason)
                if include_usage:
                    chunk = api.chat_chunk(model, request_id, usage_=api.usage(result))
                    chunk["choices"] = []
                    yield chunk
    yield "[DONE]"


async def _completion_events(job: Job, request_id: str, model: str):
    async for event in job.stream():
        match event:
            case TextEvent(text) if text:
                yield api.completion_chunk(model, request_id, text)
            case ErrorEvent(error):
                yield _as_api_error(error).body()
            case DoneEvent(result):
                yield api.completion_chunk(model, request_id, "", result.finish_reason)
    yield "[DONE]"
