"""What model files are on this machine: the demo model, imported files and Hub downloads.

Hub downloads live in huggingface_hub's cache (snapshots/<commit>/<file> -> blobs/<sha256>);
removing one removes its snapshot link and, when nothing else links to it, the blob.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from edge.errors import EdgeError, UsageError
from edge.paths import models_dir
from edge.setup import catalog
from edge.setup.config import load_device_config
from edge.setup.download import hub_cache_dir


@dataclass(frozen=True)
class InstalledModel:
    name: str
    size: int
    kind: str  # "demo" | "imported" | "hub"
    where: str  # repo id for hub files, else the directory
    path: Path
    in_use: bool

    def to_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path)}


def _hub_repo_dirs() -> list[tuple[str, Path]]:
    cache = hub_cache_dir()
    repos = {repo for card in catalog.CARDS.values() for repo in card.repos}
    return [(repo, cache / f"models--{repo.replace('/', '--')}") for repo in sorted(repos)]


def list_installed() -> list[InstalledModel]:
    config = load_device_config()
    in_use = {str(Path(f.path)) for f in filter(None, (config.model, config.mmproj))} if config else set()
    entries = []
    for kind in ("demo", "imported"):
        for path in sorted((models_dir() / kind).glob("*.gguf")):
            entries.append(
                InstalledModel(path.name, path.stat().st_size, kind, str(path.parent), path, str(path) in in_use)
            )
    for repo, repo_dir in _hub_repo_dirs():
        for path in sorted(repo_dir.glob("snapshots/*/*.gguf")):
            if path.exists():  # a dangling link is not an installed file
                entries.append(InstalledModel(path.name, path.stat().st_size, "hub", repo, path, str(path) in in_use))
    return entries


def remove_installed(name: str, *, force: bool = False) -> int:
    """Remove every installed copy called `name`; returns the bytes freed."""
    matches = [entry for entry in list_installed() if entry.name == name]
    if not matches:
        names = ", ".join(sorted({e.name for e in list_installed()})) or "none"
        raise UsageError(f"no installed model named {name}; installed: {names}")
    if any(entry.in_use for entry in matches) and not force:
        raise EdgeError(
            f"{name} is the model the device config uses; pass --force to remove it anyway "
            "(then run `edge-gemma setup` again)"
        )
    freed = 0
    for entry in matches:
        if entry.kind == "hub" and entry.path.is_symlink():
            blob = entry.path.resolve()
            entry.path.unlink()
            if not _still_linked(blob, entry.path.parents[2] / "snapshots"):
                freed += blob.stat().st_size
                blob.unlink()
        else:
            freed += entry.size
            entry.path.unlink()
    return freed


def _still_linked(blob: Path, snapshots: Path) -> bool:
    return any(link.is_symlink() and link.resolve() == blob for link in snapshots.glob("*/*"))
