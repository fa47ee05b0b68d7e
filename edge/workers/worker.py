"""`edge-gemma worker`: lend this board's memory and CPU to another board's model (llama.cpp RPC).

llama.cpp's RPC server runs in this process on a loopback port (ggml's C API, the same build the rest
of edge-gemma uses: no second binary to build or keep in step), and the gate (gate.py) is the only
thing listening on --host. With --cache, llama.cpp keeps the tensors it was sent, by hash, so a
client's next load sends hashes instead of weights.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge.device.linux import read_memory
from edge.errors import UsageError
from edge.model.rpc import PROTOCOL_MAJOR, PROTOCOL_MINOR, require_rpc, serve_forever
from edge.network import is_loopback
from edge.workers.gate import Gate, parse_allow

DEFAULT_PORT = 50052
INSECURE_NOTE = (
    "llama.cpp's RPC traffic is neither authenticated nor encrypted: keep workers on a trusted LAN "
    "(or tunnel it), and --allow only the boards that use them"
)


@dataclass(frozen=True)
class WorkerOptions:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    threads: int = 0  # 0: every core
    cache: Path | None = None
    memory_bytes: int = 0  # 0: what is free at start
    allow: str | None = None
    announce: bool = True
    llama_log: bool = False


def allowed_networks(options: WorkerOptions) -> tuple:
    """--allow's networks; refused, before anything starts, when the worker would listen beyond
    loopback with none."""
    networks = parse_allow(options.allow)
    if not is_loopback(options.host) and not networks:
        raise UsageError(
            f"listening on {options.host} lets other machines in: name them with --allow CIDR[,...] "
            "(e.g. --allow 192.168.1.0/24), since llama.cpp's RPC has no authentication"
        )
    return networks


def run_worker(options: WorkerOptions, log: Callable[[str], None]) -> None:
    """Serve until killed."""
    require_rpc("edge-gemma worker")
    gate_allow = allowed_networks(options)
    threads = options.threads or os.cpu_count() or 1
    offered = options.memory_bytes or _free_memory()
    inner = _free_loopback_port()
    if options.cache:
        options.cache.mkdir(parents=True, exist_ok=True)
    gate = Gate(options.host, options.port, ("127.0.0.1", inner), gate_allow, log)  # a taken port fails first
    if not options.llama_log:
        _quiet_stdout()  # llama.cpp prints every connection on stdout; the gate logs them once, with names
    server = threading.Thread(
        target=serve_forever, args=(f"127.0.0.1:{inner}", threads, options.cache), daemon=True, name="rpc-server"
    )
    server.start()
    _wait_listening(inner, server)
    allowed = ", ".join(str(n) for n in gate_allow) or "loopback only"
    log(
        f"worker on {options.host}:{gate.port} (llama.cpp RPC {PROTOCOL_MAJOR}.{PROTOCOL_MINOR}, CPU, "
        f"{threads} threads, {offered / 1e9:.1f} GB offered"
        + (f", tensor cache {options.cache}" if options.cache else "")
        + f"); allowed: {allowed}"
    )
    log(INSECURE_NOTE)
    announcement = None
    if options.announce and not is_loopback(options.host):
        from edge.workers.discovery import announce

        announcement = announce(options.host, gate.port, offered, threads, log)
    try:
        gate.serve_forever()
    finally:
        if announcement is not None:
            announcement.close()


def _free_memory() -> int:
    """MemAvailable, or less when this process sits in a memory cgroup (a board-sized test, a service)."""
    _, available, _ = read_memory(Path("/"))
    room = _cgroup_room()
    return min(available, room) if available and room else available or room


def _cgroup_room() -> int:
    """Limit less usage of this process's memory cgroup (v1 or v2); 0 when unlimited or unknown."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2
            base = Path("/sys/fs/cgroup") / path.lstrip("/")
            limit_file, usage_file = base / "memory.max", base / "memory.current"
        elif "memory" in controllers.split(","):
            base = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            limit_file, usage_file = base / "memory.limit_in_bytes", base / "memory.usage_in_bytes"
        else:
            continue
        try:
            limit, usage = limit_file.read_text().strip(), int(usage_file.read_text())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:
            return max(int(limit) - usage, 0)
    return 0


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, server: threading.Thread, timeout: float = 30.0) -> None:
    """Until llama.cpp's server accepts on `port` (it prints why on stderr if it cannot)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.is_alive():
            raise UsageError(f"llama.cpp's RPC server could not start on 127.0.0.1:{port}; run the worker again")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise UsageError(f"llama.cpp's RPC server did not start within {timeout:.0f} s; run the worker again")


def _quiet_stdout() -> None:
    """Send file descriptor 1 (C's printf) to /dev/null; Python's own output goes to stderr here."""
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
