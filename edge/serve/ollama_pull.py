"""Ollama's /api/pull: the names Ollama users type, fetched by setup's planner and downloader.

`gemma4:e2b` and `gemma4:e4b` pick the model; `gemma4` (or `:latest`) lets this device's profile
choose, as `edge-gemma setup` does. The planned files (the model and its projector, in the quant the
board fits) are downloaded and verified into the same cache setup uses, with progress as Ollama's
NDJSON status lines. A pull fetches files; it does not change the model this server is serving
(`edge-gemma setup` then a restart does).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from edge.errors import EdgeError

PULLABLE = {"gemma4": None, "gemma4:latest": None, "gemma4:e2b": "e2b", "gemma4:e4b": "e4b"}
NOT_FOUND = "pull model manifest: file does not exist"  # Ollama's words for a name it does not know


async def pull_lines(name: str) -> AsyncIterator[dict]:
    """Ollama's pull status lines for `name`, ending in {"status": "success"} or {"error": ...}."""
    if name not in PULLABLE:
        yield {"error": f"{NOT_FOUND} ({name[:80]!r}: this server pulls {', '.join(PULLABLE)})"}
        return
    yield {"status": "pulling manifest"}
    loop, lines = asyncio.get_running_loop(), asyncio.Queue()

    def say(line: dict) -> None:
        loop.call_soon_threadsafe(lines.put_nowait, line)

    task = asyncio.create_task(asyncio.to_thread(_download, PULLABLE[name], say))
    while not (task.done() and lines.empty()):
        getter = asyncio.create_task(lines.get())
        done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            yield getter.result()
        else:
            getter.cancel()
    try:
        task.result()
    except EdgeError as exc:
        yield {"error": str(exc)}
        return
    for status in ("verifying sha256 digest", "writing manifest", "success"):
        yield {"status": status}


def _download(model: str | None, say) -> None:
    """On a thread: plan for this device, then fetch and verify each planned file, reporting its bytes."""
    from edge.setup.steps import download_plan, propose

    proposal = propose("auto", model=model)
    if proposal.hub_error is not None:
        raise proposal.hub_error

    pulled = []

    def reporter(remote):
        digest = f"sha256:{remote.sha256}" if remote.sha256 else remote.name
        line = {"status": f"pulling {digest.removeprefix('sha256:')[:12]}", "digest": digest, "total": remote.size}
        pulled.append(line)
        got = 0
        say({**line, "completed": 0})

        def heard(n: int) -> None:
            nonlocal got
            got += n
            say({**line, "completed": got})

        return heard

    download_plan(proposal.plan, proposal.listings, progress=False, reporter=reporter)
    for line in pulled:  # each file whole and verified (a cached one reports nothing on the way)
        say({**line, "completed": line["total"]})
