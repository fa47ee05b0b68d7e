"""Board conditions during a benchmark: CPU temperature, throttling and (Jetson) the power mode.

Everything is read relative to a root directory, so a recorded tree stands in for a Pi or a Jetson in
tests. Sources, best first:
  - Raspberry Pi: `vcgencmd measure_temp` / `get_throttled` when the tool is there; else the same
    throttled bits from the firmware's sysfs file, and the temperature from /sys/class/thermal.
  - Jetson: /sys/class/thermal zones; the nvpmodel power mode from /var/lib/nvpmodel/status and
    /etc/nvpmodel.conf.
  - Anything else: /sys/class/thermal, then hwmon (coretemp, k10temp, ...).
A zone at or above its lowest `passive` trip point is throttling (that is what the kernel's passive
cooling acts on); on a Pi, 80 C is the soft limit where the firmware starts capping the clock.
Readers never raise: a missing or garbled source gives None and says so in `source`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge.device.linux import read_int, read_text

# `vcgencmd get_throttled` bits: (bit, what it means). The same 4 conditions repeat at 16-19 as
# "has happened since boot", which the firmware never clears.
THROTTLE_BITS = ((0x1, "under-voltage"), (0x2, "frequency capped"), (0x4, "throttled"), (0x8, "soft temperature limit"))
SINCE_BOOT_SHIFT = 16
PI_SOFT_LIMIT_C = 80.0  # Pi 4/5 firmware starts capping the ARM clock here (hard limit 85 C)
# Zone names that are the CPU, best first (Pi: cpu-thermal; Jetson: cpu-thermal, CPU-therm; x86).
CPU_ZONE_NAMES = ("cpu-thermal", "cpu_thermal", "cpu-therm", "x86_pkg_temp", "soc_thermal", "tj-thermal")
CPU_HWMON_NAMES = ("coretemp", "k10temp", "zenpower", "cpu_thermal", "cpu-thermal")


@dataclass(frozen=True)
class ThermalSample:
    at: float  # time.monotonic() when read
    cpu_temp_c: float | None
    zones: tuple[tuple[str, float], ...]  # (zone type, C) for every readable zone
    throttled_bits: int | None  # the Pi firmware's get_throttled value, when known
    conditions: tuple[str, ...]  # what is limiting the CPU right now; empty = nothing known
    since_boot: tuple[str, ...]  # Pi only: conditions that have happened since boot
    power_mode: str | None  # Jetson nvpmodel mode, e.g. "15W"
    source: str  # where the numbers came from, or why there are none

    @property
    def throttled(self) -> bool:
        return bool(self.conditions)


def decode_throttled(bits: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(conditions now, conditions since boot) from a `get_throttled` value like 0x50005."""
    now = tuple(name for bit, name in THROTTLE_BITS if bits & bit)
    since = tuple(name for bit, name in THROTTLE_BITS if bits & (bit << SINCE_BOOT_SHIFT))
    return now, since


def parse_vcgencmd_temp(text: str | None) -> float | None:
    """`temp=48.3'C` -> 48.3."""
    match = re.search(r"temp=(-?[0-9.]+)", text or "")
    return float(match.group(1)) if match else None


def parse_vcgencmd_throttled(text: str | None) -> int | None:
    """`throttled=0x50000` -> 0x50000."""
    match = re.search(r"throttled=(0x[0-9a-fA-F]+|[0-9]+)", text or "")
    return int(match.group(1), 0) if match else None


def read_zones(root: Path) -> list[tuple[str, float, float | None]]:
    """(type, temperature C, lowest passive trip C or None) for each readable thermal zone."""
    zones = []
    base = root / "sys/class/thermal"
    for zone in sorted(base.glob("thermal_zone*"), key=lambda p: _number(p.name)):
        millidegrees = read_int(zone / "temp")
        if millidegrees is None:
            continue  # some zones refuse to read (-ENODATA) while their sensor sleeps
        name = (read_text(zone / "type") or zone.name).strip()
        zones.append((name, millidegrees / 1000, _passive_trip(zone)))
    return zones


def _passive_trip(zone: Path) -> float | None:
    trips = []
    for kind_file in zone.glob("trip_point_*_type"):
        if (read_text(kind_file) or "").strip() == "passive":
            value = read_int(kind_file.with_name(kind_file.name.replace("_type", "_temp")))
            if value is not None and value > 0:
                trips.append(value / 1000)
    return min(trips) if trips else None


