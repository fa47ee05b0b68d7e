"""The Ollama API on serve's port, beside the OpenAI one: the same worker, queue, key and limits.

Home Assistant's Ollama integration lists models (/api/tags), pulls the one chosen when it is not
listed, then chats with `stream: true`, HA's tools and `keep_alive`; Open WebUI and the `ollama`
package use the rest. One model is served: the names it answers to are its file's and the ones
Ollama users type (`gemma4`, `gemma4:e2b`, ...). keep_alive is accepted, but the model stays loaded
for the server's life (loading it again costs seconds to minutes on a small board).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from edge.model.reply_events import CallEvent, DoneEvent, ErrorEvent, TextEvent
from edge.serve import ollama_api as api
from edge.serve import tasks
from edge.serve.api_error import ApiError
from edge.serve.worker import Job, ModelWorker

log = logging.getLogger(__name__)
FOREVER = "2318-01-01T00:00:00Z"  # Ollama's own expires_at for keep_alive -1


def served_names(model_name: str) -> list[str]:
    """The names the served model answers to; the first is the one /api/tags lists."""
    stem = model_name.removesuffix(".gguf")
    size = re.search(r"(?<![a-z0-9])e([24])b(?![a-z0-9])", stem.lower())
    if size is None or "gemma-4" not in stem.lower() and "gemma4" not in stem.lower():
        return [stem, model_name]
    alias = f"gemma4:e{size.group(1)}b"
    return [alias, "gemma4", "gemma4:latest", stem, model_name]


def add_ollama_routes(app: FastAPI, worker: ModelWorker, config, submit, error_status) -> None:
    """`submit(worker, run)` and `error_status(exc)` are the OpenAI app's: the same queue and 503s."""
    names = served_names(config.model_name)
    listed = names[0]

    def check(requested: str) -> None:
        if requested not in names and requested.removesuffix(":latest") not in names:
            raise ApiError(404, f'model "{requested[:80]}" not found, try pulling it first')

    noted: set[str] = set()

    def note_once(message: str) -> None:
        """Said once per server, on stderr: Home Assistant sends the same options with every request."""
        if message not in noted:
            noted.add(message)
            log.warning("%s", message)

    def note_options(body: api.Generating) -> None:
        asked, have = body.options.num_ctx, config.n_ctx
        if asked and have and asked != have:
            note_once(f"note: num_ctx {asked} asked; this server's context is {have} tokens (its plan, or --ctx)")
        if body.keep_alive_seconds() == 0:
            note_once("note: keep_alive 0 asked; the model stays loaded for the server's life")

    @app.get("/")
    @app.head("/")
    async def running():
        return PlainTextResponse("Ollama is running")

    @app.get("/api/version")
    async def version():
        return {"version": api.API_VERSION}

    @app.get("/api/tags")
    async def tags():
        return {"models": [await run_in_threadpool(_model_entry, listed, config)]}

    @app.get("/api/ps")
    async def ps():
        if worker.state != "ready":
            return {"models": []}
        entry = await run_in_threadpool(_model_entry, listed, config)
        entry |= {"expires_at": FOREVER, "size_vram": 0, "context_length": config.n_ctx or None}
        entry["size"] = config.memory_bytes or entry["size"]
        return {"models": [entry]}

    @app.post("/api/show")
    async def show(body: api.NameRequest):
        check(body.requested)
        return await run_in_threadpool(_show, config, worker)

    @app.post("/api/pull")
    async def pull(body: api.NameRequest):
        from edge.serve.ollama_pull import pull_lines

        requested = body.requested
        if requested in names or requested.removesuffix(":latest") in names:
            lines = _served_already()
        else:
            lines = pull_lines(requested)
        if body.stream:
            return _ndjson(lines)
        last = None
        async for line in lines:
            if "error" in line:
                raise ApiError(500, line["error"])
            last = line
        return last

    @app.post("/api/embed")
    @app.post("/api/embeddings")
    async def embed():
        raise ApiError(
            501, "embeddings are not supported: Gemma 4 edge models are not embedding models; serve one with Ollama"
        )

    @app.post("/api/chat")
    async def chat(body: api.ChatRequest):
        check(body.model)
        note_options(body)
        if not body.messages:  # Ollama's "load the model" request
            return api.chat_line(body.model, done=True, done_reason=_load_reason(body))
        messages = await run_in_threadpool(api.chat_messages, body)
        tools, sampling = body.tool_setup(), body.sampling(config.default_max_tokens)
        started = time.perf_counter()
        job = submit(worker, lambda job: tasks.chat(worker.resources, messages, None, sampling, job, tools))
        line = functools.partial(api.chat_line, body.model)
        lines = _lines(job, line, started, error_status, body.stream)
        return _ndjson(lines) if body.stream else await _last(lines, "message")

    @app.post("/api/generate")
    async def generate(body: api.GenerateRequest):
        check(body.model)
        body.check_supported()
        note_options(body)
        if not body.prompt and not body.images:
            return api.generate_line(body.model, done=True, done_reason=_load_reason(body))
        sampling = body.sampling(config.default_max_tokens)
        started = time.perf_counter()
        if body.raw:
            run = lambda job: tasks.complete(worker.resources, body.prompt, sampling, job)  # noqa: E731
        else:
            messages = await run_in_threadpool(api.generate_messages, body)
            run = lambda job: tasks.chat(worker.resources, messages, None, sampling, job)  # noqa: E731
        line = functools.partial(api.generate_line, body.model)
        lines = _lines(submit(worker, run), line, started, error_status, body.stream)
        return _ndjson(lines) if body.stream else await _last(lines, "response")


