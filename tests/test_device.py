"""Device detection against recorded /proc and /sys trees, a recorded Mac sysctl dump, and this machine."""

import json
import shutil
from pathlib import Path

import pytest

from edge.device.boards import decode_pi_revision, parse_l4t_release
from edge.device.info import KINDS, DeviceInfo, detect, llama_gpu_offload, to_dict
from edge.device.linux import FEATURE_ORDER, parse_cpu_list

DEVICES = Path(__file__).parent / "fixtures" / "devices"
GiB = 2**30

# name: (kind, board, board_ram_gb, physical, logical, performance, features, jetson_module, l4t)
EXPECTED = {
    "pi5-4gb": (
        "pi5",
        "Raspberry Pi 5 Model B Rev 1.0",
        4,
        4,
        4,
        (0, 1, 2, 3),
        ("neon", "dotprod", "fp16"),
        None,
        None,
    ),
    "pi5-16gb": (
        "pi5",
        "Raspberry Pi 5 Model B Rev 1.1",
        16,
        4,
        4,
        (0, 1, 2, 3),
        ("neon", "dotprod", "fp16"),
        None,
        None,
    ),
    "pi4": ("pi4", "Raspberry Pi 4 Model B Rev 1.4", 4, 4, 4, (0, 1, 2, 3), ("neon",), None, None),
    "orin-nano-8gb": (
        "jetson",
        "Jetson Orin Nano 8GB",
        8,
        6,
        6,
        (0, 1, 2, 3, 4, 5),
        ("neon", "dotprod", "fp16"),
        "orin-nano-8gb",
        "36.4.3",
    ),
    "orin-nx-16gb": (
        "jetson",
        "Jetson Orin NX 16GB",
        16,
        8,
        8,
        tuple(range(8)),
        ("neon", "dotprod", "fp16"),
        "orin-nx-16gb",
        "35.4.1",
    ),
    "x86-laptop": (
        "laptop",
        "x86-64 laptop",
        None,
        4,
        8,
        (0, 1, 2, 3),
        ("avx", "avx2", "fma", "f16c"),
        None,
        None,
    ),
    "x86-desktop": (
        "desktop",
        "x86-64 desktop",
        None,
        8,
        16,
        tuple(range(8)),
        ("avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni"),
        None,
        None,
    ),
}


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


def assert_consistent(info: DeviceInfo) -> None:
    """What every DeviceInfo must satisfy, whatever the machine."""
    assert info.kind in KINDS
    assert info.logical_cores >= info.physical_cores >= 1
    assert len(info.performance_cores) + len(info.efficiency_cores) == info.physical_cores
    assert not set(info.performance_cores) & set(info.efficiency_cores)
    assert 0 <= info.available_memory_bytes <= info.total_memory_bytes
    assert set(info.cpu_features) <= set(FEATURE_ORDER)
    assert info.evidence and all(isinstance(line, str) and line for line in info.evidence)
    assert json.loads(json.dumps(to_dict(info))) == to_dict(info)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recorded_device_trees(name):
    kind, board, ram_gb, physical, logical, performance, features, module, l4t = EXPECTED[name]
    info = detect(DEVICES / name, gpu_offload=False)
    assert (info.kind, info.board, info.board_ram_gb) == (kind, board, ram_gb)
    assert (info.physical_cores, info.logical_cores) == (physical, logical)
    assert info.performance_cores == performance
    assert info.efficiency_cores == ()
    assert info.cpu_features == features
    assert (info.jetson_module, info.l4t_release) == (module, l4t)
    assert info.arch == ("x86_64" if name.startswith("x86") else "aarch64")
    assert info.gpu_offload is False
    if ram_gb:  # MemTotal is a little under the RAM on the box (firmware, kernel reservations)
        assert 0.85 * ram_gb * GiB < info.total_memory_bytes < ram_gb * GiB
    assert_consistent(info)


def test_pi5_4gb_details():
    info = detect(DEVICES / "pi5-4gb", gpu_offload=True)
    assert info.cpu_model == "Cortex-A76"
    assert info.total_memory_bytes == 4045216 * 1024
    assert info.available_memory_bytes == 3612368 * 1024
    assert info.gpu_offload is True
    assert "device-tree compatible lists raspberrypi,5-model-b" in info.evidence
    assert any("c04170" in line and "4 GB" in line for line in info.evidence)


def test_orin_nano_super_and_per_cluster_core_ids():
    # Orin restarts core_id per cluster (cpu4 has core_id 0 like cpu0): siblings lists must decide.
    root = DEVICES / "orin-nano-8gb"
    assert (root / "sys/devices/system/cpu/cpu4/topology/core_id").read_text().strip() == "0"
    info = detect(root, gpu_offload=False)
    assert info.cpu_model == "Cortex-A78AE"
    assert any("-super" in line for line in info.evidence)


def test_desktop_turbo_favoured_cores_are_not_big_little():
    # amd-pstate gives preferred cores a ~3% higher max frequency: still one class of core.
    info = detect(DEVICES / "x86-desktop", gpu_offload=False)
    assert info.efficiency_cores == ()
    assert info.cpu_model == "AMD Ryzen 7 7700X 8-Core Processor"


