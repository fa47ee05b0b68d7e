"""The device config `edge-gemma setup` writes and every other command reads by default.

One JSON file in the config dir: the profile, the files setup installed (repo, pinned revision,
sha256, local path) and the settings the planner chose. Written atomically, so a crash mid-write
never leaves a half file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import EdgeError
from edge.jsonio import write_json_atomic
from edge.paths import config_dir

CONFIG_NAME = "device.json"


@dataclass(frozen=True)
class InstalledFile:
    repo_id: str
    filename: str
    revision: str
    sha256: str | None
    size: int
    path: str


@dataclass(frozen=True)
class DeviceConfig:
    profile: str
    model_id: str  # "e2b" | "e4b"
    quant: str
    model: InstalledFile
    mmproj: InstalledFile | None
    settings: dict[str, Any] = field(default_factory=dict)  # RunSettings overrides chosen by the plan
    workers: list[str] = field(default_factory=list)  # HOST:PORT of RPC workers the plan counted on ("auto")

    @property
    def model_path(self) -> Path:
        return Path(self.model.path)

    @property
    def mmproj_path(self) -> Path | None:
        return Path(self.mmproj.path) if self.mmproj else None


def config_path() -> Path:
    return config_dir() / CONFIG_NAME


def load_device_config(path: Path | None = None) -> DeviceConfig | None:
    """The saved config, or None when setup has not run; a damaged file is a clear error."""
    path = path or config_path()
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text())
        mmproj = raw.get("mmproj")
        return DeviceConfig(
            profile=raw["profile"],
            model_id=raw["model_id"],
            quant=raw["quant"],
            model=InstalledFile(**raw["model"]),
            mmproj=InstalledFile(**mmproj) if mmproj else None,
            settings=dict(raw.get("settings", {})),
            workers=[str(w) for w in raw.get("workers", [])],
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EdgeError(f"{path} is damaged ({exc}); run `edge-gemma setup` again or delete it") from exc


def save_device_config(config: DeviceConfig, path: Path | None = None) -> Path:
    return write_json_atomic(path or config_path(), asdict(config))
