"""The memory planner: decisions per device, refusals with numbers, the runner's fit check."""

import json
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from conftest import require

from edge.device.info import DeviceInfo
from edge.errors import MemoryFitError, UsageError
from edge.model.gguf import GGUFInfo, TensorInfo, inspect_gguf
from edge.model.memory import MIB, check_fits
from edge.profiles import load_profile_file
from edge.settings import RunSettings
from edge.setup.plan import choose_plan, format_plan_table, plan_to_dict

ROOT = Path(__file__).resolve().parents[1]
KB = 1024


def profile(name: str, **changes):
    return replace(load_profile_file(ROOT / "profiles" / f"{name}.toml"), **changes)


def device(kind: str, mem_total_kb: int, board_ram_gb=None, jetson_module=None, available_kb=0) -> DeviceInfo:
    """MemTotal values are the recorded ones in tests/fixtures/devices (Pi 5 8 GB: 8 GiB less the
    same 146 MiB the 4 GB board reserves)."""
    return DeviceInfo(
        kind=kind,
        board=kind,
        board_ram_gb=board_ram_gb,
        total_memory_bytes=mem_total_kb * KB,
        available_memory_bytes=available_kb * KB,
        physical_cores=4,
        logical_cores=4,
        performance_cores=(0, 1, 2, 3),
        efficiency_cores=(),
        cpu_model="test",
        cpu_features=(),
        arch="aarch64",
        jetson_module=jetson_module,
        l4t_release=None,
        gpu_offload=kind == "jetson",
        evidence=(),
    )


PI5_4GB = device("pi5", 4_045_216, 4)
PI5_8GB = device("pi5", 8_239_520, 8)
PI5_16GB = device("pi5", 16_577_184, 16)
ORIN_NANO = device("jetson", 7_802_548, jetson_module="orin-nano-8gb")
LAPTOP_16GB = device("laptop", 15_996_788)


def line(plan, label):
    return next(x for x in plan.lines if x.label == label)


def test_pi5_4gb_fits_e2b_q4_0_with_lazy_ple_and_the_f16_projector():
    plan = choose_plan(profile("pi5-4gb"), PI5_4GB)
    assert (plan.model, plan.quant, plan.mmproj_precision, plan.lazy_ple) == ("e2b", "Q4_0", "F16", True)
    assert plan.settings.n_ctx == 2048 and plan.settings.lazy_mode == "on"
    assert line(plan, "per-layer embeddings").bytes == 0
    assert 0 < plan.headroom_bytes < 1024 * MIB
    assert plan.total_bytes == sum(x.bytes for x in plan.lines)


def test_a_mapped_ple_table_is_not_resident_so_4gb_fits_without_lazy_ple():
    # Mapped, the table's pages are clean and reclaimable (proved in a 4 GB cgroup: docs/performance.md).
    eager = choose_plan(profile("pi5-4gb", lazy_mode="off"), PI5_4GB)
    lazy = choose_plan(profile("pi5-4gb"), PI5_4GB)
    assert eager.quant == "Q4_0" and not eager.lazy_ple and eager.settings.lazy_mode == "off"
    assert eager.total_bytes == lazy.total_bytes and "reclaims" in line(eager, "per-layer embeddings").note


def test_lazy_ple_is_what_makes_4gb_fit_when_the_model_is_locked_in_memory():
    # The same board with lazy PLE off and mlock: the planner must turn lazy PLE on, and say why.
    plan = choose_plan(profile("pi5-4gb", lazy_mode="off", load_mode="mmap+mlock"), PI5_4GB)
    assert plan.quant == "Q4_0" and plan.lazy_ple and plan.settings.lazy_mode == "on"
    why = next(r for r in plan.reasons if r.startswith("lazy PLE turned on"))
    assert "over" in why  # e.g. "without it this plan needs 4.73 GB, 0.59 GB over"
    eager_needs = float(why.split("needs ")[1].split(" GB")[0]) * 1e9
    assert eager_needs > PI5_4GB.total_memory_bytes >= plan.total_bytes


