"""Which board a Linux machine is: Raspberry Pi, Jetson, or a laptop/desktop PC.

Sources, relative to a root: the device tree (/proc/device-tree), /proc/cpuinfo (a Pi's revision
code), /etc/nv_tegra_release, DMI chassis type and power supplies. Containers often hide the device
tree (Docker masks /sys/firmware), so each board also has a fallback that works without it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edge.device.linux import CpuInfo, read_int, read_nul_list, read_text


@dataclass(frozen=True)
class Board:
    kind: str
    board: str
    ram_gb: int | None = None
    jetson_module: str | None = None
    l4t_release: str | None = None
    evidence: tuple[str, ...] = ()


def identify_board(root: Path, cpuinfo: CpuInfo, arch: str) -> Board:
    compatible = read_nul_list(root / "proc/device-tree/compatible")
    model_list = read_nul_list(root / "proc/device-tree/model")
    model = model_list[0] if model_list else None
    return (
        identify_pi(compatible, model, cpuinfo)
        or identify_jetson(root, compatible, model)
        or identify_pc(root, model, arch)
    )


# ---- Raspberry Pi -------------------------------------------------------------------------------

PI_COMPATIBLE = {
    "raspberrypi,5-model-b": "pi5",
    "raspberrypi,500": "pi5",
    "raspberrypi,5-compute-module": "pi5",
    "brcm,bcm2712": "pi5",
    "raspberrypi,4-model-b": "pi4",
    "raspberrypi,400": "pi4",
    "raspberrypi,4-compute-module": "pi4",
    "brcm,bcm2711": "pi4",
}
# Revision code bits 4-11. Pi 500 and CM5 share the Pi 5's SoC and memory system, hence "pi5".
PI_TYPES = {
    0x11: ("pi4", "Raspberry Pi 4 Model B"),
    0x13: ("pi4", "Raspberry Pi 400"),
    0x14: ("pi4", "Raspberry Pi Compute Module 4"),
    0x17: ("pi5", "Raspberry Pi 5"),
    0x18: ("pi5", "Raspberry Pi Compute Module 5"),
    0x19: ("pi5", "Raspberry Pi 500"),
}
# Revision code bits 20-22. 0 and 1 (256/512 MB) do not fit a whole number of GB: left unknown.
PI_MEMORY_GB = {2: 1, 3: 2, 4: 4, 5: 8, 6: 16}


def decode_pi_revision(text: str) -> tuple[int, int | None] | None:
    """(board type, RAM GB) from a new-style revision code (bit 23 set); None otherwise."""
    try:
        code = int(text.strip(), 16)
    except ValueError:
        return None
    if not code & (1 << 23):
        return None
    return (code >> 4) & 0xFF, PI_MEMORY_GB.get((code >> 20) & 0x7)


def identify_pi(compatible: list[str], model: str | None, cpuinfo: CpuInfo) -> Board | None:
    cpuinfo_model = cpuinfo.fields.get("model", "")
    if not cpuinfo_model.startswith("Raspberry Pi"):
        cpuinfo_model = ""  # on x86 "model" is a number
    matched = next((token for token in compatible if token in PI_COMPATIBLE), None)
    is_pi = matched or any(t.startswith("raspberrypi,") for t in compatible) or cpuinfo_model
    if not is_pi and not (model or "").startswith("Raspberry Pi"):
        return None

    evidence, kind = [], "unknown"
    if matched:
        kind = PI_COMPATIBLE[matched]
        evidence.append(f"device-tree compatible lists {matched}")
    elif compatible:
        evidence.append(f"device-tree compatible {compatible[0]}: a Raspberry Pi this tool has no profile for")
    else:
        evidence.append(f"no device tree (container?); cpuinfo Model says {cpuinfo_model}")

    revision = cpuinfo.fields.get("revision", "")
    decoded = decode_pi_revision(revision)
    ram_gb, type_name = None, None
    if decoded:
        board_type, ram_gb = decoded
        type_kind, type_name = PI_TYPES.get(board_type, (None, None))
        if kind == "unknown" and type_kind:  # no device tree to go by
            kind = type_kind
        memory = f"{ram_gb} GB" if ram_gb else "memory size not encoded"
        evidence.append(
            f"cpuinfo Revision {revision}: {memory}, board type 0x{board_type:02x} ({type_name or 'other'})"
        )
    elif revision:
        evidence.append(f"cpuinfo Revision {revision} is not a new-style code: RAM unknown")
    board = model or cpuinfo_model or type_name or "Raspberry Pi"
    return Board(kind, board, ram_gb, evidence=tuple(evidence))


# ---- NVIDIA Jetson ------------------------------------------------------------------------------

# Module part numbers (the carrier board's part, e.g. p3768-0000, comes first and is skipped).
JETSON_PARTS = {
    "p3767-0000": ("orin-nx-16gb", "Jetson Orin NX 16GB", 16),
    "p3767-0001": ("orin-nx-8gb", "Jetson Orin NX 8GB", 8),
    "p3767-0003": ("orin-nano-8gb", "Jetson Orin Nano 8GB", 8),
    "p3767-0004": ("orin-nano-4gb", "Jetson Orin Nano 4GB", 4),
    "p3767-0005": ("orin-nano-8gb", "Jetson Orin Nano 8GB", 8),  # the developer kit's module
    "p3701-0000": ("agx-orin", "Jetson AGX Orin 32GB", 32),
    "p3701-0004": ("agx-orin", "Jetson AGX Orin 32GB", 32),
    "p3701-0005": ("agx-orin", "Jetson AGX Orin 64GB", 64),
}
# Families for part numbers not listed above: module class known, RAM not.
JETSON_FAMILIES = {
    "p3701": ("agx-orin", "Jetson AGX Orin"),
    "p3767": (None, "Jetson Orin NX/Nano"),
    "p3668": ("xavier", "Jetson Xavier NX"),
    "p2888": ("xavier", "Jetson AGX Xavier"),
}
TEGRA_SOCS = {"tegra234": ("Orin", None), "tegra194": ("Xavier", "xavier"), "tegra210": ("Nano/TX1", None)}
# /sys/module/tegra_fuse/parameters/tegra_chip_id: readable even where the device tree is hidden.
TEGRA_CHIP_IDS = {35: "tegra234", 25: "tegra194", 33: "tegra210"}


def parse_l4t_release(text: str | None) -> str | None:
    """Turn "# R36 (release), REVISION: 4.3, ..." into "36.4.3"."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*(\d+(?:\.\d+)*)", text or "")
    return f"{match.group(1)}.{match.group(2)}" if match else None


