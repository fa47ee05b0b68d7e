"""The llama.cpp settings a run uses: a profile's values, resolved against this machine.

Resolving means: thread counts of 0 become the number of physical performance cores, counts above
the machine's cores are clamped (with a note), and explicit overrides (CLI flags, tuned values) win.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any

from edge.device.info import DeviceInfo
from edge.errors import UsageError
from edge.profiles import CACHE_TYPES, LAZY_MODES, LOAD_MODES, Profile


@dataclass(frozen=True)
class RunSettings:
    n_ctx: int = 2048
    image_tokens: int = 280  # image tokens per picture; the vision encoder's work and memory grow with it
    n_threads: int = 2
    n_threads_batch: int = 2
    n_batch: int = 512
    n_ubatch: int = 512
    load_mode: str = "mmap"
    lazy_mode: str = "off"
    n_gpu_layers: int = 0
    flash_attn: bool = True
    type_k: str = "f16"
    type_v: str = "f16"

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class ResolvedSettings:
    settings: RunSettings
    notes: tuple[str, ...]  # what was adjusted and why, for the user to read


def usable_cores(device: DeviceInfo) -> tuple[int, int]:
    """(cores llama.cpp threads should use by default, logical cores available to this process)."""
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    # Hyperthreads and E-cores/LITTLE cores slow llama.cpp down: one thread per fast physical core.
    fast = len(device.performance_cores) or device.physical_cores or logical
    return max(1, min(fast, logical)), max(1, logical)


def resolve_settings(
    profile: Profile | None,
    device: DeviceInfo,
    overrides: dict[str, Any] | None = None,
) -> ResolvedSettings:
    """Profile values (or defaults) + overrides, with thread counts fitted to this machine."""
    base = RunSettings()
    if profile is not None:
        base = RunSettings(**{f.name: getattr(profile, f.name) for f in fields(RunSettings)})
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    _check_overrides(overrides)
    settings = replace(base, **overrides)
    default_threads, logical = usable_cores(device)
    notes = []
    for key in ("n_threads", "n_threads_batch"):
        value = getattr(settings, key)
        if value == 0:
            settings = replace(settings, **{key: default_threads})
        elif value > logical:
            notes.append(f"{key}={value} is more than the {logical} cores here; using {logical}")
            settings = replace(settings, **{key: logical})
    if settings.n_ubatch > settings.n_batch:
        settings = replace(settings, n_ubatch=settings.n_batch)
    return ResolvedSettings(settings, tuple(notes))


def _check_overrides(overrides: dict[str, Any]) -> None:
    allowed = {f.name for f in fields(RunSettings)}
    for key, value in overrides.items():
        if key not in allowed:
            raise UsageError(f"unknown setting '{key}'; allowed: {', '.join(sorted(allowed))}")
        if key == "image_tokens" and not 1 <= value <= 1120:
            raise UsageError(
                f"image_tokens must be 1 to 1120 (Gemma 4's budgets: 70, 140, 280, 560, 1120), not {value}"
            )
        if key in ("n_ctx", "n_batch", "n_ubatch") and value < 1:
            raise UsageError(f"{key} must be a positive integer, not {value}")
        if key in ("n_threads", "n_threads_batch") and value < 0:
            raise UsageError(f"{key} must be 0 (auto) or a positive integer, not {value}")
        choices = {"load_mode": LOAD_MODES, "lazy_mode": LAZY_MODES, "type_k": CACHE_TYPES, "type_v": CACHE_TYPES}.get(
            key
        )
        if choices and value not in choices:
            raise UsageError(f"{key}={value!r} is not allowed; use one of: {', '.join(choices)}")
