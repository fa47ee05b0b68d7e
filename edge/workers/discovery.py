"""Workers on the LAN over zeroconf (mDNS): a worker announces itself, `--workers auto` and `detect` find them.

The TXT record carries what a planner needs before connecting: the memory offered, the backend, the
RPC protocol and edge-gemma versions. Needs the zeroconf package (the serve extra).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from edge import __version__
from edge.errors import UsageError
from edge.model.rpc import PROTOCOL_MAJOR, PROTOCOL_MINOR

SERVICE_TYPE = "_edge-gemma-worker._tcp.local."
BROWSE_SECONDS = 2.0


@dataclass(frozen=True)
class Announced:
    endpoint: str
    memory_bytes: int
    backend: str
    rpc: str
    version: str


def _zeroconf():
    try:
        import zeroconf
    except ImportError:
        raise UsageError("finding workers on the LAN needs zeroconf: pip install 'edge-gemma[serve]'") from None
    return zeroconf


def announce(port: int, memory_bytes: int, threads: int, log: Callable[[str], None]):
    """Register this worker; returns the Zeroconf object (close it to withdraw). Failures are one note."""
    zc_mod = _zeroconf()
    host = socket.gethostname()
    try:
        zc = zc_mod.Zeroconf()
        info = zc_mod.ServiceInfo(
            SERVICE_TYPE,
            f"{host}.{SERVICE_TYPE}",
            port=port,
            properties={
                "memory": str(memory_bytes),
                "backend": "CPU",
                "threads": str(threads),
                "rpc": f"{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}",
                "version": __version__,
            },
            server=f"{host}.local.",
            parsed_addresses=_lan_addresses(),
        )
        zc.register_service(info, allow_name_change=True)
    except Exception as exc:  # noqa: BLE001 (mDNS is a convenience: the worker serves without it)
        log(f"zeroconf announcement failed ({exc}); name this worker on the client: --workers HOST:{port}")
        return None
    log(f"announced on the LAN as {info.name}")
    return zc


def find(seconds: float = BROWSE_SECONDS) -> list[Announced]:
    """The workers that answer an mDNS browse within `seconds`."""
    zc_mod = _zeroconf()
    zc = zc_mod.Zeroconf()
    names: set[str] = set()

    def on_change(zeroconf, service_type, name, state_change):
        if state_change is zc_mod.ServiceStateChange.Added:
            names.add(name)

    try:
        zc_mod.ServiceBrowser(zc, SERVICE_TYPE, handlers=[on_change])
        time.sleep(seconds)
        found = []
        for name in sorted(names):
            info = zc.get_service_info(SERVICE_TYPE, name, timeout=1000)
            if info is None or not info.parsed_addresses():
                continue
            props = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
            found.append(
                Announced(
                    f"{info.parsed_addresses()[0]}:{info.port}",
                    int(props.get("memory", "0") or 0),
                    props.get("backend", "?"),
                    props.get("rpc", "?"),
                    props.get("version", "?"),
                )
            )
        return found
    finally:
        zc.close()


def _lan_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses (what a LAN client can reach)."""
    addresses = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            addresses.add(info[4][0])
    except OSError:
        pass
    return sorted(a for a in addresses if not a.startswith("127.")) or ["127.0.0.1"]