def test_pi5_8gb_keeps_q4_k_m_the_f16_projector_and_full_context():
    plan = choose_plan(profile("pi5-8gb"), PI5_8GB)
    assert (plan.quant, plan.mmproj_precision, plan.lazy_ple, plan.settings.n_ctx) == ("Q4_K_M", "F16", False, 8192)
    assert plan.headroom_bytes > 1.5e9


def test_pi5_16gb_spends_memory_on_context():
    plan = choose_plan(profile("pi5-16gb"), PI5_16GB)
    assert (plan.model, plan.quant, plan.settings.n_ctx) == ("e2b", "Q4_K_M", 32768)
    assert line(plan, "KV cache").bytes == 204 * MIB  # 3 global x 32K + 12 sliding x 1K cells, f16


def test_orin_nano_shares_one_budget_between_cpu_and_gpu():
    plan = choose_plan(profile("orin-nano-8gb"), ORIN_NANO)
    assert (plan.quant, plan.mmproj_precision, plan.settings.n_ctx) == ("Q4_K_M", "F16", 8192)
    assert plan.settings.n_gpu_layers == -1
    assert "shared by CPU and GPU" in plan.reasons[0]
    assert "on the CPU" in line(plan, "projector (mmproj)").note  # mmproj_gpu = false in the profile
    assert plan.budget_bytes == ORIN_NANO.total_memory_bytes


def test_laptop_16gb_runs_e4b():
    plan = choose_plan(profile("x86-laptop-16gb"), LAPTOP_16GB)
    assert (plan.model, plan.quant, plan.settings.n_ctx) == ("e4b", "Q4_K_M", 16384)
    assert plan.files[0].repo == "ggml-org/gemma-4-E4B-it-GGUF"


def test_projector_drops_to_q8_0_when_f16_does_not_fit():
    # An "8 GB" laptop whose integrated GPU holds 1.4 GB back.
    plan = choose_plan(profile("x86-laptop-8gb"), device("laptop", 6_600_000))
    assert (plan.quant, plan.mmproj_precision) == ("Q4_K_M", "Q8_0")
    assert any(r.startswith("projector Q8_0 instead of F16") for r in plan.reasons)


def test_context_is_halved_before_the_quant_changes():
    # E4B's global-layer KV is 512 MiB at 32K and half that at 16K. With 11,200 MiB and 6 GiB held
    # back, halving the context is enough: quant and projector stay. (Lazy PLE would not help: the
    # mapped table is not counted as resident.)
    plan = choose_plan(profile("x86-laptop-32gb"), device("laptop", 11_200 * KB))
    assert (plan.quant, plan.mmproj_precision, plan.settings.n_ctx, plan.lazy_ple) == ("Q4_K_M", "F16", 16384, False)
    assert any(r.startswith("n_ctx 16384 instead of 32768") for r in plan.reasons)


def test_quants_are_walked_in_the_profiles_order():
    plan = choose_plan(profile("pi5-4gb"), device("pi5", 2_900 * KB))
    assert plan.quant == "UD-IQ2_M"
    skipped = [r.split(" ")[0] for r in plan.reasons if "does not fit" in r]
    assert skipped == ["Q4_0", "Q4_K_M"]


def test_forced_choice_that_cannot_fit_says_by_how_much():
    with pytest.raises(MemoryFitError) as err:
        choose_plan(profile("pi5-4gb"), PI5_4GB, model="e4b", quant="Q8_0")
    msg = str(err.value)
    assert "e4b Q8_0" in msg and "--quant Q8_0" in msg and "4.14 GB" in msg and "short" in msg


def test_forced_context_is_kept_exactly():
    plan = choose_plan(profile("pi5-8gb"), PI5_8GB, n_ctx=4096)
    assert plan.settings.n_ctx == 4096
    with pytest.raises(MemoryFitError, match="--ctx 131072"):
        choose_plan(profile("pi5-4gb"), PI5_4GB, model="e4b", n_ctx=131072)


