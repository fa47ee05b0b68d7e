"""From command-line choices to a loaded model: device -> profile -> settings -> file -> runner.

Every command that loads a model (run, chat, bench, voice) goes through `prepare_run`, so they all
pick the same profile, settings and file for the same flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import device as device_mod
from .models import resolve_model
from .profiles import ProfileChoice, choose_profile, load_profiles
from .runner import LoadedModel
from .settings import ResolvedSettings, resolve_settings


@dataclass(frozen=True)
class RunPlan:
    model_path: Path
    device: Any  # device.DeviceInfo
    choice: ProfileChoice
    resolved: ResolvedSettings

    @property
    def notes(self) -> tuple[str, ...]:
        return self.resolved.notes


def prepare_run(model: str | None = None, device_name: str = "auto", overrides: dict[str, Any] | None = None,
                *, root: Path = Path("/")) -> RunPlan:
    """Resolve everything that is cheap to check, before any slow model load."""
    info = device_mod.detect(root)
    choice = choose_profile(device_name, load_profiles(), info)
    resolved = resolve_settings(choice.profile, info, overrides)
    return RunPlan(resolve_model(model), info, choice, resolved)


def load_model(plan: RunPlan, *, verbose: bool = False) -> LoadedModel:
    return LoadedModel(plan.model_path, plan.resolved.settings, verbose=verbose)
