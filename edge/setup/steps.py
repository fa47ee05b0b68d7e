"""`edge-gemma setup`: device -> profile -> plan -> verified files -> device config -> smoke test.

The steps are separate functions so the CLI can show the plan before downloading, and tests can
drive each step against the loopback hub.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from edge.device.info import DeviceInfo, detect, nominal_device
from edge.errors import DownloadError, HubUnreachableError, ModelFileError
from edge.model.gguf import GGUFInfo, check_loadable_model, inspect_gguf
from edge.model.memory import fit_on_device
from edge.paths import models_dir
from edge.profiles import Profile, ProfileChoice, choose_profile, family_for_device, load_profiles
from edge.settings import RunSettings, resolve_settings
from edge.setup import catalog
from edge.setup.config import DeviceConfig, InstalledFile, load_device_config, save_device_config
from edge.setup.download import RemoteFile, RemoteListing, fetch_file, import_local, list_remote_files
from edge.setup.plan import Plan, choose_plan
from edge.workers.connect import resolve_workers
from edge.workers.split import WORKER_COMPUTE_BYTES, WORKER_HEADROOM_BYTES

# Settings the plan decides and the device config records; the rest come from the profile.
PLANNED_SETTINGS = ("n_ctx", "lazy_mode")


@dataclass(frozen=True)
class SetupTarget:
    choice: ProfileChoice
    device: DeviceInfo  # the detected machine, or the profile's nominal board when setting up for another one
    on_board: bool  # False: preparing files for a board we are not running on


def target_for(choice: ProfileChoice, detected) -> SetupTarget:
    """Plan against this machine when it is the profile's board, else against the board the profile names."""
    profile = choice.profile
    if profile.family == "generic" or family_for_device(detected)[0] == profile.family:
        return SetupTarget(choice, detected, True)
    return SetupTarget(choice, nominal_device(profile.family, profile.memory_gb), False)


def resolve_target(device_name: str, root: Path = Path("/")) -> SetupTarget:
    """Detect this machine once and pick the profile `device_name` means here."""
    detected = detect(root)
    return target_for(choose_profile(device_name, load_profiles(), detected), detected)


@dataclass(frozen=True)
class SetupProposal:
    """What setup would download, before anything is: shown by `plan` and `setup --dry-run`."""

    target: SetupTarget
    listings: dict[str, RemoteListing]
    plan: Plan
    notes: tuple[str, ...]  # why this profile, and repos that could not be listed
    hub_error: HubUnreachableError | None = None  # the hub could not be listed: the plan uses catalog sizes
    workers: tuple[str, ...] = ()  # --workers as given: saved in the device config for later runs


def propose(
    device_name: str,
    *,
    model: str | None = None,
    quant: str | None = None,
    n_ctx: int | None = None,
    with_mmproj: bool = True,
    root: Path = Path("/"),
    workers: tuple[str, ...] = (),
) -> SetupProposal:
    """The plan for a device, from the hub's listings; without the hub (a train, an air gap), from
    the catalog's known file sizes, marked as estimates, so the choice of board can still be made.
    `workers`: RPC workers (HOST:PORT or "auto") whose free memory the plan may count on."""
    target = resolve_target(device_name, root)
    found = resolve_workers(workers)
    room = sum(max(w.free_bytes - WORKER_HEADROOM_BYTES - WORKER_COMPUTE_BYTES, 0) for w in found)
    hub_error, listings, notes = None, {}, []
    wanted = [model or target.choice.profile.model]
    if room and model is None and wanted == ["e2b"]:
        wanted.insert(0, "e4b")  # the workers may make room for the larger model
    try:
        for name in wanted:
            more, more_notes = gather_listings(name)
            listings.update(more)
            notes += more_notes
    except HubUnreachableError as exc:
        hub_error, listings = exc, {}
        notes = [f"{exc} The plan below uses the catalog's known file sizes: estimates until the hub is listed."]
    notes += [f"worker {w.endpoint}: {w.free_bytes / 1e9:.2f} GB free" for w in found]
    plan = make_plan(
        target, listings, model=model, quant=quant, n_ctx=n_ctx, with_mmproj=with_mmproj, workers_room=room
    )
    return SetupProposal(target, listings, plan, target.choice.reasons + tuple(notes), hub_error, tuple(workers))


