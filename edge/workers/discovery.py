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

# RFC 6335 caps a service name at 15 bytes, so not "_edge-gemma-worker" (17).
SERVICE_TYPE = "_edge-gemma-rpc._tcp.local."
# A browse hears the answers that arrive within this long: on one 2-core VM (a worker on the same
# host) none came within 1 s and they did within 2 s, so 3 s leaves room for a busy board.
BROWSE_SECONDS = 3.0


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


def announce(listen_host: str, port: int, memory_bytes: int, threads: int, log: Callable[[str], None]):
    """Register this worker (listening on `listen_host`); returns the Zeroconf object (close it to
    withdraw). Failures are one note."""
    zc_mod = _zeroconf()
    name = socket.gethostname()
    addresses = [listen_host] if listen_host not in ("0.0.0.0", "::") else _lan_addresses()
    try:
        zc = zc_mod.Zeroconf()
        info = zc_mod.ServiceInfo(
            SERVICE_TYPE,
            f"{name}.{SERVICE_TYPE}",
            port=port,
            properties={
                "memory": str(memory_bytes),
                "backend": "CPU",
                "threads": str(threads),
                "rpc": f"{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}",
                "version": __version__,
            },
            server=f"{name}.local.",
            parsed_addresses=addresses,
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
    """This machine's non-loopback IPv4 addresses, from its interfaces (ifaddr comes with zeroconf;
    the hostname is no guide: Debian maps it to 127.0.1.1)."""
    import ifaddr

    found = sorted(
        ip.ip
        for adapter in ifaddr.get_adapters()
        for ip in adapter.ips
        if isinstance(ip.ip, str) and not ip.ip.startswith("127.")
    )
    return found or ["127.0.0.1"]
