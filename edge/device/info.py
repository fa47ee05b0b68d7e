"""What this machine is: board, cores, memory and accelerator support, for choosing a profile.

Linux facts come from /proc and /sys under a root directory (a recorded tree in tests, "/" for real),
macOS facts from sysctl values. Missing or garbled sources are normal (containers, VMs, odd kernels):
detection degrades to "unknown" and says why in `evidence`; it never raises.
"""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path

from edge.device.boards import identify_board
from edge.device.linux import (
    FEATURE_ORDER,
    cpu_arch,
    cpu_features,
    cpu_model,
    parse_cpuinfo,
    read_cores,
    read_memory,
    read_text,
)

KINDS = ("pi5", "pi4", "jetson", "mac", "laptop", "desktop", "unknown")


@dataclass(frozen=True)
class DeviceInfo:
    kind: str  # one of KINDS
    board: str  # human name, e.g. "Raspberry Pi 5 Model B Rev 1.0"
    board_ram_gb: int | None  # RAM the board is sold with, when the board says so
    total_memory_bytes: int  # MemTotal; 0 when unknown
    available_memory_bytes: int  # MemAvailable; 0 when unknown
    physical_cores: int
    logical_cores: int
    performance_cores: tuple[int, ...]  # one logical id per fast physical core
    efficiency_cores: tuple[int, ...]  # LITTLE/E cores; empty when all cores are equal
    cpu_model: str
    cpu_features: tuple[str, ...]  # subset of device_linux.FEATURE_ORDER
    arch: str  # "x86_64", "aarch64", ... ("unknown" when nothing says)
    jetson_module: str | None  # e.g. "orin-nano-8gb"
    l4t_release: str | None  # e.g. "36.4.3"
    gpu_offload: bool  # the installed llama.cpp can offload layers to a GPU
    evidence: tuple[str, ...]  # one short line per conclusion


def nominal_device(kind: str, ram_gb: int) -> DeviceInfo:
    """A board we are not running on, described by what it is sold as (setup --device pi5 on a laptop).

    Its memory is the nominal RAM and nothing else is known, so plans use the board's RAM and
    settings resolve threads from the profile alone.
    """
    return DeviceInfo(
        kind=kind,
        board=f"a {ram_gb} GB {kind}",
        board_ram_gb=ram_gb,
        total_memory_bytes=0,
        available_memory_bytes=0,
        physical_cores=0,
        logical_cores=0,
        performance_cores=(),
        efficiency_cores=(),
        cpu_model="unknown",
        cpu_features=(),
        arch="unknown",
        jetson_module=None,
        l4t_release=None,
        gpu_offload=False,
        evidence=(f"planning for a {ram_gb} GB {kind}, not this machine",),
    )


def detect(
    root: Path = Path("/"),
    *,
    sysctl: Mapping[str, str] | None = None,
    gpu_offload: bool | None = None,
) -> DeviceInfo:
    """Describe the machine under `root`; with `sysctl` (or on macOS) describe a Mac from those values.

    `gpu_offload=None` asks the installed llama-cpp-python; tests pass a value so they don't depend
    on how it was built.
    """
    root = Path(root)
    offload = llama_gpu_offload() if gpu_offload is None else bool(gpu_offload)
    if sysctl is None and root == Path("/") and platform.system() == "Darwin":
        sysctl = _read_sysctl()
    if sysctl is not None:
        return _detect_mac({str(key): str(value).strip() for key, value in sysctl.items()}, offload)
    return _detect_linux(root, offload)


def llama_gpu_offload() -> bool:
    """Whether the installed llama.cpp was built with a GPU backend (CUDA, Metal, Vulkan...)."""
    try:
        import llama_cpp

        return bool(llama_cpp.llama_supports_gpu_offload())
    # Not installed, or installed but its shared library failed to load (RuntimeError/OSError).
    except (ImportError, OSError, RuntimeError, AttributeError):
        return False


def to_dict(info: DeviceInfo) -> dict:
    """JSON-ready: tuples become lists, everything else is already a str/int/bool/None."""
    result = {}
    for item in fields(info):
        value = getattr(info, item.name)
        result[item.name] = list(value) if isinstance(value, tuple) else value
    return result


# ---- Linux --------------------------------------------------------------------------------------


def _detect_linux(root: Path, offload: bool) -> DeviceInfo:
    cpuinfo = parse_cpuinfo(read_text(root / "proc/cpuinfo"))
    arch = cpu_arch(cpuinfo) or (_machine() if root == Path("/") else "unknown")
    board = identify_board(root, cpuinfo, arch)
    cores = read_cores(root, cpuinfo)
    total, available, memory_evidence = read_memory(root)
    return DeviceInfo(
        kind=board.kind,
        board=board.board,
        board_ram_gb=board.ram_gb,
        total_memory_bytes=total,
        available_memory_bytes=available,
        physical_cores=len(cores.physical),
        logical_cores=len(cores.logical),
        performance_cores=cores.performance,
        efficiency_cores=cores.efficiency,
        cpu_model=cpu_model(cpuinfo),
        cpu_features=cpu_features(cpuinfo),
        arch=arch,
        jetson_module=board.jetson_module,
        l4t_release=board.l4t_release,
        gpu_offload=offload,
        evidence=board.evidence + cores.evidence + memory_evidence + (_offload_line(offload),),
    )