def test_a_board_too_small_for_anything_says_so():
    with pytest.raises(MemoryFitError) as err:
        choose_plan(profile("pi5-4gb"), device("pi4", 2_000_000))
    msg = str(err.value)
    assert "UD-IQ2_M" in msg and "short" in msg and "text only" in msg


def test_real_listings_replace_catalog_sizes():
    @dataclass
    class Remote:
        name: str
        size: int

    listings = {
        "ggml-org/gemma-4-E2B-it-GGUF": [
            Remote("gemma-4-E2B-it-Q4_0.gguf", 2_900_000_000),
            Remote("mmproj-gemma-4-E2B-it-Q8_0.gguf", 560_000_000),
        ]
    }
    plan = choose_plan(profile("pi5-4gb"), PI5_4GB, listings=listings)
    assert [(f.role, f.size, f.size_source) for f in plan.files] == [
        ("model", 2_900_000_000, "hub listing"),
        ("mmproj", 560_000_000, "hub listing"),
    ]
    assert any("Q4_K_M: no listed repo has it" in r for r in plan.reasons)
    with pytest.raises(UsageError, match="Q8_0"):
        choose_plan(profile("pi5-4gb"), PI5_4GB, listings=listings, quant="Q8_0")


def test_text_only_plan_has_no_projector_lines():
    plan = choose_plan(profile("pi5-8gb"), PI5_8GB, with_mmproj=False)
    assert plan.mmproj_precision is None and len(plan.files) == 1
    assert not any("projector" in x.label for x in plan.lines)


def test_plan_serialises_and_prints():
    plan = choose_plan(profile("pi5-4gb"), PI5_4GB)
    data = json.loads(json.dumps(plan_to_dict(plan)))
    assert data["quant"] == "Q4_0" and data["settings"]["lazy_mode"] == "on"
    assert data["total_bytes"] == sum(x["bytes"] for x in data["memory"])
    table = format_plan_table(plan)
    for text in (
        "Files",
        "Memory",
        "KV cache",
        "compute buffers (approx.)",
        "left over",
        "Why",
        "gemma-4-E2B-it-Q4_0.gguf",
    ):
        assert text in table


def fake_e2b_file(file_size=2_841_481_184) -> GGUFInfo:
    meta = {
        "block_count": 35,
        "embedding_length": 1536,
        "attention.head_count": 8,
        "attention.head_count_kv": 1,
        "attention.key_length": 512,
        "attention.value_length": 512,
        "attention.key_length_swa": 256,
        "attention.value_length_swa": 256,
        "attention.sliding_window": 512,
        "attention.shared_kv_layers": 20,
        "attention.sliding_window_pattern": [il % 5 != 4 for il in range(35)],
        "feed_forward_length": 6144,
        "embedding_length_per_layer_input": 256,
        "context_length": 131072,
    }
    tensors = (
        TensorInfo("token_embd.weight", (1536, 262144), 2, 0),
        TensorInfo("per_layer_token_embd.weight", (256 * 35, 262144), 2, 0),
    )
    metadata = {"general.architecture": "gemma4", **{f"gemma4.{k}": v for k, v in meta.items()}}
    return GGUFInfo(Path("/fake/e2b.gguf"), 3, metadata, tensors, 0, file_size)


def test_check_fits_uses_the_real_ple_tensor():
    info = fake_e2b_file()
    lazy = check_fits(info, RunSettings(n_ctx=2048, lazy_mode="on"), PI5_4GB, 557_367_776, os_headroom_mb=600)
    locked = RunSettings(n_ctx=2048, lazy_mode="off", load_mode="mmap+mlock")
    eager = check_fits(info, locked, PI5_4GB, 557_367_776, os_headroom_mb=600)
    mapped = check_fits(info, RunSettings(n_ctx=2048, lazy_mode="off"), PI5_4GB, 557_367_776, os_headroom_mb=600)
    ple = 256 * 35 * 262144 // 32 * 18  # Q4_0 blocks
    assert eager.total_bytes - lazy.total_bytes == ple and mapped.total_bytes == lazy.total_bytes
    assert lazy.fits and not eager.fits
    assert any("over" in n for n in eager.notes)
    # The planner's arithmetic and the runner's agree apart from the PLE share it had to guess.
    plan = choose_plan(profile("pi5-4gb"), PI5_4GB)
    assert abs(plan.total_bytes - lazy.total_bytes) < 0.1 * plan.total_bytes


