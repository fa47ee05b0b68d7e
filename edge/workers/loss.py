"""When a worker stops answering mid-reply, llama.cpp's RPC client aborts the process that used it.

That cannot be caught in-process, so the crash guard (cli/crash_report.py), which already runs every
command in a forked child, is told which workers the child loaded layers onto (a small file named
in the environment). After a native crash it asks those workers: one that no longer answers is named
in the one-line error, and the long-running commands (serve, wyoming, voice) start again: on the
worker when it is back, on this board alone when the model fits, else they wait for it.
"""

from __future__ import annotations

import os
from pathlib import Path

from edge.workers.probe import EXIT_WORKER_UNREACHABLE, WorkerError, probe

__all__ = ["EXIT_WORKER_UNREACHABLE", "mark_in_use", "marked", "restarted", "unreachable"]

MARK_ENV = "EDGE_GEMMA_WORKERS_MARK"  # set by the crash guard: where a child lists its workers
RESTARTED_ENV = "EDGE_GEMMA_RESTARTED"  # set by the crash guard on a child started again after a loss


def mark_in_use(endpoints: list[str]) -> None:
    path = os.environ.get(MARK_ENV)
    if path:
        try:
            Path(path).write_text("\n".join(endpoints) + "\n")
        except OSError:
            pass  # the crash line loses the worker's name, nothing else


def marked(path: Path | None) -> list[str]:
    try:
        return path.read_text().split() if path else []
    except OSError:
        return []


def unreachable(endpoints: list[str]) -> list[str]:
    """The workers among `endpoints` that do not answer a handshake now."""
    lost = []
    for endpoint in endpoints:
        try:
            probe(endpoint, timeout=2.0)
        except WorkerError:
            lost.append(endpoint)
    return lost


def restarted() -> bool:
    return os.environ.get(RESTARTED_ENV) == "1"
