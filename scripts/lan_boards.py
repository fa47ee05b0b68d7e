"""Stand-ins for boards on a LAN, on this machine: a network namespace per board, joined to ours by a veth
pair shaped like gigabit Ethernet or Wi-Fi, and a memory cgroup (v1) of the board's size.

The link: `tc netem` (delay and rate) where the kernel has it. Where it does not (no sch_netem module),
the rate is `tc tbf` on both ends of the veth and the delay comes from `DelayRelay`, a TCP relay on
our side that holds every chunk for half the round trip in each direction; `Board.reach(port)` is the
address a client connects to either way, and the traffic crosses the shaped veth in both cases.

All traffic stays on this machine: each board's addresses (10.77.N.2, ours 10.77.N.1) exist only on the
veth pair made here, and everything is removed on exit. Needs root, iproute2 and a cgroup v1 memory
controller; `available()` says why not when something is missing.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup/memory")
# Links like the issue's: about 0.3 ms round trip at 1 Gbit/s (Ethernet), 3 ms at 200 Mbit/s (Wi-Fi).
LINKS = {"ethernet": (0.3, 1000), "wifi": (3.0, 200)}


@dataclass(frozen=True)
class Board:
    name: str
    netns: str
    host_ip: str  # our end of the link
    board_ip: str  # the board's address
    cgroup: Path | None
    link: str | None = None
    delay_s: float = 0.0  # one way, when added by a relay (no netem here)
    relays: list = field(default_factory=list)

    def reach(self, port: int) -> str:
        """HOST:PORT a client on our side connects to for the board's `port`: through a relay that adds
        the link's delay when netem is missing, else the board's own address."""
        if not self.delay_s:
            return f"{self.board_ip}:{port}"
        relay = DelayRelay(self.host_ip, (self.board_ip, port), self.delay_s)
        self.relays.append(relay)
        return f"{self.host_ip}:{relay.port}"

    def command(self, *argv: str) -> list[str]:
        """`argv` run inside the board: its memory cgroup (joined first: `ip netns exec` mounts a /sys of
        its own, without the cgroup tree) and its network namespace."""
        inner = ["ip", "netns", "exec", self.netns, *argv]
        if self.cgroup is None:
            return inner
        return ["sh", "-c", f'echo $$ > {self.cgroup}/cgroup.procs && exec "$@"', "sh", *inner]

    def max_usage(self) -> int:
        return int((self.cgroup / "memory.max_usage_in_bytes").read_text()) if self.cgroup else 0

    def failcnt(self) -> int:
        return int((self.cgroup / "memory.failcnt").read_text()) if self.cgroup else 0


def available() -> str | None:
    """None when boards can be made here, else why not."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, cgroups)"
    if not shutil.which("ip") or not shutil.which("tc"):
        return "needs iproute2 (ip, tc)"
    return None


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


@contextlib.contextmanager
def board(name: str, index: int, *, link: str | None = None, memory_bytes: int | None = None):
    """A board named `name` at 10.77.`index`.2, reached from ours at 10.77.`index`.1."""
    netns, host_if, board_if = f"eg-{name}", f"egh{index}", f"egb{index}"
    host_ip, board_ip = f"10.77.{index}.1", f"10.77.{index}.2"
    group = None
    _cleanup(netns, host_if)
    try:
        _run("ip", "netns", "add", netns)
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", board_if)
        _run("ip", "link", "set", board_if, "netns", netns)
        _run("ip", "addr", "add", f"{host_ip}/24", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        _run("ip", "-n", netns, "addr", "add", f"{board_ip}/24", "dev", board_if)
        _run("ip", "-n", netns, "link", "set", board_if, "up")
        _run("ip", "-n", netns, "link", "set", "lo", "up")
        delay_s = 0.0
        if link is not None:
            rtt_ms, mbit = LINKS[link]
            for prefix, dev in ((["tc"], host_if), (["tc", "-n", netns], board_if)):
                try:  # half the round trip each way; a queue deep enough for the rate not to drop packets
                    _run(*prefix, "qdisc", "add", "dev", dev, "root", "netem", "delay", f"{rtt_ms / 2}ms",
                         "rate", f"{mbit}mbit", "limit", "100000")  # fmt: skip
                except subprocess.CalledProcessError:
                    _run(*prefix, "qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{mbit}mbit",
                         "burst", "256kb", "latency", "100ms")  # fmt: skip
                    delay_s = rtt_ms / 2000
        with contextlib.ExitStack() as stack:
            if memory_bytes is not None:
                group = stack.enter_context(memory_cgroup(name, memory_bytes))
            made = Board(name, netns, host_ip, board_ip, group, link, delay_s)
            try:
                yield made
            finally:
                for relay in made.relays:
                    relay.close()
    finally:
        _cleanup(netns, host_if)


@contextlib.contextmanager
def memory_cgroup(name: str, memory_bytes: int):
    """A cgroup v1 memory group of `memory_bytes` (RAM, and swap where the kernel accounts it); a
    process joins it by writing its pid to cgroup.procs. Removed on exit, once its pages are uncharged."""
    group = CGROUP / f"edge-gemma-{name}"
    if group.exists():
        group.rmdir()
    group.mkdir()
    try:
        (group / "memory.limit_in_bytes").write_text(str(memory_bytes))
        with contextlib.suppress(OSError):  # no swap accounting on some kernels: the limit is RAM only
            (group / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
        yield group
    finally:
        for _ in range(50):  # the processes have exited; their pages may take a moment to uncharge
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def _cleanup(netns: str, host_if: str) -> None:
    subprocess.run(["ip", "netns", "del", netns], capture_output=True)  # takes its end of the veth with it
    subprocess.run(["ip", "link", "del", host_if], capture_output=True)


class DelayRelay:
    """Listens on (host, ephemeral port), connects each client to `target`, and delivers every chunk
    `delay_s` after it arrived, in each direction: a link's latency where netem is missing."""

    def __init__(self, host: str, target: tuple[str, int], delay_s: float):
        self.target, self.delay_s = target, delay_s
        self.listener = socket.create_server((host, 0))
        self.port = self.listener.getsockname()[1]
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._open.append(s)
            for a, b in ((client, server), (server, client)):
                queue: collections.deque = collections.deque()
                ready = threading.Condition()
                threading.Thread(target=self._read, args=(a, queue, ready), daemon=True).start()
                threading.Thread(target=self._write, args=(b, queue, ready), daemon=True).start()

    def _read(self, source: socket.socket, queue, ready) -> None:
        while True:
            try:
                data = source.recv(1 << 20)
            except OSError:
                data = b""
            with ready:
                queue.append((time.perf_counter() + self.delay_s, data))
                ready.notify()
            if not data:
                return

    def _write(self, target: socket.socket, queue, ready) -> None:
        while True:
            with ready:
                while not queue:
                    ready.wait()
                due, data = queue.popleft()
            if (wait := due - time.perf_counter()) > 0:
                time.sleep(wait)  # overshoots by ~0.1 ms on Linux: the delay is a floor, not exact
            if not data:
                with contextlib.suppress(OSError):
                    target.shutdown(socket.SHUT_WR)
                return
            try:
                target.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.listener.close()
        for s in self._open:
            with contextlib.suppress(OSError):
                s.close()