def test_check_fits_warns_when_memory_is_taken_right_now():
    busy = device("pi5", 8_239_520, 8, available_kb=1_000_000)
    report = check_fits(fake_e2b_file(), RunSettings(n_ctx=4096), busy, os_headroom_mb=1024)
    assert report.fits_device and not report.fits_now and not report.fits
    assert any("free right now" in n for n in report.notes)


@pytest.fixture
def gemma3_270m(demo_gguf) -> Path:
    """The embedded Gemma 3 270M (conftest assembles it once per session)."""
    return demo_gguf


def test_check_fits_on_the_embedded_model(gemma3_270m):
    info = inspect_gguf(gemma3_270m)
    report = check_fits(info, RunSettings(n_ctx=4096), PI5_4GB, os_headroom_mb=600)
    assert report.fits
    kv = next(x for x in report.lines if x.label == "KV cache")
    assert kv.bytes == 27 * MIB  # llama.cpp reports 12.00 + 15.00 MiB for this model at 4096
    assert next(x for x in report.lines if x.label == "model weights").bytes == info.file_size
    tiny = device("unknown", 500_000)
    assert not check_fits(info, RunSettings(n_ctx=4096), tiny, os_headroom_mb=600).fits


def test_check_fits_reads_the_ple_tensor_of_a_real_gemma4_file():
    path = ROOT / "tests" / "fixtures" / "gemma4-tiny" / "tiny-gemma-4-E2B.gguf"
    require(path.is_file(), f"the tiny Gemma 4 fixture {path}")
    info = inspect_gguf(path)
    ple = next(t for t in info.tensors if t.name == "per_layer_token_embd.weight").n_bytes
    lazy = check_fits(info, RunSettings(n_ctx=4096, lazy_mode="on"), PI5_4GB)
    eager = check_fits(info, RunSettings(n_ctx=4096, lazy_mode="off", load_mode="mlock"), PI5_4GB)
    # small table: auto = off
    auto = check_fits(info, RunSettings(n_ctx=4096, lazy_mode="auto", load_mode="mlock"), PI5_4GB)
    assert eager.total_bytes - lazy.total_bytes == ple > 0
    assert auto.total_bytes == eager.total_bytes


def test_a_worker_makes_room_for_e4b_on_a_4gb_pi():
    assert choose_plan(profile("pi5-4gb"), PI5_4GB).model == "e2b"
    # E4B alone fits only as a 2-bit quant with the Q8_0 projector; with a worker, Q4_0 and F16.
    alone = choose_plan(profile("pi5-4gb"), PI5_4GB, model="e4b")
    assert (alone.quant, alone.mmproj_precision) == ("UD-IQ2_M", "Q8_0")
    split = choose_plan(profile("pi5-4gb"), PI5_4GB, workers_room=3 * 10**9)
    assert (split.model, split.quant, split.mmproj_precision) == ("e4b", "Q4_0", "F16")
    assert split.total_bytes <= split.budget_bytes
    moved = next(line for line in split.lines if line.label == "on workers")
    assert moved.bytes < 0 and "of 42 layers over RPC" in moved.note
    assert any("E4B instead of the profile's E2B" in reason for reason in split.reasons)


def test_too_little_room_on_the_workers_keeps_the_profiles_model():
    plan = choose_plan(profile("pi5-4gb"), PI5_4GB, workers_room=100 * 10**6)
    assert plan.model == "e2b" and not any(line.label == "on workers" for line in plan.lines)
