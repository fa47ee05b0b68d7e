"""From command-line choices to a loaded model: device -> profile -> settings -> file -> runner.

Every command that loads a model (run, chat, bench, voice) goes through `prepare_run`, so they all
pick the same profile, settings and file for the same flags.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edge.device import info as device_mod
from edge.device.info import DeviceInfo
from edge.errors import AudioError, MemoryFitError
from edge.model.backend import BackendChoice, backend_choice
from edge.model.engine import LoadedModel
from edge.model.files import resolve_model
from edge.model.gguf import GGUFInfo, check_loadable_model
from edge.model.memory import check_fits, gb
from edge.profiles import ProfileChoice, choose_profile, load_profiles
from edge.settings import ResolvedSettings, resolve_settings
from edge.setup.config import load_device_config
from edge.tuned import TunedFileError, apply_tuned, lookup


@dataclass(frozen=True)
class RunPlan:
    model_path: Path
    device: DeviceInfo
    choice: ProfileChoice
    resolved: ResolvedSettings
    tuned_note: str | None = None  # e.g. "tuned threads 2/2" when `edge-gemma tune` values apply
    mmproj_path: Path | None = None  # the audio/vision projector setup installed with the model
    model_info: GGUFInfo | None = None  # the model's checked header, so loading does not read it again
    backend: BackendChoice | None = None  # which extra CPU kernels loads use (model/backend.py)

    @property
    def notes(self) -> tuple[str, ...]:
        # A fresh probe verdict is said once, the run it was made in; later runs read it silently.
        fresh = (self.backend.reason,) if self.backend is not None and self.backend.fresh else ()
        return self.resolved.notes + fresh


def prepare_run(
    model: str | None = None,
    device_name: str = "auto",
    overrides: dict[str, Any] | None = None,
    *,
    root: Path = Path("/"),
    no_tune: bool = False,
) -> RunPlan:
    """Resolve everything that is cheap to check, before any slow model load.

    Without --model, the model `edge-gemma setup` installed is used (with its profile and planned
    settings), else the embedded demo model. Settings stack up as profile < setup's plan < tuned
    values (`edge-gemma tune`, unless no_tune) < overrides.
    """
    info = device_mod.detect(root)
    config = load_device_config() if model is None else None
    profiles = load_profiles()
    if config is not None and device_name == "auto" and config.profile in profiles:
        device_name = config.profile
    choice = choose_profile(device_name, profiles, info)
    planned = config.settings if config else {}
    explicit = {k: v for k, v in (overrides or {}).items() if v is not None}
    model_path = resolve_model(model, config.model_path if config else None)
    mmproj_path = config.mmproj_path if config else None
    resolved = resolve_settings(choice.profile, info, {**planned, **explicit})
    tuned_note = None
    if not no_tune:
        try:
            # Tuned values sit under explicit flags only; setup's plan sits under both.
            with_tuned, tuned_note = apply_tuned(lookup(info, model_path), explicit)
            if tuned_note:
                resolved = resolve_settings(choice.profile, info, {**planned, **with_tuned})
        except TunedFileError as exc:  # a broken tuning file must not stop `run`
            resolved = replace(resolved, notes=resolved.notes + (f"{exc}",))
    model_info = check_loadable_model(model_path)
    resolved = _check_memory(model_path, model_info, resolved, info, choice)
    return RunPlan(model_path, info, choice, resolved, tuned_note, mmproj_path, model_info, backend_choice())


def _check_memory(model_path: Path, model_info: GGUFInfo, resolved: ResolvedSettings, info, choice) -> ResolvedSettings:
    """Refuse settings that cannot fit this machine, with the numbers; warn when free memory is short."""
    report = check_fits(model_info, resolved.settings, info, os_headroom_mb=choice.profile.os_headroom_mb)
    if not report.fits_device:
        raise MemoryFitError(
            f"{model_path.name} with n_ctx {resolved.settings.n_ctx} needs "
            f"{gb(report.total_bytes)} but this machine has {gb(report.budget_bytes)} "
            f"({gb(report.total_bytes - report.budget_bytes)} over); lower --ctx or use a smaller quant"
        )
    if not report.fits_now:
        return replace(resolved, notes=resolved.notes + (report.notes[-1],))
    return resolved


def load_model(
    plan: RunPlan, *, verbose: bool = False, projector: str = "none", mmproj: Path | None = None
) -> LoadedModel:
    """The one loader of a model and its projector (`--mmproj`, else the one setup installed).

    `projector`: "none" (text only), "optional" (serve, wyoming, chat: hear and see when there is a
    projector), "required" (voice, transcribe: hearing is the job) or "media" (ask: a projector must be
    there; what it must do is checked per input). One rule: a projector that is given is loaded, and
    one that does not belong to the model is an error; a missing one is an error only where required.
    """
    path = (mmproj or plan.mmproj_path) if projector != "none" else None
    if projector in ("required", "media") and path is None:
        raise AudioError(
            "no projector (mmproj) for this model, and Gemma 4 hears and sees through one: run "
            "`edge-gemma setup` (it downloads one) or pass --mmproj PATH"
        )
    loaded = LoadedModel(
        plan.model_path, plan.resolved.settings, verbose=verbose, info=plan.model_info, backend=plan.backend
    )
    try:
        if path is not None:
            loaded.attach_projector(path, use_gpu=plan.choice.profile.mmproj_gpu)
            if projector == "required":
                loaded.projector.require_audio()
    except BaseException:
        loaded.close()
        raise
    return loaded