def install_proposal(proposal: SetupProposal, *, progress: bool = True) -> DeviceConfig:
    """Download (or find cached) and verify the proposal's files; the config that records them."""
    if proposal.hub_error is not None:
        raise proposal.hub_error  # nothing can be downloaded from a hub that cannot be listed
    installed = download_plan(proposal.plan, proposal.listings, progress=progress)
    plan = proposal.plan
    config = build_config(proposal.target.choice.profile, installed, plan.settings, plan.model, plan.quant)
    return replace(config, workers=list(proposal.workers))


def install_local(
    device_name: str,
    gguf: Path,
    mmproj: Path | None,
    *,
    link: bool = False,
    n_ctx: int | None = None,
    root: Path = Path("/"),
) -> tuple[SetupTarget, DeviceConfig]:
    """Air-gapped setup: import local files, check they fit the board, the config that records them."""
    target = resolve_target(device_name, root)
    installed = import_files(gguf, mmproj, link=link)
    settings = plan_for_local(target, installed, n_ctx)
    info = inspect_gguf(installed["model"].path)
    return target, build_config(
        target.choice.profile, installed, settings, model_id_of(info), quant_of(installed["model"].filename)
    )


def offline_config() -> DeviceConfig:
    """The saved config, when every file it names is still on disk."""
    config = load_device_config()
    if config is None:
        raise DownloadError(
            "offline and nothing set up yet: run `edge-gemma setup` once online, "
            "or import local files with --gguf PATH [--mmproj PATH]"
        )
    for item in filter(None, (config.model, config.mmproj)):
        if not Path(item.path).is_file():
            raise DownloadError(f"{item.path} is missing; run `edge-gemma setup` online to fetch it again")
    return config


def gather_listings(model: str) -> tuple[dict[str, RemoteListing], list[str]]:
    """List every catalog repo for `model`; a repo that fails is skipped with a note unless all fail."""
    listings, notes, errors = {}, [], []
    for repo in catalog.card(model).repos:
        try:
            listings[repo] = list_remote_files(repo)
        except DownloadError as exc:
            errors.append(exc)
            notes.append(f"{repo}: skipped ({exc})")
    if not listings:
        raise errors[0]
    return listings, notes


def make_plan(
    target: SetupTarget,
    listings: dict[str, RemoteListing],
    *,
    model: str | None = None,
    quant: str | None = None,
    n_ctx: int | None = None,
    with_mmproj: bool = True,
    workers_room: int = 0,
) -> Plan:
    # No listings at all (the hub is out of reach): the catalog's recorded sizes stand in.
    files = {repo: listing.files for repo, listing in listings.items()} or None
    return choose_plan(
        target.choice.profile,
        target.device,
        model=model,
        quant=quant,
        n_ctx=n_ctx,
        with_mmproj=with_mmproj,
        listings=files,
        workers_room=workers_room,
    )


def download_plan(
    plan: Plan,
    listings: dict[str, RemoteListing],
    *,
    offline: bool = False,
    progress: bool = True,
    reporter: Callable[[RemoteFile], Callable[[int], None]] | None = None,
) -> dict[str, InstalledFile]:
    """Fetch (or find cached) every planned file at the listed commit, verified against its LFS sha256.
    `reporter(file)` gives the function that hears each chunk of that file (serve's /api/pull)."""
    installed = {}
    for planned in plan.files:
        listing = listings[planned.repo]
        remote = listing.get(planned.name)
        path = fetch_file(
            planned.repo,
            planned.name,
            revision=listing.commit,
            expected_sha256=remote.sha256,
            expected_size=remote.size,
            progress=progress,
            offline=offline,
            on_bytes=reporter(remote) if reporter is not None else None,
        )
        installed[planned.role] = InstalledFile(
            planned.repo,
            planned.name,
            listing.commit,
            remote.sha256,
            int(remote.size or path.stat().st_size),
            str(path),
        )
    verify_files(Path(installed["model"].path), Path(installed["mmproj"].path) if "mmproj" in installed else None)
    return installed


