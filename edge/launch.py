"""From command-line choices to a loaded model: LoadRequest -> device -> profile -> settings -> file -> model.

Every command that loads a model goes through `prepare_run` (a RunPlan, checked before any slow
work) and `load_model`, so they all pick the same profile, settings, files and memory check for
the same flags.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from pathlib import Path

from edge import paths
from edge.device import info as device_mod
from edge.device.info import DeviceInfo
from edge.errors import AudioError, MemoryFitError
from edge.model.backend import BackendChoice, backend_choice
from edge.model.engine import LoadedModel
from edge.model.files import resolve_model
from edge.model.gguf import GGUFInfo, check_loadable_model
from edge.model.kv_size import dims_from_gguf, shape_from_gguf
from edge.model.memory import FitReport, MemoryLine, check_fits, context_buffers, fit_on_device, gb
from edge.profiles import ProfileChoice, choose_profile, load_profiles
from edge.settings import ResolvedSettings, resolve_settings
from edge.setup.config import load_device_config
from edge.tuned import TunedFileError, apply_tuned, lookup
from edge.workers import loss
from edge.workers.connect import resolve_workers
from edge.workers.probe import WorkerUnreachable
from edge.workers.split import LayerSplit, kv_bytes_per_layer, layer_bytes, plan_split


class ProjectorUse(Enum):
    """What a command needs of the projector (mmproj) that gives Gemma 4 ears and eyes."""

    NONE = "none"  # text only
    OPTIONAL = "optional"  # serve, wyoming, chat: hear and see when there is a projector
    HEARING = "hearing"  # voice, transcribe: hearing is the job, so a projector with audio is required
    MEDIA = "media"  # ask, bench --pictures: a projector is required; each input checks what it needs


@dataclass(frozen=True)
class SettingsOverrides:
    """Settings the command line sets over the profile, setup's plan and the stored tuning."""

    n_ctx: int | None = None
    n_threads: int | None = None
    n_threads_batch: int | None = None
    image_tokens: int | None = None

    def given(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class LoadRequest:
    """Everything the command line says about which model to load and how: built once, from the
    options every model-loading command shares (cli/options.py `load_options`)."""

    model: str | None = None  # 'demo', a .gguf path, or None: what setup installed
    mmproj: Path | None = None  # None: setup's projector
    device: str = "auto"
    overrides: SettingsOverrides = field(default_factory=SettingsOverrides)
    no_tune: bool = False  # ignore the threads `edge-gemma tune` stored
    llama_log: bool = False  # llama.cpp's own log on stderr
    root: Path = Path("/")  # device facts read below this directory (tests)
    workers: tuple[str, ...] | None = None  # --workers: HOST:PORT items or "auto"; None: the device config's
    worker_layers: int | None = None  # --worker-layers: exactly this many layers on the workers

    def with_overrides(self, **changes: int | None) -> LoadRequest:
        """The same request with these settings set (None leaves one as it is)."""
        given = {k: v for k, v in changes.items() if v is not None}
        return replace(self, overrides=replace(self.overrides, **given))


@dataclass(frozen=True)
class RunPlan:
    model_path: Path
    device: DeviceInfo
    choice: ProfileChoice
    resolved: ResolvedSettings
    tuned_note: str | None = None  # e.g. "tuned threads 2/2" when `edge-gemma tune` values apply
    mmproj_path: Path | None = None  # the audio/vision projector: --mmproj, else the one setup installed
    model_info: GGUFInfo | None = None  # the model's checked header, so loading does not read it again
    backend: BackendChoice | None = None  # which extra CPU kernels loads use (model/backend.py)
    llama_log: bool = False
    memory: FitReport | None = None  # the fit check's lines (the projector counted when one will open)
    split: LayerSplit | None = None  # layers on RPC workers (workers/split.py); None: all on this board

    @property
    def notes(self) -> tuple[str, ...]:
        # A fresh probe verdict is said once, the run it was made in; later runs read it silently.
        fresh = (self.backend.reason,) if self.backend is not None and self.backend.fresh else ()
        return self.resolved.notes + fresh


def prepare_run(request: LoadRequest = LoadRequest()) -> RunPlan:
    """Resolve everything that is cheap to check, before any slow model load.

    Without a model, the one `edge-gemma setup` installed is used (with its profile, planned
    settings and projector), else the embedded demo model. Settings stack up as profile < setup's
    plan < tuned values (`edge-gemma tune`, unless no_tune) < the request's overrides. The memory
    check counts the projector the load will open.
    """
    model, device_name, root = request.model, request.device, request.root
    info = device_mod.detect(root)
    config = load_device_config() if model is None else None
    profiles = load_profiles()
    if config is not None and device_name == "auto" and config.profile in profiles:
        device_name = config.profile
    choice = choose_profile(device_name, profiles, info)
    planned = config.settings if config else {}
    explicit = request.overrides.given()
    model_path = resolve_model(model, config.model_path if config else None)
    mmproj_path = request.mmproj or (config.mmproj_path if config else None)
    resolved = resolve_settings(choice.profile, info, {**planned, **explicit})
    tuned_note = None
    if not request.no_tune:
        try:
            # Tuned values sit under explicit flags only; setup's plan sits under both.
            with_tuned, tuned_note = apply_tuned(lookup(info, model_path), explicit)
            if tuned_note:
                resolved = resolve_settings(choice.profile, info, {**planned, **with_tuned})
        except TunedFileError as exc:  # a broken tuning file must not stop `run`
            resolved = replace(resolved, notes=resolved.notes + (f"{exc}",))
    model_info = check_loadable_model(model_path)
    mmproj_bytes = _projector_bytes(mmproj_path, model_info)
    items = request.workers if request.workers is not None else tuple(config.workers if config else ())
    if request.worker_layers == 0:
        items = ()  # --worker-layers 0: everything here, whatever setup recorded
    resolved, memory, split = _place_layers(
        items, request.worker_layers, model_path, model_info, resolved, info, choice, mmproj_bytes
    )
    return RunPlan(
        model_path,
        info,
        choice,
        resolved,
        tuned_note,
        mmproj_path,
        model_info,
        backend_choice(),
        request.llama_log,
        memory,
        split,
    )


def _projector_bytes(mmproj: Path | None, model_info: GGUFInfo) -> int:
    """The projector the load may open (only Gemma 4 takes one), as setup's plan counts it."""
    if mmproj is None or model_info.architecture != "gemma4" or not mmproj.is_file():
        return 0
    return mmproj.stat().st_size


def _check_memory(
    model_path: Path, model_info: GGUFInfo, resolved: ResolvedSettings, info, choice, mmproj_bytes: int
) -> tuple[ResolvedSettings, FitReport]:
    """The one fit policy (model/memory.py), the projector counted: settings that cannot fit are
    refused with the numbers (lazy PLE turned on first when that makes them fit); a warning when free
    memory is short."""
    profile = choice.profile
    settings, report = fit_on_device(
        model_info,
        resolved.settings,
        info,
        mmproj_bytes,
        os_headroom_mb=profile.os_headroom_mb,
        mmproj_on_gpu=profile.mmproj_gpu and resolved.settings.n_gpu_layers != 0,
        what=model_path.name,
    )
    notes = resolved.notes
    if settings != resolved.settings:
        notes += (f"lazy PLE turned on: {model_path.name} fits this machine only so",)
    if not report.fits_now:
        notes += (report.notes[-1],)
    return replace(resolved, settings=settings, notes=notes), report


def _place_layers(
    items: tuple[str, ...], worker_layers: int | None, model_path, model_info, resolved, info, choice, mmproj_bytes
) -> tuple[ResolvedSettings, FitReport, LayerSplit | None]:
    """The memory check, and the layers this board cannot hold (or --worker-layers of them) planned onto
    the workers `items` name. After a worker was lost mid-reply (the crash guard started this process
    again), an unreachable worker means running alone when the model fits, else waiting for it."""
    lost = None
    try:
        workers = resolve_workers(items)
    except WorkerUnreachable as exc:
        if not loss.restarted():  # a first start says so
            raise
        workers, lost = (), exc
    try:
        resolved, memory = _check_memory(model_path, model_info, resolved, info, choice, mmproj_bytes)
        fits_alone = True
    except MemoryFitError:
        if lost is not None:
            raise lost from None  # wait for the worker (the crash guard tries again)
        if not workers:
            raise
        fits_alone = False
    notes = ()
    if lost is not None:
        notes = (f"the worker at {lost.endpoint} does not answer: running on this board alone until a restart",)
    split = None
    if workers and (not fits_alone or worker_layers is not None):
        split, memory = _split_over(workers, model_info, resolved.settings, info, choice, mmproj_bytes, worker_layers)
        notes = (split.describe(), *split.board_notes())
    elif workers:
        notes = (
            f"{model_path.name} fits this board alone: the workers are not used "
            "(--worker-layers N puts N layers on them anyway)",
        )
    return replace(resolved, notes=resolved.notes + notes), memory, split


def _split_over(workers, model_info, settings, info, choice, mmproj_bytes, worker_layers):
    """The layers this board cannot hold (or --worker-layers of them) planned onto the workers; the memory
    report gains a line for what left and each worker's lines (workers/split.py)."""
    profile = choice.profile
    report = check_fits(model_info, settings, info, mmproj_bytes, os_headroom_mb=profile.os_headroom_mb)
    shape = shape_from_gguf(model_info)
    kv, _ = context_buffers(shape, dims_from_gguf(model_info), model_info.usable_ctx(settings.n_ctx), settings)
    split = plan_split(
        workers=workers,
        weights=layer_bytes(model_info.tensors, shape.n_layer),
        kv=kv_bytes_per_layer(shape, kv),
        shape=shape,
        local_over_bytes=max(report.total_bytes - report.budget_bytes, 0),
        worker_layers=worker_layers,
    )
    lines = (*report.lines, MemoryLine("on workers", -split.moved_bytes, split.describe()))
    total = report.total_bytes - split.moved_bytes
    memory = replace(
        report, lines=lines, total_bytes=total, needed_now_bytes=report.needed_now_bytes - split.moved_bytes
    )
    if not memory.fits_device:
        raise MemoryFitError(
            f"{model_info.path.name} needs {gb(total)} here even with {split.describe()}; lower --ctx or use a "
            "smaller quant"
        )
    return split, memory


def load_model(
    plan: RunPlan, use: ProjectorUse = ProjectorUse.NONE, *, on_note: Callable[[str], None] | None = None
) -> LoadedModel:
    """The one loader of a model and its projector (the request's --mmproj, else setup's).

    One rule: a projector that is given is loaded (unless `use` is NONE), and one that does not
    belong to the model is an error; a missing one is an error only where hearing or media are the job.
    Long shared prompt prefixes (a system turn with tool declarations) are kept in the cache folder
    and put back after a restart; `on_note` hears about a saved state that is ignored (stderr by default).
    """
    path = plan.mmproj_path if use is not ProjectorUse.NONE else None
    if use in (ProjectorUse.HEARING, ProjectorUse.MEDIA) and path is None:
        raise AudioError(
            "no projector (mmproj) for this model, and Gemma 4 hears and sees through one: run "
            "`edge-gemma setup` (it downloads one) or pass --mmproj PATH"
        )
    loaded = LoadedModel(
        plan.model_path,
        plan.resolved.settings,
        verbose=plan.llama_log,
        info=plan.model_info,
        backend=plan.backend,
        split=plan.split,
    )
    try:
        if path is not None:
            loaded.attach_projector(path, use_gpu=plan.choice.profile.mmproj_gpu)
            if use is ProjectorUse.HEARING:
                loaded.projector.require_audio()
        loaded.keep_prefixes(paths.cache_dir() / PROMPT_STATE_DIR, on_note=on_note or _note_on_stderr)
    except BaseException:
        loaded.close()
        raise
    return loaded


PROMPT_STATE_DIR = "prompt-state"


def _note_on_stderr(message: str) -> None:
    print(f"note: {message}", file=sys.stderr, flush=True)