def identify_jetson(root: Path, compatible: list[str], model: str | None) -> Board | None:
    release_text = read_text(root / "etc/nv_tegra_release")  # only L4T ships this file
    l4t = parse_l4t_release(release_text)
    soc = next((t.split(",", 1)[1] for t in compatible if t.startswith("nvidia,tegra")), None)
    soc_source = "device-tree compatible"
    if soc is None:
        chip_id = read_int(root / "sys/module/tegra_fuse/parameters/tegra_chip_id")
        soc, soc_source = TEGRA_CHIP_IDS.get(chip_id or -1), "tegra_fuse chip id"
    parts = [m for token in compatible for m in re.findall(r"\bp\d{4}-\d{4}", token)]
    if not (soc or release_text is not None or any(p in JETSON_PARTS for p in parts)):
        return None

    evidence, module, board, ram_gb = [], None, None, None
    part = next((p for p in parts if p in JETSON_PARTS), None)
    family = next((p[:5] for p in parts if p[:5] in JETSON_FAMILIES), None)
    if part:
        module, board, ram_gb = JETSON_PARTS[part]
        evidence.append(f"device-tree compatible names module {part} ({board})")
    elif family:
        module, family_name = JETSON_FAMILIES[family]
        board = model or family_name
        evidence.append(f"module family {family} recognised, exact part unknown: RAM from MemTotal only")
    if any(token.endswith("-super") for token in compatible):
        evidence.append("compatible ends in -super: the JetPack 6.2 'super' (MAXN SUPER) device tree is in use")
    if soc:
        soc_name, soc_module = TEGRA_SOCS.get(soc, (soc, None))
        module = module or soc_module
        evidence.append(f"{soc_source}: {soc} ({soc_name})")
    if release_text is not None:
        evidence.append(
            f"/etc/nv_tegra_release: L4T {l4t}" if l4t else "/etc/nv_tegra_release present, version unreadable"
        )
    board = board or model or (f"NVIDIA Jetson {TEGRA_SOCS[soc][0]}" if soc in TEGRA_SOCS else "NVIDIA Jetson")
    return Board("jetson", board, ram_gb, module, l4t, tuple(evidence))


# ---- PCs ----------------------------------------------------------------------------------------

# SMBIOS chassis types. Convertibles, tablets and handhelds run on battery with laptop cooling.
LAPTOP_CHASSIS = {
    8: "Portable",
    9: "Laptop",
    10: "Notebook",
    11: "Hand Held",
    14: "Sub Notebook",
    30: "Tablet",
    31: "Convertible",
    32: "Detachable",
}
# Mains-powered boxes, servers included: no battery or laptop thermal limits to plan around.
DESKTOP_CHASSIS = {
    3: "Desktop",
    4: "Low Profile Desktop",
    5: "Pizza Box",
    6: "Mini Tower",
    7: "Tower",
    13: "All in One",
    15: "Space-saving",
    16: "Lunch Box",
    17: "Main Server Chassis",
    23: "Rack Mount Chassis",
    24: "Sealed-case PC",
    28: "Blade",
    35: "Mini PC",
    36: "Stick PC",
}
ARCH_NAMES = {"x86_64": "x86-64", "aarch64": "Arm64", "i686": "x86", "armv7l": "Arm32", "riscv64": "RISC-V"}


def identify_pc(root: Path, model: str | None, arch: str) -> Board:
    chassis = read_int(root / "sys/class/dmi/id/chassis_type")
    battery = _system_battery(root)
    if chassis in LAPTOP_CHASSIS:
        kind, why = "laptop", f"DMI chassis_type {chassis} ({LAPTOP_CHASSIS[chassis]})"
    elif chassis in DESKTOP_CHASSIS:
        kind, why = "desktop", f"DMI chassis_type {chassis} ({DESKTOP_CHASSIS[chassis]})"
    elif battery:
        kind, why = "laptop", f"power supply {battery} is a system battery"
    else:
        shown = "missing" if chassis is None else str(chassis)
        kind, why = "unknown", f"no board identified (DMI chassis_type {shown}, no system battery)"
    if model:
        board = model  # e.g. an Arm board's device-tree model
    elif arch in ARCH_NAMES:
        board = f"{ARCH_NAMES[arch]} {kind if kind != 'unknown' else 'machine'}"
    else:
        board = "unknown"
    return Board(kind, board, evidence=(why,))


def _system_battery(root: Path) -> str | None:
    """Name of a battery powering the machine; a wireless mouse's battery has scope "Device"."""
    try:
        supplies = sorted((root / "sys/class/power_supply").iterdir())
    except OSError:
        return None
    for supply in supplies:
        kind = (read_text(supply / "type") or "").strip()
        scope = (read_text(supply / "scope") or "").strip()
        if kind == "Battery" and scope != "Device":
            return supply.name
    return None