def read_hwmon_cpu_temp(root: Path) -> float | None:
    """The first CPU sensor under /sys/class/hwmon (x86 laptops often have no thermal zone)."""
    for hwmon in sorted((root / "sys/class/hwmon").glob("hwmon*")):
        if (read_text(hwmon / "name") or "").strip() in CPU_HWMON_NAMES:
            value = read_int(hwmon / "temp1_input")
            if value is not None:
                return value / 1000
    return None


def read_firmware_throttled(root: Path) -> int | None:
    """Raspberry Pi kernels expose get_throttled in sysfs too (hex, same bits as vcgencmd)."""
    for path in sorted((root / "sys/devices/platform").glob("soc*/*firmware/get_throttled")):
        text = (read_text(path) or "").strip()
        try:
            return int(text, 16)
        except ValueError:
            continue
    return None


def read_power_mode(root: Path) -> str | None:
    """Jetson nvpmodel mode name ("15W", "MAXN_SUPER"), from its status file and config."""
    status = read_text(root / "var/lib/nvpmodel/status") or ""
    match = re.search(r"pmode:\s*(\d+)", status)
    if not match:
        return None
    mode_id = int(match.group(1))
    config = read_text(root / "etc/nvpmodel.conf") or ""
    for found_id, name in re.findall(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)", config):
        if int(found_id) == mode_id:
            return name
    return f"mode {mode_id}"


class ThermalReader:
    """Reads one ThermalSample at a time; cheap enough to call between benchmark repetitions."""

    def __init__(
        self,
        root: Path = Path("/"),
        *,
        board_kind: str | None = None,
        vcgencmd: Sequence[str] | None | str = "auto",
        timeout: float = 2.0,
    ):
        self.root = Path(root)
        self.board_kind = board_kind
        if vcgencmd == "auto":
            # Only the real machine's tool describes the real machine; a fixture root has none.
            found = shutil.which("vcgencmd") if self.root == Path("/") else None
            vcgencmd = [found] if found else None
        elif isinstance(vcgencmd, str):
            vcgencmd = [vcgencmd]
        self.vcgencmd = list(vcgencmd) if vcgencmd else None
        self.timeout = timeout

    def sample(self) -> ThermalSample:
        sources = []
        zones = read_zones(self.root)
        cpu_temp, zone_conditions = self._from_zones(zones)
        if zones:
            sources.append("thermal zones")
        if cpu_temp is None:
            cpu_temp = read_hwmon_cpu_temp(self.root)
            if cpu_temp is not None:
                sources.append("hwmon")
        bits = None
        if self.vcgencmd:
            temp = parse_vcgencmd_temp(self._vcgencmd("measure_temp"))
            bits = parse_vcgencmd_throttled(self._vcgencmd("get_throttled"))
            if temp is not None:
                cpu_temp = temp
            if temp is not None or bits is not None:
                sources.insert(0, "vcgencmd")
        if bits is None:
            bits = read_firmware_throttled(self.root)
            if bits is not None:
                sources.append("firmware get_throttled")
        now, since = decode_throttled(bits) if bits is not None else ((), ())
        conditions = list(now) + [c for c in zone_conditions if c not in now]
        limit = PI_SOFT_LIMIT_C if self.board_kind in ("pi5", "pi4") else None
        if limit is not None and cpu_temp is not None and cpu_temp >= limit and not now:
            conditions.append(f"at {limit:.0f} C soft limit")
        power_mode = read_power_mode(self.root)
        return ThermalSample(
            at=time.monotonic(),
            cpu_temp_c=cpu_temp,
            zones=tuple((name, temp) for name, temp, _ in zones),
            throttled_bits=bits,
            conditions=tuple(conditions),
            since_boot=since,
            power_mode=power_mode,
            source=", ".join(sources) or "no temperature source (no thermal zones, hwmon or vcgencmd)",
        )

    def _from_zones(self, zones) -> tuple[float | None, list[str]]:
        conditions = [
            f"{name} at passive trip {trip:.0f} C" for name, temp, trip in zones if trip is not None and temp >= trip
        ]
        by_name = {name.lower(): temp for name, temp, _ in zones}
        for wanted in CPU_ZONE_NAMES:
            if wanted.lower() in by_name:
                return by_name[wanted.lower()], conditions
        cpu_like = [temp for name, temp, _ in zones if "cpu" in name.lower()]
        return (max(cpu_like) if cpu_like else None), conditions

    def _vcgencmd(self, command: str) -> str | None:
        try:
            result = subprocess.run(
                [*self.vcgencmd, command], capture_output=True, text=True, timeout=self.timeout, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return result.stdout if result.returncode == 0 else None


def _number(name: str) -> int:
    digits = re.sub(r"\D", "", name)
    return int(digits) if digits else 0
