"""Stand-ins for boards on a LAN, on this machine: a network namespace per board, joined to ours by a veth
pair (shaped with `tc netem` like gigabit Ethernet or Wi-Fi), and a memory cgroup (v1) of the board's size.

All traffic stays on this machine: each board's addresses (10.77.N.2, ours 10.77.N.1) exist only on the
veth pair made here, and everything is removed on exit. Needs root, iproute2 and a cgroup v1 memory
controller; `available()` says why not when something is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass
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

    def command(self, *argv: str) -> list[str]:
        """`argv` run inside the board: its network namespace, and its memory cgroup when it has one."""
        inner = list(argv)
        if self.cgroup is not None:  # the child joins the cgroup itself before it loads anything
            inner = ["sh", "-c", f'echo $$ > {self.cgroup}/cgroup.procs && exec "$@"', "sh", *inner]
        return ["ip", "netns", "exec", self.netns, *inner]

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
        if link is not None:
            rtt_ms, mbit = LINKS[link]
            for prefix, dev in ((["tc"], host_if), (["tc", "-n", netns], board_if)):
                # Half the round trip each way; a queue deep enough for the rate not to drop packets.
                _run(*prefix, "qdisc", "add", "dev", dev, "root", "netem", "delay", f"{rtt_ms / 2}ms",
                     "rate", f"{mbit}mbit", "limit", "100000")  # fmt: skip
        if memory_bytes is not None:
            group = CGROUP / f"edge-gemma-{name}"
            if group.exists():
                group.rmdir()
            group.mkdir()
            (group / "memory.limit_in_bytes").write_text(str(memory_bytes))
            with contextlib.suppress(OSError):  # no swap accounting on some kernels: the limit is RAM only
                (group / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
        yield Board(name, netns, host_ip, board_ip, group)
    finally:
        _cleanup(netns, host_if)
        if group is not None:
            with contextlib.suppress(OSError):
                group.rmdir()


def _cleanup(netns: str, host_if: str) -> None:
    subprocess.run(["ip", "netns", "del", netns], capture_output=True)  # takes its end of the veth with it
    subprocess.run(["ip", "link", "del", host_if], capture_output=True)
