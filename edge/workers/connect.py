"""From `--workers HOST:PORT[,...]|auto` (or the device config's list) to workers checked and ready to plan on."""

from __future__ import annotations

from edge.errors import UsageError
from edge.model.rpc import require_rpc
from edge.workers.probe import WorkerInfo, parse_endpoint, probe


def parse_workers(text: str | None) -> tuple[str, ...]:
    """ "auto" or HOST:PORT items, checked for shape (nothing is contacted)."""
    items = tuple(part.strip() for part in (text or "").split(",") if part.strip())
    for item in items:
        if item != "auto":
            parse_endpoint(item)
    return items


def resolve_workers(items: tuple[str, ...]) -> tuple[WorkerInfo, ...]:
    """Each worker asked what it offers (probe.py); "auto" is every worker zeroconf finds on the LAN,
    planned on no more than the memory it announces. Any worker that cannot take layers is one error."""
    if not items:
        return ()
    require_rpc("--workers")
    announced: dict[str, int] = {}
    endpoints: list[str] = []
    for item in items:
        if item == "auto":
            from edge.workers.discovery import find

            found = find()
            if not found:
                raise UsageError(
                    "--workers auto found no worker on the LAN (zeroconf); start `edge-gemma worker --host 0.0.0.0 "
                    "--allow CIDR` on another board, or name it: --workers HOST:PORT"
                )
            for worker in found:
                announced[worker.endpoint] = worker.memory_bytes
                endpoints.append(worker.endpoint)
        else:
            endpoints.append(item)
    infos = []
    for endpoint in dict.fromkeys(endpoints):  # each once, in order
        info = probe(endpoint)
        if announced.get(endpoint):
            info = WorkerInfo(
                info.endpoint, info.version, info.devices, min(info.free_bytes, announced[endpoint]), info.total_bytes
            )
        infos.append(info)
    return tuple(infos)