def _model_entry(name: str, config) -> dict:
    path: Path | None = config.model_path
    details = _header(str(path))["details"] if path is not None else {}
    size = path.stat().st_size if path is not None and path.is_file() else 0
    modified = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(path.stat().st_mtime)) if size else api.now()
    return {
        "name": name,
        "model": name,
        "modified_at": modified,
        "size": size,
        "digest": _digest(str(path)) if size else "",
        "details": details,
    }


@functools.cache
def _header(path: str) -> dict:
    """What the served file's GGUF header tells Ollama's clients, read once (the header holds the whole
    vocabulary: megabytes): `details` for tags/ps/show, the chat template and scalar metadata for show."""
    from edge.model.gguf import inspect_gguf

    info = inspect_gguf(Path(path))
    quant = re.search(r"(?i)(IQ\d\w*|Q\d(?:_[A-Z0-9]+)*|BF16|F16|F32)", Path(path).name)
    parameters = sum(math.prod(t.shape) for t in info.tensors)
    scalar = (int, float, str)
    metadata = {k: v for k, v in info.metadata.items() if isinstance(v, scalar) and not k.startswith("tokenizer")}
    return {
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": info.architecture,
            "families": [info.architecture],
            "parameter_size": f"{parameters / 1e9:.1f}B" if parameters >= 1e9 else f"{parameters / 1e6:.0f}M",
            "quantization_level": quant.group(1).upper() if quant else "",
        },
        "template": info.chat_template or "",
        "model_info": metadata,
    }


@functools.cache
def _digest(path: str) -> str:
    """A stable name for the file (Ollama's digest is a content hash; hashing GBs per request is not)."""
    import hashlib

    p = Path(path)
    return hashlib.sha256(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}".encode()).hexdigest()


def _show(config, worker: ModelWorker) -> dict:
    path: Path | None = config.model_path
    header = _header(str(path)) if path is not None else {"details": {}, "template": "", "model_info": {}}
    projector = getattr(worker.resources, "projector", None)
    capabilities = ["completion"]
    if "tool" in header["template"]:
        capabilities.append("tools")
    if projector is not None and projector.supports_vision:
        capabilities.append("vision")
    if projector is not None and projector.supports_audio:
        capabilities.append("audio")
    return {
        "modelfile": f"# served by edge-gemma\nFROM {path.name if path else config.model_name}\n",
        "parameters": f"num_ctx {config.n_ctx}\ntemperature 1\ntop_k 64\ntop_p 0.95",
        "template": header["template"],
        "details": header["details"],
        "model_info": header["model_info"],
        "capabilities": capabilities,
        "modified_at": _model_entry("", config)["modified_at"],
    }


def _load_reason(body: api.Generating) -> str:
    return "unload" if body.keep_alive_seconds() == 0 else "load"


async def _served_already() -> AsyncIterator[dict]:
    for status in ("pulling manifest", "verifying sha256 digest", "writing manifest", "success"):
        yield {"status": status}


async def _lines(job: Job, line, started: float, error_status, streamed: bool) -> AsyncIterator[dict]:
    """The job's events as Ollama's lines: `line(text, calls, done=..., **counts)` shapes each one
    (api.chat_line, or api.generate_line, which has no calls)."""
    async for event in job.stream():
        match event:
            case TextEvent(text) if text:
                yield line(text)
            case CallEvent(call):
                yield line("", [call])
            case ErrorEvent(error):
                yield _failed(error_status(error), streamed)
            case DoneEvent(result):
                yield line(done=True, **api.timings(result, started))


def _failed(error: ApiError, streamed: bool) -> dict:
    """A failed reply: a whole one is answered with the error's status; a streamed one has sent its
    status already, so the error goes in the stream (the `ollama` client raises it)."""
    if not streamed:
        raise error
    return {"error": error.message}


async def _last(lines: AsyncIterator[dict], field: str) -> dict:
    """A whole reply (stream: false): the pieces joined into the last line."""
    text, calls, last = "", [], None
    async for line in lines:
        if field == "message":
            text += line["message"]["content"]
            calls += line["message"].get("tool_calls", [])
        else:
            text += line["response"]
        last = line
    if field == "message":
        last["message"]["content"] = text
        if calls:
            last["message"]["tool_calls"] = calls
    else:
        last["response"] = text
    return last


def _ndjson(lines: AsyncIterator[dict]) -> StreamingResponse:
    async def encode():
        async for line in lines:
            yield json.dumps(line) + "\n"

    return StreamingResponse(encode(), media_type="application/x-ndjson")


def error_body(exc: ApiError) -> JSONResponse:
    """Ollama's error shape: {"error": "..."} with the status."""
    return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)
