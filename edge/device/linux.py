"""Linux CPU and memory facts from /proc and /sys, read relative to a root directory.

A root other than "/" lets a recorded tree stand in for a Pi or a Jetson in tests. Every reader
degrades: a missing, unreadable or garbled file gives None or an empty result, never an exception.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

CPU_DIR = "sys/devices/system/cpu"

# Arm Ltd. (implementer 0x41) part numbers: Arm Linux prints no "model name" worth showing.
ARM_PARTS = {
    "0xd03": "Cortex-A53",
    "0xd04": "Cortex-A35",
    "0xd05": "Cortex-A55",
    "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72",
    "0xd09": "Cortex-A73",
    "0xd0a": "Cortex-A75",
    "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1",
    "0xd0d": "Cortex-A77",
    "0xd40": "Neoverse-V1",
    "0xd41": "Cortex-A78",
    "0xd42": "Cortex-A78AE",
    "0xd44": "Cortex-X1",
    "0xd46": "Cortex-A510",
    "0xd47": "Cortex-A710",
    "0xd48": "Cortex-X2",
    "0xd49": "Neoverse-N2",
    "0xd4b": "Cortex-A78C",
    "0xd4d": "Cortex-A715",
    "0xd4e": "Cortex-X3",
    "0xd4f": "Neoverse-V2",
    "0xd80": "Cortex-A520",
    "0xd81": "Cortex-A720",
    "0xd82": "Cortex-X4",
}

# cpuinfo flag -> our name. Only what changes which llama.cpp kernels run. "asimdhp" (not "fphp")
# because ggml's fp16 path needs vector half-precision arithmetic.
FEATURE_FLAGS = {
    "asimd": "neon",
    "neon": "neon",
    "asimddp": "dotprod",
    "i8mm": "i8mm",
    "sve": "sve",
    "asimdhp": "fp16",
    "avx": "avx",
    "avx2": "avx2",
    "fma": "fma",
    "f16c": "f16c",
    "avx512f": "avx512f",
    "avx512_vnni": "avx512_vnni",
    "avx_vnni": "avx_vnni",
}
FEATURE_ORDER = (
    "neon",
    "dotprod",
    "i8mm",
    "sve",
    "fp16",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
)

# A real LITTLE/E core is 25% or more slower; turbo-favoured cores differ by only a few percent.
BIG_LITTLE_RATIO = 0.85
MAX_CPUS = 4096  # bounds a garbled "0-99999999" range


def read_text(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except (OSError, ValueError):
        return None


def read_int(path: Path) -> int | None:
    text = read_text(path)
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def read_nul_list(path: Path) -> list[str]:
    """Device-tree strings are NUL-separated and NUL-terminated."""
    text = read_text(path) or ""
    return [part.strip() for part in text.split("\0") if part.strip()]


def parse_cpu_list(text: str | None) -> list[int]:
    """Kernel CPU lists like "0-3,8-11"; garbage gives []."""
    ids: set[int] = set()
    try:
        for part in (text or "").strip().split(","):
            if not part:
                continue
            low, _, high = part.partition("-")
            first, last = int(low), int(high or low)
            if first < 0 or last < first or last - first > MAX_CPUS:
                return []
            ids.update(range(first, last + 1))
    except ValueError:
        return []
    return sorted(ids)


@dataclass(frozen=True)
class CpuInfo:
    """/proc/cpuinfo split into per-processor blocks plus the first value seen for every key.

    Keys are lower-cased. Raspberry Pi kernels put Revision/Serial/Model in a trailing block.
    """

    processors: tuple[dict[str, str], ...] = ()
    fields: dict[str, str] = field(default_factory=dict)


def parse_cpuinfo(text: str | None) -> CpuInfo:
    processors, fields = [], {}
    for chunk in re.split(r"\n\s*\n", text or ""):
        block = {}
        for line in chunk.splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip():
                block.setdefault(key.strip().lower(), value.strip())
        for key, value in block.items():
            fields.setdefault(key, value)
        if block.get("processor", "").isdigit():
            processors.append(block)
    return CpuInfo(tuple(processors), fields)


def cpu_arch(cpuinfo: CpuInfo) -> str | None:
    """The kernel architecture as cpuinfo shows it; None when it says nothing recognisable."""
    fields = cpuinfo.fields
    if "flags" in fields:
        return "x86_64" if "lm" in fields["flags"].split() else "i686"
    arm_version = fields.get("cpu architecture", "")
    if arm_version == "8" or "asimd" in fields.get("features", "").split():
        return "aarch64"
    if arm_version == "7":
        return "armv7l"
    if fields.get("isa", "").startswith("rv64"):
        return "riscv64"
    return None


def cpu_features(cpuinfo: CpuInfo) -> tuple[str, ...]:
    flags = (cpuinfo.fields.get("features", "") + " " + cpuinfo.fields.get("flags", "")).split()
    found = {FEATURE_FLAGS[flag] for flag in flags if flag in FEATURE_FLAGS}
    return tuple(name for name in FEATURE_ORDER if name in found)


def cpu_model(cpuinfo: CpuInfo) -> str:
    """x86 "model name"; on Arm the core names from part numbers, e.g. "Cortex-A76 + Cortex-A55"."""
    parts: list[str] = []
    for proc in cpuinfo.processors:
        implementer, part = proc.get("cpu implementer", ""), proc.get("cpu part", "")
        if implementer == "0x41" and part in ARM_PARTS:
            name = ARM_PARTS[part]
        elif part:
            name = f"Arm core (implementer {implementer or '?'}, part {part})"
        else:
            continue
        if name not in parts:
            parts.append(name)
    if parts:
        return " + ".join(parts)
    fields = cpuinfo.fields
    return fields.get("model name") or fields.get("hardware") or fields.get("uarch") or "unknown"


def read_memory(root: Path) -> tuple[int, int, tuple[str, ...]]:
    """(MemTotal, MemAvailable) in bytes, 0 when unknown."""
    values: dict[str, int] = {}
    for line in (read_text(root / "proc/meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        number = rest.split()[0] if rest.split() else ""
        if number.isdigit():
            values[key.strip()] = int(number) * 1024  # the kernel's "kB" is KiB
    total = values.get("MemTotal", 0)
    if not total:
        return 0, 0, ("no usable /proc/meminfo: memory unknown",)
    available = values.get("MemAvailable")
    note = ""
    if available is None:  # kernels before 3.14: estimate the way `free` used to
        available = sum(values.get(key, 0) for key in ("MemFree", "Buffers", "Cached"))
        note = " (estimated: no MemAvailable)"
    available = min(available, total)
    return (
        total,
        available,
        (f"MemTotal {total / 2**30:.1f} GiB, MemAvailable {available / 2**30:.1f} GiB{note}",),
    )


@dataclass(frozen=True)
class Cores:
    logical: tuple[int, ...]
    physical: tuple[tuple[int, ...], ...]  # logical ids grouped by physical core
    performance: tuple[int, ...]  # lowest logical id of each fast core
    efficiency: tuple[int, ...]
    evidence: tuple[str, ...]


def read_cores(root: Path, cpuinfo: CpuInfo) -> Cores:
    cpu_dir = root / CPU_DIR
    logical, evidence = _logical_ids(cpu_dir, cpuinfo)
    physical, how = _physical_cores(cpu_dir, logical, cpuinfo)
    evidence.append(f"{_count(len(logical), 'logical CPU')}, {_count(len(physical), 'physical core')} ({how})")
    fast, slow, ranking = _rank_cores(cpu_dir, [core[0] for core in physical])
    evidence.append(ranking)
    return Cores(tuple(logical), tuple(physical), fast, slow, tuple(evidence))


def _logical_ids(cpu_dir: Path, cpuinfo: CpuInfo) -> tuple[list[int], list[str]]:
    online = parse_cpu_list(read_text(cpu_dir / "online"))
    if online:
        present = parse_cpu_list(read_text(cpu_dir / "present"))
        if len(present) > len(online):  # Jetson power modes and hotplug switch cores off
            return online, [f"only {len(online)} of {len(present)} CPUs online (power mode or hotplug)"]
        return online, []
    try:
        dirs = sorted(int(p.name[3:]) for p in cpu_dir.iterdir() if re.fullmatch(r"cpu\d+", p.name))
    except OSError:
        dirs = []
    if dirs:
        return dirs, []
    processors = [int(proc["processor"]) for proc in cpuinfo.processors]
    if processors:
        return sorted(set(processors)), ["no CPU list in sysfs: counted cpuinfo processors"]
    return [0], ["no CPU list in sysfs or cpuinfo: assuming one core"]


def _physical_cores(cpu_dir: Path, logical: list[int], cpuinfo: CpuInfo) -> tuple[list[tuple[int, ...]], str]:
    """Group SMT siblings. core_id alone is not unique (it restarts per cluster on Arm, per socket on x86)."""
    from_cpuinfo = {
        int(proc["processor"]): (proc.get("physical id", "0"), proc["core id"])
        for proc in cpuinfo.processors
        if "core id" in proc
    }
    groups: dict[object, list[int]] = {}
    sources = set()
    for cpu in logical:
        siblings = parse_cpu_list(read_text(cpu_dir / f"cpu{cpu}/topology/thread_siblings_list"))
        if cpu in siblings:
            key, source = ("sysfs", tuple(siblings)), "thread_siblings_list"
        elif cpu in from_cpuinfo:
            key, source = ("cpuinfo", from_cpuinfo[cpu]), "cpuinfo core id"
        else:
            key, source = ("alone", cpu), "no topology: one core per CPU"
        groups.setdefault(key, []).append(cpu)
        sources.add(source)
    return sorted(tuple(sorted(group)) for group in groups.values()), ", ".join(sorted(sources))


def _rank_cores(cpu_dir: Path, cores: list[int]) -> tuple[tuple[int, ...], tuple[int, ...], str]:
    """Split cores into fast and slow by cpu_capacity, else by cpuinfo_max_freq (Intel hybrid)."""
    seen = []
    for metric, relative in (
        ("cpu_capacity", "cpu_capacity"),
        ("cpuinfo_max_freq", "cpufreq/cpuinfo_max_freq"),
    ):
        values = {cpu: read_int(cpu_dir / f"cpu{cpu}" / relative) for cpu in cores}
        known = {cpu: value for cpu, value in values.items() if value and value > 0}
        if not known:
            continue
        cut = _fast_threshold(sorted(set(known.values()), reverse=True))
        if cut is None:
            seen.append(f"{metric} {max(known.values())}")
            continue
        # A core we could not measure stays with the fast ones: no evidence it is slow.
        slow = tuple(cpu for cpu in cores if known.get(cpu, cut) < cut)
        fast = tuple(cpu for cpu in cores if cpu not in slow)
        return fast, slow, f"big.LITTLE by {metric}: fast cores {_ids(fast)}, slow cores {_ids(slow)}"
    if seen:
        return tuple(cores), (), f"all {len(cores)} cores equal ({', '.join(seen)})"
    return tuple(cores), (), "no cpu_capacity or cpuinfo_max_freq: treating all cores as equal"


def _fast_threshold(values_desc: list[int]) -> int | None:
    """The slowest value still counted fast: stop at the first big drop from the top (P-cores only)."""
    for higher, lower in pairwise(values_desc):
        if lower < higher * BIG_LITTLE_RATIO:
            return higher
    return None


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _ids(cpus: tuple[int, ...]) -> str:
    return ",".join(str(cpu) for cpu in cpus) or "none"