def verify_files(model_path: Path, mmproj_path: Path | None) -> tuple[GGUFInfo, GGUFInfo | None]:
    """The model must be a loadable Gemma 4 GGUF; the projector a clip GGUF with an audio encoder."""
    info = check_loadable_model(model_path)
    if info.architecture != "gemma4":
        raise ModelFileError(
            f"{model_path} is a {info.architecture or 'unknown'} model, not Gemma 4; "
            "setup installs Gemma 4 E2B/E4B (use `edge-gemma run --model PATH` for others)"
        )
    projector = None
    if mmproj_path is not None:
        projector = inspect_gguf(mmproj_path)
        if not projector.is_projector:
            raise ModelFileError(
                f"{mmproj_path} is not a projector (mmproj) GGUF; pass the mmproj-*.gguf file that comes with the model"
            )
        if not projector.metadata.get("clip.has_audio_encoder"):
            raise ModelFileError(
                f"{mmproj_path} has no audio encoder; voice needs the Gemma 4 E2B/E4B mmproj (F16 or BF16 preferred)"
            )
    return info, projector


def import_files(gguf: Path, mmproj: Path | None, *, link: bool = False) -> dict[str, InstalledFile]:
    """Air-gapped boards: copy (or link) verified local files into the model dir."""
    dest = models_dir() / "imported"
    model_path = import_local(gguf, dest, link=link, validate=lambda p: verify_files(p, None))
    installed = {"model": _local_file(model_path)}
    if mmproj is not None:
        mmproj_path = import_local(mmproj, dest, link=link, validate=lambda p: verify_files(model_path, p))
        installed["mmproj"] = _local_file(mmproj_path)
    return installed


def _local_file(path: Path) -> InstalledFile:
    return InstalledFile("local", path.name, "", None, path.stat().st_size, str(path))


def model_id_of(info: GGUFInfo) -> str:
    """e2b / e4b from the GGUF's name or file name; 'gemma4' when neither says."""
    text = f"{info.name} {info.path.name}".lower()
    return next((m for m in catalog.MODELS if m in text), "gemma4")


def quant_of(filename: str) -> str:
    return next(
        (
            q
            for q in sorted(catalog.FILE_BITS_PER_WEIGHT, key=len, reverse=True)
            if catalog.has_quant_token(filename, q)
        ),
        "unknown",
    )


def plan_for_local(target: SetupTarget, installed: dict[str, InstalledFile], n_ctx: int | None = None) -> RunSettings:
    """Settings for imported files, refused with the numbers when they cannot fit the board."""
    profile = target.choice.profile
    info = check_loadable_model(installed["model"].path)
    settings = resolve_settings(profile, target.device, {"n_ctx": n_ctx}).settings
    mmproj_bytes = installed["mmproj"].size if "mmproj" in installed else 0
    fitted, _ = fit_on_device(
        info,
        settings,
        target.device,
        mmproj_bytes,
        os_headroom_mb=profile.os_headroom_mb,
        what=f"{installed['model'].filename} on {profile.name}",
    )
    return fitted


def build_config(
    profile: Profile, installed: dict[str, InstalledFile], settings: RunSettings, model_id: str, quant: str
) -> DeviceConfig:
    chosen = {key: getattr(settings, key) for key in PLANNED_SETTINGS}
    return DeviceConfig(
        profile=profile.name,
        model_id=model_id,
        quant=quant,
        model=installed["model"],
        mmproj=installed.get("mmproj"),
        settings=chosen,
    )


def save_if_changed(config: DeviceConfig) -> bool:
    """Write the config; False (and no write) when it is identical to the saved one."""
    if load_device_config() == config:
        return False
    save_device_config(config)
    return True
