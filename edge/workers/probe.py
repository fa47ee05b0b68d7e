"""Ask a worker, before any layer is sent, whether it can take them: llama.cpp's own RPC messages.

llama.cpp's RPC client ends the whole process when a worker cannot be reached or speaks another
protocol version, so every worker is asked here first, in Python, with a timeout: HELLO (the
protocol version), DEVICE_COUNT and GET_DEVICE_MEMORY, as ggml-rpc.cpp frames them
(request: command byte, u64 size, payload; response: u64 size, payload; little-endian).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from edge.errors import UsageError
from edge.model.rpc import PROTOCOL_MAJOR, PROTOCOL_MINOR

CMD_GET_DEVICE_MEMORY, CMD_HELLO, CMD_DEVICE_COUNT = 11, 14, 15
CONN_CAPS = 24  # RPC_CONN_CAPS_SIZE: transport capabilities; all zero asks for plain TCP
PROBE_TIMEOUT_S = 5.0
EXIT_WORKER_UNREACHABLE = 75  # EX_TEMPFAIL: a worker could not be reached; trying later may work


class WorkerError(UsageError):
    """A worker that cannot take layers: unreachable, another protocol version, short of memory."""

    exit_code = 1

    def __init__(self, message: str, endpoint: str = ""):
        super().__init__(message)
        self.endpoint = endpoint


class WorkerUnreachable(WorkerError):
    """No answer: the worker is down, busy with another client, or its --allow refuses this machine."""

    exit_code = EXIT_WORKER_UNREACHABLE


@dataclass(frozen=True)
class WorkerInfo:
    endpoint: str  # "host:port"
    version: tuple[int, int, int]  # the RPC protocol it speaks
    devices: int
    free_bytes: int  # device 0's free memory as the worker reports it
    total_bytes: int


def parse_endpoint(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"worker {text!r} is not HOST:PORT (e.g. 192.168.1.20:50052)")
    return host.strip("[]"), int(port)


def probe(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> WorkerInfo:
    """What the worker at `endpoint` serves; WorkerError in one line naming it when it cannot take layers."""
    host, port = parse_endpoint(endpoint)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            major, minor, patch = _hello(sock)
            if major != PROTOCOL_MAJOR or minor > PROTOCOL_MINOR:
                raise WorkerError(
                    f"the worker at {endpoint} speaks llama.cpp RPC {major}.{minor}.{patch} and this build "
                    f"{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}: run the same edge-gemma (llama-cpp-python) on both",
                    endpoint,
                )
            (devices,) = struct.unpack("<I", _call(sock, CMD_DEVICE_COUNT, b"", 4))
            if devices < 1:
                raise WorkerError(
                    f"the worker at {endpoint} serves no device; restart it (edge-gemma worker)", endpoint
                )
            free, total = struct.unpack("<QQ", _call(sock, CMD_GET_DEVICE_MEMORY, struct.pack("<I", 0), 16))
    except TimeoutError:
        raise WorkerUnreachable(
            f"the worker at {endpoint} did not answer within {timeout:.0f} s (it serves one client at a time: "
            "is another machine using it?)",
            endpoint,
        ) from None
    except (ConnectionError, OSError) as exc:
        reason = str(exc) if isinstance(exc, _Closed) else (exc.strerror or type(exc).__name__)
        raise WorkerUnreachable(
            f"cannot reach the worker at {endpoint} ({reason}): is `edge-gemma worker` running there, "
            "and does its --allow include this machine?",
            endpoint,
        ) from None
    return WorkerInfo(endpoint, (major, minor, patch), devices, free, total)


class _Closed(ConnectionError):
    pass


def _hello(sock: socket.socket) -> tuple[int, int, int]:
    reply = _call(sock, CMD_HELLO, bytes(CONN_CAPS), None)
    if len(reply) < 3:
        raise _Closed("its HELLO answer is too short: not a llama.cpp RPC server")
    return reply[0], reply[1], reply[2]


def _call(sock: socket.socket, command: int, payload: bytes, expect: int | None) -> bytes:
    sock.sendall(struct.pack("<BQ", command, len(payload)) + payload)
    (size,) = struct.unpack("<Q", _read(sock, 8))
    if size > 1 << 16 or (expect is not None and size != expect):
        raise _Closed(f"answered command {command} with {size} bytes: not a llama.cpp RPC server of this version")
    return _read(sock, size)


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise _Closed("it closed the connection: refused by its --allow, or another RPC version")
        data += chunk
    return data