def _machine() -> str:
    machine = platform.machine()
    return {"arm64": "aarch64", "AMD64": "x86_64"}.get(machine, machine) or "unknown"


def _offload_line(offload: bool) -> str:
    return f"llama.cpp GPU offload {'available' if offload else 'not available (CPU build)'}"


# ---- macOS --------------------------------------------------------------------------------------

# sysctl flag -> our feature name (Apple Silicon and Intel Macs).
MAC_FEATURE_KEYS = {
    "hw.optional.neon": "neon",
    "hw.optional.AdvSIMD": "neon",
    "hw.optional.arm.FEAT_DotProd": "dotprod",
    "hw.optional.arm.FEAT_I8MM": "i8mm",
    "hw.optional.arm.FEAT_FP16": "fp16",
    "hw.optional.neon_fp16": "fp16",
    "hw.optional.arm.FEAT_SVE": "sve",
    "hw.optional.avx1_0": "avx",
    "hw.optional.avx2_0": "avx2",
    "hw.optional.avx512f": "avx512f",
}
# Intel Macs list the rest as words in machdep.cpu.features / leaf7_features.
MAC_CPU_WORDS = {"FMA": "fma", "F16C": "f16c", "AVX512VNNI": "avx512_vnni", "AVXVNNI": "avx_vnni"}


def _read_sysctl() -> dict[str, str]:
    """`sysctl -a` as a mapping; empty when sysctl cannot run."""
    try:
        result = subprocess.run(["sysctl", "-a"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return {}
    values = {}
    for line in result.stdout.splitlines():
        for separator in (": ", " = "):
            key, found, value = line.partition(separator)
            if found:
                values.setdefault(key.strip(), value.strip())
                break
    return values


def _sysctl_int(values: Mapping[str, str], key: str) -> int | None:
    try:
        return int(values.get(key, ""))
    except ValueError:
        return None


def _detect_mac(values: Mapping[str, str], offload: bool) -> DeviceInfo:
    number = partial(_sysctl_int, values)
    evidence = ["macOS: facts from sysctl"]
    total = number("hw.memsize") or 0
    available, memory_line = _mac_available(values, total)
    evidence.append(memory_line)

    # Apple numbers the efficiency cluster first; macOS cannot pin threads, so only the counts matter.
    perf, eff = number("hw.perflevel0.physicalcpu"), number("hw.perflevel1.physicalcpu")
    if (number("hw.nperflevels") or 2) < 2:
        eff = None
    physical = number("hw.physicalcpu") or (perf or 0) + (eff or 0) or 1
    logical = max(number("hw.logicalcpu") or number("hw.ncpu") or physical, physical)
    if perf and eff:
        performance, efficiency = tuple(range(eff, eff + perf)), tuple(range(eff))
        evidence.append(f"{perf} performance + {eff} efficiency cores (hw.perflevel0/1.physicalcpu)")
    else:
        performance, efficiency = tuple(range(physical)), ()
        evidence.append(f"{physical} physical, {logical} logical cores, one performance level")

    brand = values.get("machdep.cpu.brand_string") or "unknown"
    apple_silicon = values.get("hw.optional.arm64") == "1" or brand.startswith("Apple")
    if apple_silicon and values.get("sysctl.proc_translated") == "1":
        evidence.append("Python runs under Rosetta 2: llama.cpp will be an x86-64 build; use an arm64 Python")
    model = values.get("hw.model")
    return DeviceInfo(
        kind="mac",
        board=f"{brand} ({model})" if model else brand,
        board_ram_gb=round(total / 2**30) or None,  # Apple sells exactly hw.memsize
        total_memory_bytes=total,
        available_memory_bytes=available,
        physical_cores=physical,
        logical_cores=logical,
        performance_cores=performance,
        efficiency_cores=efficiency,
        cpu_model=brand,
        cpu_features=_mac_features(values),
        arch="aarch64" if apple_silicon else "x86_64",
        jetson_module=None,
        l4t_release=None,
        gpu_offload=offload,
        evidence=tuple(evidence) + (_offload_line(offload),),
    )


def _mac_available(values: Mapping[str, str], total: int) -> tuple[int, str]:
    """macOS keeps little memory "free"; kern.memorystatus_level is the % it considers available."""
    size = f"hw.memsize {total / 2**30:.1f} GiB"
    level = _sysctl_int(values, "kern.memorystatus_level")
    if total and level is not None and 0 <= level <= 100:
        return total * level // 100, f"{size}, {level}% available (kern.memorystatus_level)"
    free_pages, page_size = _sysctl_int(values, "vm.page_free_count"), _sysctl_int(values, "hw.pagesize")
    if total and free_pages and page_size:
        return min(total, free_pages * page_size), f"{size}, available counted from free pages only"
    return total, f"{size}, availability unknown: assuming all of it"


def _mac_features(values: Mapping[str, str]) -> tuple[str, ...]:
    found = {name for key, name in MAC_FEATURE_KEYS.items() if values.get(key) == "1"}
    words = f"{values.get('machdep.cpu.features', '')} {values.get('machdep.cpu.leaf7_features', '')}".split()
    found |= {MAC_CPU_WORDS[word] for word in words if word in MAC_CPU_WORDS}
    return tuple(name for name in FEATURE_ORDER if name in found)