def test_mac_m2_from_sysctl():
    values = json.loads((DEVICES / "mac-m2-16gb.json").read_text())
    info = detect(Path("/nonexistent"), sysctl=values, gpu_offload=True)
    assert (info.kind, info.board, info.board_ram_gb) == ("mac", "Apple M2 (Mac14,2)", 16)
    assert info.total_memory_bytes == 16 * GiB
    assert info.available_memory_bytes == 16 * GiB * 62 // 100
    assert (info.physical_cores, info.logical_cores) == (8, 8)
    assert len(info.performance_cores) == 4 and len(info.efficiency_cores) == 4
    assert info.cpu_model == "Apple M2"
    assert info.cpu_features == ("neon", "dotprod", "i8mm", "fp16")
    assert info.arch == "aarch64"
    assert (info.jetson_module, info.l4t_release) == (None, None)
    assert_consistent(info)


def test_mac_under_rosetta_says_so():
    values = json.loads((DEVICES / "mac-m2-16gb.json").read_text()) | {"sysctl.proc_translated": "1"}
    info = detect(Path("/nonexistent"), sysctl=values, gpu_offload=False)
    assert any("Rosetta" in line for line in info.evidence)


def test_mac_with_sparse_sysctl_still_works():
    info = detect(Path("/"), sysctl={"hw.memsize": "8589934592", "hw.physicalcpu": "nonsense"}, gpu_offload=False)
    assert info.kind == "mac" and info.total_memory_bytes == 8 * GiB
    assert_consistent(info)


def test_empty_root_is_unknown(tmp_path):
    info = detect(tmp_path, gpu_offload=False)
    assert info.kind == "unknown"
    assert (info.total_memory_bytes, info.board_ram_gb, info.jetson_module) == (0, None, None)
    assert info.physical_cores == info.logical_cores == 1
    assert_consistent(info)


def test_garbage_files_fall_back(tmp_path):
    write(
        tmp_path,
        {
            "proc/cpuinfo": b"\xff\xfe\x00garbage\n:::\nprocessor : x\n\n",
            "proc/meminfo": "MemTotal: lots kB\nMemAvailable:\n",
            "proc/device-tree/compatible": b"\x89PNG\x00\xff\xff",
            "proc/device-tree/model": b"\x00\x00",
            "etc/nv_tegra_release": "not a release\n",
            "sys/module/tegra_fuse/parameters/tegra_chip_id": "banana\n",
            "sys/class/dmi/id/chassis_type": "desk\n",
            "sys/devices/system/cpu/online": "0-99999999\n",
            "sys/devices/system/cpu/cpu0/cpu_capacity": "-5\n",
            "sys/devices/system/cpu/cpu0/topology/thread_siblings_list": "3-1\n",
        },
    )
    (tmp_path / "sys/class/power_supply/BAT0").mkdir(parents=True)
    (tmp_path / "sys/class/power_supply/BAT0/type").mkdir()  # a directory where a file should be
    info = detect(tmp_path, gpu_offload=False)
    assert info.kind == "jetson"  # a present nv_tegra_release is still a sign, even if unparseable
    assert info.l4t_release is None and info.total_memory_bytes == 0
    assert info.logical_cores == 1
    assert_consistent(info)


def test_garbage_pi_revision(tmp_path):
    write(tmp_path, {"proc/cpuinfo": "Revision\t: zzzz\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n"})
    info = detect(tmp_path, gpu_offload=False)
    assert (info.kind, info.board_ram_gb) == ("unknown", None)
    assert info.board == "Raspberry Pi 5 Model B Rev 1.0"


def test_pi_in_container_without_device_tree(tmp_path):
    # Docker masks /sys/firmware, so /proc/device-tree is gone; cpuinfo still has Revision and Model.
    root = tmp_path / "pi"
    shutil.copytree(DEVICES / "pi5-16gb", root)
    shutil.rmtree(root / "proc/device-tree")
    info = detect(root, gpu_offload=False)
    assert (info.kind, info.board, info.board_ram_gb) == ("pi5", "Raspberry Pi 5 Model B Rev 1.1", 16)


def test_jetson_container_without_device_tree(tmp_path):
    root = tmp_path / "orin"
    shutil.copytree(DEVICES / "orin-nano-8gb", root)
    shutil.rmtree(root / "proc/device-tree")
    info = detect(root, gpu_offload=False)
    assert (info.kind, info.l4t_release, info.board_ram_gb) == ("jetson", "36.4.3", None)
    assert info.board == "NVIDIA Jetson Orin"
    assert any("tegra_fuse" in line for line in info.evidence)


def test_jetson_power_mode_with_cores_offline(tmp_path):
    root = tmp_path / "nx"
    shutil.copytree(DEVICES / "orin-nx-16gb", root)
    write(root, {"sys/devices/system/cpu/online": "0-3\n"})
    info = detect(root, gpu_offload=False)
    assert (info.logical_cores, info.performance_cores) == (4, (0, 1, 2, 3))
    assert any("4 of 8 CPUs online" in line for line in info.evidence)


