"""The worker's front door: peers outside --allow are closed before a byte reaches llama.cpp.

llama.cpp's RPC server has no authentication, and malformed messages have been security bugs, so it
listens on loopback only and this gate, on the address the user chose, admits a connection only
from an allowed network, then pipes bytes both ways unchanged. It logs who came, who was refused,
and how many bytes each connection moved (the link's cost per token, in bench).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Sequence

from edge.errors import UsageError

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
_CHUNK = 1 << 20
# A client's load opens several short connections (device count, memory, alignment) before the one
# that carries the layers: a peer is logged when it comes back after QUIET_S, and a connection when it
# ends having moved at least WORTH_LOGGING bytes.
QUIET_S = 30.0
WORTH_LOGGING = 64 << 10


def parse_allow(text: str | None) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """--allow "192.168.1.0/24,10.0.0.5" as networks (a bare address is a /32 or /128)."""
    networks = []
    for part in (text or "").split(","):
        if part.strip():
            try:
                networks.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError:
                raise UsageError(
                    f"--allow {part.strip()!r} is not an address or network (e.g. 192.168.1.0/24)"
                ) from None
    return tuple(networks)


class Gate:
    """Accepts on (host, port); admits peers in `allowed` (loopback always) and pipes them to `upstream`."""

    def __init__(self, host: str, port: int, upstream: tuple[str, int], allowed: Sequence, log: Callable[[str], None]):
        self.upstream, self.allowed, self.log = upstream, (*LOOPBACK, *allowed), log
        self._last_seen: dict[str, float] = {}
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.listener.bind((host, port))
        except OSError as exc:
            self.listener.close()
            raise UsageError(
                f"cannot listen on {host}:{port} ({exc.strerror}): choose another --port or --host"
            ) from None
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]

    def admits(self, address: str) -> bool:
        ip = ipaddress.ip_address(address.split("%")[0])
        if ip.version == 6 and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.allowed if network.version == ip.version)

    def serve_forever(self) -> None:
        while True:
            try:
                peer, address = self.listener.accept()
            except OSError as exc:  # out of file descriptors, say: wait, then take connections again
                self.log(f"cannot accept a connection ({exc.strerror}); trying again in 1 s")
                time.sleep(1.0)
                continue
            who = f"{address[0]}:{address[1]}"
            if not self.admits(address[0]):
                peer.close()  # before reading anything: nothing of it reaches llama.cpp
                self.log(f"refused {who}: not in --allow")
                continue
            threading.Thread(target=self._pipe, args=(peer, who), daemon=True, name=f"gate {who}").start()

    def _pipe(self, peer: socket.socket, who: str) -> None:
        started = time.monotonic()
        try:
            inner = socket.create_connection(self.upstream)
        except OSError as exc:
            peer.close()
            self.log(f"{who}: llama.cpp's RPC server is not answering ({exc.strerror}); connection closed")
            return
        for s in (peer, inner):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        host = who.rsplit(":", 1)[0]
        if started - self._last_seen.get(host, -QUIET_S) >= QUIET_S:
            self.log(f"{host} connected")
        self._last_seen[host] = started
        moved = {"in": 0, "out": 0}
        back = threading.Thread(target=_copy, args=(inner, peer, moved, "out"), daemon=True)
        back.start()
        _copy(peer, inner, moved, "in")
        back.join()  # both directions have ended: each copy ends when its source closes
        peer.close()
        inner.close()
        self._last_seen[host] = time.monotonic()
        if moved["in"] + moved["out"] >= WORTH_LOGGING:
            self.log(
                f"{who} left after {time.monotonic() - started:.0f} s "
                f"({moved['in'] / 1e6:,.1f} MB in, {moved['out'] / 1e6:,.1f} MB out)"
            )


def _copy(source: socket.socket, target: socket.socket, moved: dict, key: str) -> None:
    """Bytes from source to target until source closes or either fails; then both are shut, so the
    other direction ends too (a client that dies frees its buffers on the worker at once)."""
    try:
        while data := source.recv(_CHUNK):
            target.sendall(data)
            moved[key] += len(data)
    except OSError:
        pass
    for s in (source, target):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
