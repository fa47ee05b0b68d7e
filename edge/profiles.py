"""Device profiles: load the TOML files, validate them strictly, pick the one for a device.

Built-in profiles ship inside the package (`edge.builtin_profiles`); a file of the same name in
the user's config dir (`edge-gemma` config dir / profiles) overrides one, a new name adds one.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, fields
from importlib.resources import files
from pathlib import Path
from typing import Any

from edge.errors import ProfileError
from edge.paths import user_profiles_dir

MODELS = ("e2b", "e4b")
QUANTS = (
    "Q2_K",
    "Q3_K_M",
    "Q4_0",
    "Q4_K_S",
    "Q4_K_M",
    "Q5_K_M",
    "Q6_K",
    "Q8_0",
    "BF16",
    "F16",
    "IQ4_XS",
    "UD-IQ2_M",
    "UD-Q4_K_XL",
    "UD-Q8_K_XL",
)
MMPROJ_QUANTS = ("F16", "BF16", "Q8_0", "F32")
ECHO_CANCEL = ("auto", "on", "off")  # `voice --echo-cancel`: a board built as a shelf speaker may say "on"
LOAD_MODES = ("mmap", "mlock", "mmap+mlock", "none", "direct-io")
LAZY_MODES = ("off", "auto", "on")
CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl")


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    family: str
    memory_gb: int
    model: str
    quants: tuple[str, ...]
    mmproj_quants: tuple[str, ...]
    n_ctx: int
    image_tokens: int  # image tokens per picture (Gemma 4's budgets: 70, 140, 280, 560, 1120)
    n_threads: int  # 0 = one per physical performance core
    n_threads_batch: int
    n_batch: int
    n_ubatch: int
    load_mode: str
    lazy_mode: str
    n_gpu_layers: int  # -1 = all
    mmproj_gpu: bool
    flash_attn: bool
    type_k: str
    type_v: str
    os_headroom_mb: int
    family_default: bool = False
    echo_cancel: str = "auto"  # the voice loop's echo canceller unless --echo-cancel says otherwise
    source: str = ""  # the file it came from


# key -> (type, check, allowed-values text); check returns True when the value is fine.
def _in(options):
    return (lambda v: v in options), "one of " + ", ".join(options)


def _range(lo, hi):
    return (lambda v: lo <= v <= hi), f"an integer from {lo} to {hi}"


def _list_of(options):
    return (lambda v: len(v) > 0 and all(x in options for x in v)), "a non-empty list of " + ", ".join(options)


_RULES: dict[str, tuple[type, Any, str]] = {
    "description": (str, lambda v: bool(v.strip()), "a non-empty string"),
    "family": (str, lambda v: v.replace("-", "").isalnum(), "a name of letters, digits and '-'"),
    "memory_gb": (int, *_range(0, 1024)),
    "model": (str, *_in(MODELS)),
    "quants": (list, *_list_of(QUANTS)),
    "mmproj_quants": (list, *_list_of(MMPROJ_QUANTS)),
    "n_ctx": (int, *_range(256, 131072)),
    "image_tokens": (int, *_range(1, 1120)),
    "n_threads": (int, *_range(0, 256)),
    "n_threads_batch": (int, *_range(0, 256)),
    "n_batch": (int, *_range(32, 8192)),
    "n_ubatch": (int, *_range(32, 8192)),
    "load_mode": (str, *_in(LOAD_MODES)),
    "lazy_mode": (str, *_in(LAZY_MODES)),
    "n_gpu_layers": (int, *_range(-1, 999)),
    "mmproj_gpu": (bool, lambda v: True, "true or false"),
    "flash_attn": (bool, lambda v: True, "true or false"),
    "type_k": (str, *_in(CACHE_TYPES)),
    "type_v": (str, *_in(CACHE_TYPES)),
    "os_headroom_mb": (int, *_range(0, 65536)),
    "family_default": (bool, lambda v: True, "true or false"),
    "echo_cancel": (str, *_in(ECHO_CANCEL)),
}
_OPTIONAL = {"family_default", "echo_cancel"}


def parse_profile(name: str, data: dict[str, Any], source: str) -> Profile:
    """Validate one profile's keys and values; every error names the file, the key and what is allowed."""
    unknown = sorted(set(data) - set(_RULES))
    if unknown:
        raise ProfileError(f"{source}: unknown key '{unknown[0]}'; allowed keys: {', '.join(_RULES)}")
    missing = [k for k in _RULES if k not in data and k not in _OPTIONAL]
    if missing:
        raise ProfileError(f"{source}: missing key '{missing[0]}' (every profile sets {', '.join(missing)})")
    for key, value in data.items():
        kind, check, allowed = _RULES[key]
        # bool is a subclass of int in Python: refuse `n_ctx = true` explicitly.
        wrong_type = not isinstance(value, kind) or (kind is int and isinstance(value, bool))
        if wrong_type or not check(value):
            raise ProfileError(f"{source}: {key} = {value!r} is invalid; allowed: {allowed}")
    if data["n_ubatch"] > data["n_batch"]:
        raise ProfileError(f"{source}: n_ubatch ({data['n_ubatch']}) must not exceed n_batch ({data['n_batch']})")
    if data["type_v"] not in ("f32", "f16", "bf16") and not data["flash_attn"]:
        raise ProfileError(
            f"{source}: type_v = {data['type_v']!r} needs flash_attn = true "
            "(llama.cpp quantizes the V cache only with flash attention)"
        )
    if data["image_tokens"] * 2 > data["n_ctx"]:
        raise ProfileError(
            f"{source}: image_tokens ({data['image_tokens']}) must leave the conversation at least half of n_ctx "
            f"({data['n_ctx']}): lower it or raise n_ctx"
        )
    if data["lazy_mode"] != "off" and data["load_mode"] not in ("mmap", "mmap+mlock"):
        raise ProfileError(f"{source}: lazy_mode = {data['lazy_mode']!r} needs load_mode mmap or mmap+mlock")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return Profile(name=name, source=source, **values)