def test_big_little_ranked_by_capacity(tmp_path):
    # RK3588-style: 4x Cortex-A55 (cpu0-3) then 4x Cortex-A76 (cpu4-7).
    cpuinfo = "".join(
        f"processor\t: {cpu}\nFeatures\t: fp asimd asimdhp asimddp\nCPU implementer\t: 0x41\n"
        f"CPU architecture: 8\nCPU part\t: {'0xd05' if cpu < 4 else '0xd0b'}\n\n"
        for cpu in range(8)
    )
    files = {"proc/cpuinfo": cpuinfo, "sys/devices/system/cpu/online": "0-7\n"}
    for cpu in range(8):
        files[f"sys/devices/system/cpu/cpu{cpu}/cpu_capacity"] = "414\n" if cpu < 4 else "1024\n"
    info = detect(write(tmp_path, files), gpu_offload=False)
    assert (info.performance_cores, info.efficiency_cores) == ((4, 5, 6, 7), (0, 1, 2, 3))
    assert info.cpu_model == "Cortex-A55 + Cortex-A76"


def test_intel_hybrid_ranked_by_max_freq_with_smt(tmp_path):
    # i7-1255U-like: 2 P-cores with SMT (cpu0-3) and 8 E-cores (cpu4-11); one favoured P-core.
    files = {"sys/devices/system/cpu/online": "0-11\n"}
    for cpu in range(12):
        siblings = f"{cpu & ~1},{cpu | 1}" if cpu < 4 else str(cpu)
        freq = (4700000 if cpu < 2 else 4600000) if cpu < 4 else 3500000
        files[f"sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list"] = siblings + "\n"
        files[f"sys/devices/system/cpu/cpu{cpu}/cpufreq/cpuinfo_max_freq"] = f"{freq}\n"
    info = detect(write(tmp_path, files), gpu_offload=False)
    assert (info.physical_cores, info.logical_cores) == (10, 12)
    assert info.performance_cores == (0, 2)
    assert info.efficiency_cores == tuple(range(4, 12))


def test_cpuinfo_core_ids_when_sysfs_has_no_topology(tmp_path):
    cpuinfo = "".join(
        f"processor\t: {cpu}\nphysical id\t: 0\ncore id\t\t: {cpu % 2}\nflags\t\t: fpu lm avx avx2\n\n"
        for cpu in range(4)
    )
    info = detect(write(tmp_path, {"proc/cpuinfo": cpuinfo}), gpu_offload=False)
    assert (info.physical_cores, info.logical_cores, info.performance_cores) == (2, 4, (0, 1))
    assert info.arch == "x86_64"


@pytest.mark.parametrize(
    ("supplies", "kind"),
    [
        ({"BAT0/type": "Battery\n", "AC/type": "Mains\n"}, "laptop"),
        ({"hidpp_battery_0/type": "Battery\n", "hidpp_battery_0/scope": "Device\n"}, "unknown"),
        ({}, "unknown"),
    ],
)
def test_battery_fallback_without_chassis_type(tmp_path, supplies, kind):
    root = write(tmp_path, {f"sys/class/power_supply/{name}": text for name, text in supplies.items()})
    assert detect(root, gpu_offload=False).kind == kind


def test_unlisted_chassis_type_with_battery_is_a_laptop(tmp_path):
    root = write(tmp_path, {"sys/class/dmi/id/chassis_type": "2\n", "sys/class/power_supply/BAT1/type": "Battery\n"})
    assert detect(root, gpu_offload=False).kind == "laptop"


@pytest.mark.parametrize(
    ("revision", "decoded"),
    [
        ("c04170", (0x17, 4)),
        ("d04171", (0x17, 8)),
        ("e04171", (0x17, 16)),
        ("c03114", (0x11, 4)),
        ("b03115", (0x11, 2)),
        ("d04190", (0x19, 8)),
        ("900092", (0x09, None)),
        ("a02082", (0x08, 1)),
        ("0002", None),
        ("", None),
        ("nope", None),
    ],
)
def test_decode_pi_revision(revision, decoded):
    assert decode_pi_revision(revision) == decoded


def test_parse_l4t_release_and_cpu_lists():
    assert parse_l4t_release("# R36 (release), REVISION: 4.3, GCID: 1, BOARD: generic\n") == "36.4.3"
    assert parse_l4t_release("# R32 (release), REVISION: 7.4, GCID: 2") == "32.7.4"
    assert parse_l4t_release("") is None
    assert parse_cpu_list("0-3,8-9\n") == [0, 1, 2, 3, 8, 9]
    assert parse_cpu_list("5") == [5]
    assert parse_cpu_list("3-1") == [] and parse_cpu_list("a-b") == [] and parse_cpu_list(None) == []


def test_llama_gpu_offload_is_a_bool():
    assert isinstance(llama_gpu_offload(), bool)


def test_this_machine_is_self_consistent():
    info = detect(Path("/"), gpu_offload=False)
    assert info.total_memory_bytes > 0
    assert info.arch != "unknown" and info.cpu_model
    assert_consistent(info)
