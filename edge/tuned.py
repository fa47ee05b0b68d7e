"""Thread settings `edge-gemma tune` found fastest, remembered per device and model file.

Stored in <config dir>/tuned.json as {device key: {model key: settings}}; `launch.prepare_run`
applies them between the profile (and setup's plan) and explicit command-line values.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from edge.errors import EdgeError
from edge.jsonio import write_json_atomic
from edge.paths import config_dir

TUNED_KEYS = ("n_threads", "n_threads_batch", "n_ubatch")


class TunedFileError(EdgeError):
    """tuned.json cannot be read or parsed."""


@dataclass(frozen=True)
class TunedSettings:
    n_threads: int
    n_threads_batch: int
    n_ubatch: int | None  # None: changing it did not pay; the profile's value stays
    decode_tps: float
    prefill_tps: float
    device_key: str = ""
    model_key: str = ""
    tuned_at: str = ""
    budget_s: float = 0.0

    def overrides(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in TUNED_KEYS if getattr(self, k) is not None}


# ---- persistence --------------------------------------------------------------------------------


def tuned_path() -> Path:
    return config_dir() / "tuned.json"


def device_key(info) -> str:
    """Same board, CPU and core count = same tuning; a different machine never inherits it."""
    return f"{info.kind}|{info.board}|{info.cpu_model}|{info.logical_cores} cores"


def model_key(model_path: Path) -> str:
    """File name and size: a re-download of the same file keeps its tuning, another quant does not."""
    path = Path(model_path)
    return f"{path.name}|{path.stat().st_size}"


def load_all(path: Path | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    path = path or tuned_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        entries = data["devices"]
        if not isinstance(entries, dict):
            raise ValueError("'devices' is not an object")
        return entries
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TunedFileError(
            f"tuned settings file {path} is unreadable ({exc}); run `edge-gemma tune --reset` to start over"
        ) from exc


def _write_all(entries: dict, path: Path | None = None) -> None:
    write_json_atomic(path or tuned_path(), {"version": 1, "devices": entries})


def lookup(info, model_path: Path) -> TunedSettings | None:
    entry = load_all().get(device_key(info), {}).get(model_key(model_path))
    if not entry:
        return None
    known = {f.name for f in fields(TunedSettings)}
    try:
        return TunedSettings(**{k: v for k, v in entry.items() if k in known})
    except TypeError as exc:
        raise TunedFileError(
            f"tuned settings file {tuned_path()} has a bad entry ({exc}); run `edge-gemma tune --reset`"
        ) from exc


def store(tuned: TunedSettings) -> Path:
    entries = load_all()
    entries.setdefault(tuned.device_key, {})[tuned.model_key] = asdict(tuned)
    _write_all(entries)
    return tuned_path()


def reset(info, model_path: Path | None = None) -> int:
    """Forget this device's tuning for one model (or all its models); returns how many were removed."""
    path = tuned_path()
    try:
        entries = load_all()
    except TunedFileError:
        path.unlink(missing_ok=True)  # an unreadable file is what --reset is for
        return 1
    models = entries.get(device_key(info), {})
    if model_path is None:
        removed = len(models)
        entries.pop(device_key(info), None)
    else:
        removed = 1 if models.pop(model_key(model_path), None) else 0
        if not models:
            entries.pop(device_key(info), None)
    _write_all(entries)
    return removed


def apply_tuned(tuned: TunedSettings | None, overrides: dict[str, Any] | None) -> tuple[dict[str, Any], str | None]:
    """Tuned values under explicit ones: (merged overrides, note for the stats line or None)."""
    merged = {k: v for k, v in (overrides or {}).items() if v is not None}
    if tuned is None:
        return merged, None
    used = [k for k, v in tuned.overrides().items() if k not in merged]
    merged.update({k: getattr(tuned, k) for k in used})
    if not used:
        return merged, None
    parts = []
    if "n_threads" in used and "n_threads_batch" in used:
        parts.append(f"threads {merged['n_threads']}/{merged['n_threads_batch']}")
    elif "n_threads" in used:
        parts.append(f"decode threads {merged['n_threads']}")
    elif "n_threads_batch" in used:
        parts.append(f"batch threads {merged['n_threads_batch']}")
    if "n_ubatch" in used:
        parts.append(f"ubatch {merged['n_ubatch']}")
    return merged, "tuned " + ", ".join(parts)