def load_profile_file(path: Path) -> Profile:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML ({exc}); fix the file or delete it") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: cannot read it ({exc}); fix its permissions or delete it") from exc
    return parse_profile(path.stem, data, str(path))


def builtin_profiles_dir() -> Path:
    """Installed: the package `edge.builtin_profiles`; running from a source tree: ../profiles."""
    try:
        return Path(str(files("edge.builtin_profiles")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "profiles"


def _builtin_files() -> list[Path]:
    return sorted(builtin_profiles_dir().glob("*.toml"))


def load_profiles(user_dir: Path | None = None) -> dict[str, Profile]:
    """All profiles by name: built-in ones, then the user's (which win on the same name)."""
    user_dir = user_profiles_dir() if user_dir is None else user_dir
    paths = _builtin_files()
    if user_dir.is_dir():
        paths += sorted(user_dir.glob("*.toml"))
    return {profile.name: profile for profile in map(load_profile_file, paths)}


@dataclass(frozen=True)
class ProfileChoice:
    profile: Profile
    reasons: tuple[str, ...]


def family_for_device(device) -> tuple[str, str]:
    """The profile family a detected device belongs to, and why."""
    module = getattr(device, "jetson_module", None) or ""
    if device.kind == "pi5":
        return "pi5", f"{device.board} is a Raspberry Pi 5"
    if device.kind == "jetson":
        for family in ("orin-nano", "orin-nx", "agx-orin"):
            if module.startswith(family):
                return family, f"Jetson module {module}"
        return "generic", f"Jetson module {module or 'unknown'} has no profile of its own"
    if device.kind == "mac":
        return "mac", "Apple Silicon Mac"
    if device.kind == "laptop" and device.arch == "x86_64":
        return "x86-laptop", "x86-64 laptop (DMI chassis type or battery)"
    return "generic", f"no profile family for this machine (kind {device.kind}, {device.arch}): generic CPU"


SOLD_SIZES_GB = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)


def device_ram_gb(device) -> int:
    """RAM as sold: the board's nominal size when known, else MemTotal rounded up to the next size
    memory is sold in (the kernel keeps some for itself: 8 GB shows as ~7.8 GiB, 24 GB as ~23.5)."""
    if device.board_ram_gb:
        return int(device.board_ram_gb)
    gib = device.total_memory_bytes / 2**30
    return next((size for size in SOLD_SIZES_GB if size >= gib), 2 ** math.ceil(math.log2(max(gib, 1))))


def choose_profile(requested: str, profiles: dict[str, Profile], device=None) -> ProfileChoice:
    """Resolve `--device`: 'auto' (needs device), a family ('pi5'), or an exact profile name."""
    if requested in profiles:
        return ProfileChoice(profiles[requested], (f"profile '{requested}' asked for by name",))
    families = sorted({p.family for p in profiles.values()})
    if requested == "auto":
        if device is None:
            raise ProfileError("--device auto needs device detection; pass a device name instead")
        family, why = family_for_device(device)
        return _variant_for_memory(family, profiles, device, [why])
    if requested in families:
        same_family = device is not None and family_for_device(device)[0] == requested
        if same_family:
            return _variant_for_memory(requested, profiles, device, [f"'{requested}' matches this machine"])
        default = _family_default(requested, profiles)
        return ProfileChoice(
            default,
            (
                f"this machine is not a {requested}: using the {default.memory_gb} GB "
                f"variant '{default.name}' (name another variant to change it)",
            ),
        )
    names = ", ".join(families + sorted(profiles))
    raise ProfileError(f"unknown device '{requested}'; use auto or one of: {names} (see `edge-gemma devices`)")


def _family_default(family: str, profiles: dict[str, Profile]) -> Profile:
    members = sorted((p for p in profiles.values() if p.family == family), key=lambda p: p.memory_gb)
    flagged = [p for p in members if p.family_default]
    return flagged[0] if flagged else members[len(members) // 2]


def _variant_for_memory(family: str, profiles: dict[str, Profile], device, reasons: list[str]) -> ProfileChoice:
    members = sorted((p for p in profiles.values() if p.family == family), key=lambda p: p.memory_gb)
    if not members:
        raise ProfileError(f"no profile of family '{family}'; add one to {user_profiles_dir()}")
    ram = device_ram_gb(device)
    fitting = [p for p in members if p.memory_gb <= ram]
    chosen = fitting[-1] if fitting else members[0]
    if len(members) == 1 and chosen.memory_gb == 0:
        reasons.append(f"{chosen.name} has one variant for any memory size ({ram} GB here)")
    elif fitting:
        reasons.append(f"{ram} GB of RAM: the largest variant that fits is {chosen.name} ({chosen.memory_gb} GB)")
    else:
        reasons.append(f"{ram} GB of RAM is below every variant; using the smallest, {chosen.name}")
    return ProfileChoice(chosen, tuple(reasons))


def profile_to_dict(profile: Profile) -> dict[str, Any]:
    return {f.name: (list(v) if isinstance(v := getattr(profile, f.name), tuple) else v) for f in fields(profile)}
