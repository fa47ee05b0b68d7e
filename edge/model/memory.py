"""What a model needs in memory at run time: weights + KV cache + compute buffers + projector + OS headroom.

`check_fits` answers for a model file already on disk (launch refuses settings that cannot fit);
setup's planner (setup/plan.py) uses the same arithmetic (`memory_lines`) before anything is
downloaded. All numbers are bytes; MiB/GB appear only in text. CPU and GPU share memory on Jetson
and Apple Silicon, and every profile here runs on such a machine or on the CPU, so one budget (the
device's total memory) holds everything.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from edge.device.info import DeviceInfo
from edge.errors import MemoryFitError
from edge.model.kv_size import (
    AttentionShape,
    KVCacheEstimate,
    compute_buffer_bytes,
    dims_from_gguf,
    kv_cache_bytes,
    shape_from_gguf,
)
from edge.profiles import Profile
from edge.settings import RunSettings

MIB = 1 << 20
GB = 10**9
LAZY_AUTO_MIN = 4 << 30  # llama.cpp's lazy_mode=auto only reads tensors above 4 GiB lazily
# The projector's own compute buffers: an allowance for the audio encoder (not measured alone; a
# 30 s audio turn ran within the plan's cgroup), and for a picture what encoding it was measured to
# add at full size (docs/performance.md, "Pictures": 78 MiB at 63 image tokens, 317 at 540, 579 at
# 1064, E2B and E4B alike), rounded up to a line: 48 MiB + 0.5 MiB per image token.
MMPROJ_COMPUTE_ALLOWANCE = 128 * MIB
VISION_COMPUTE_BASE = 48 * MIB
VISION_COMPUTE_PER_TOKEN = MIB // 2


def projector_compute_bytes(image_tokens: int) -> int:
    """The larger of the audio allowance and one picture's encode at `image_tokens`."""
    return max(MMPROJ_COMPUTE_ALLOWANCE, VISION_COMPUTE_BASE + image_tokens * VISION_COMPUTE_PER_TOKEN)


PLE_TENSOR = "per_layer_token_embd.weight"  # Gemma 3n/4 per-layer embeddings


@dataclass(frozen=True)
class MemoryLine:
    label: str
    bytes: int
    note: str = ""


@dataclass(frozen=True)
class FitReport:
    lines: tuple[MemoryLine, ...]
    total_bytes: int
    budget_bytes: int
    available_bytes: int  # MemAvailable now (0 = unknown)
    needed_now_bytes: int  # what loading adds, without the OS headroom line
    notes: tuple[str, ...]

    @property
    def fits_device(self) -> bool:
        return self.total_bytes <= self.budget_bytes

    @property
    def fits_now(self) -> bool:
        return not self.available_bytes or self.needed_now_bytes <= self.available_bytes

    @property
    def fits(self) -> bool:
        return self.fits_device and self.fits_now


def gb(n: int) -> str:
    return f"{n / GB:.2f} GB"


def mib(n: int) -> str:
    return f"{n / MIB:,.0f} MiB"


def device_budget(device: DeviceInfo, profile: Profile | None = None) -> tuple[int, str]:
    """Bytes the plan may use in all (OS headroom is a line inside it), and where that number came from."""
    if device.total_memory_bytes:
        why = f"{gb(device.total_memory_bytes)} of RAM (MemTotal)"
    elif device.board_ram_gb:
        return device.board_ram_gb * 2**30, f"{device.board_ram_gb} GB board RAM (MemTotal unknown)"
    elif profile is not None and profile.memory_gb:
        return profile.memory_gb * 2**30, f"memory unknown: assuming the profile's {profile.memory_gb} GB"
    else:
        return 4 * 2**30, "memory unknown: assuming 4 GB"
    if device.kind == "jetson":
        why += ", shared by CPU and GPU"
    return device.total_memory_bytes, why


def lazy_effective(lazy_mode: str, ple_bytes: int) -> bool:
    return ple_bytes > 0 and (lazy_mode == "on" or (lazy_mode == "auto" and ple_bytes > LAZY_AUTO_MIN))


# Load modes that map the file without locking it. The per-layer-embedding table is only looked up
# (a row per layer per token), so mapped, its pages are clean file pages: read at load, then dropped
# by the kernel under pressure and read again on demand. Measured: E2B Q4_0 with the Q8_0 projector
# and a 30 s audio turn finished in a 3.4 GiB cgroup with lazy PLE off as well as on
# (docs/performance.md); only a locked or copied table must fit in RAM.
MAPPED_LOAD_MODES = ("mmap", "auto")


def memory_lines(
    *,
    weights: int,
    ple: int,
    lazy: bool,
    kv: KVCacheEstimate,
    compute: int,
    mmproj: int,
    mmproj_note: str,
    os_headroom: int,
    load_mode: str = "mmap",
    image_tokens: int = 0,
) -> list[MemoryLine]:
    """The arithmetic both choose_plan and check_fits use."""
    lines = []
    if ple and (lazy or load_mode in MAPPED_LOAD_MODES):
        lines.append(MemoryLine("model weights", weights - ple, f"file {gb(weights)} less the per-layer embeddings"))
        note = (
            f"{gb(ple)} read from the file on demand (lazy_mode=on), not resident"
            if lazy
            else f"{gb(ple)} mapped (load_mode={load_mode}): read at load, then clean pages the kernel reclaims"
        )
        lines.append(MemoryLine("per-layer embeddings", 0, note))
    else:
        note = f"includes the {gb(ple)} per-layer-embedding table" if ple else "whole file resident"
        lines.append(MemoryLine("model weights", weights, note))
    g, s = kv.global_layers, kv.sliding_layers
    kv_note = f"{kv.type_k}/{kv.type_v}, {g.layers} global layers x {g.cells} cells"
    if s.layers:
        kv_note += f" + {s.layers} sliding x {s.cells}"
    if kv.shared_layers:
        kv_note += f"; {kv.shared_layers} layers share"
    lines.append(MemoryLine("KV cache", kv.total_bytes, kv_note))
    lines.append(
        MemoryLine(
            "compute buffers (approx.)",
            compute,
            "estimate: n_ubatch x vocab logits or attention scores, whichever peaks",
        )
    )
    if mmproj:
        lines.append(MemoryLine("projector (mmproj)", mmproj, mmproj_note))
        compute = projector_compute_bytes(image_tokens)
        note = (
            f"a picture at {image_tokens} image tokens (measured line); they sit in the context counted above"
            if compute > MMPROJ_COMPUTE_ALLOWANCE
            else f"audio allowance (a picture at {image_tokens} image tokens needs less)"
        )
        lines.append(MemoryLine("projector compute (approx.)", compute, note))
    lines.append(MemoryLine("OS and other programs", os_headroom, "profile os_headroom_mb"))
    return lines


def context_buffers(
    shape: AttentionShape, dims, n_ctx: int, settings: RunSettings, *, swa_full: bool = False
) -> tuple[KVCacheEstimate, int]:
    """(KV cache, compute buffer bytes) a context of `n_ctx` with these settings allocates."""
    kv = kv_cache_bytes(
        shape,
        n_ctx,
        type_k=settings.type_k,
        type_v=settings.type_v,
        n_ubatch=settings.n_ubatch,
        n_batch=settings.n_batch,
        flash_attn=settings.flash_attn,
        swa_full=swa_full,
    )
    compute = compute_buffer_bytes(
        shape, dims, n_ctx, n_ubatch=settings.n_ubatch, n_batch=settings.n_batch, flash_attn=settings.flash_attn
    )
    return kv, compute


def check_fits(
    gguf_info,
    settings: RunSettings,
    device: DeviceInfo,
    mmproj_bytes: int = 0,
    *,
    os_headroom_mb: int = 0,
    mmproj_on_gpu: bool = False,
    swa_full: bool = False,
) -> FitReport:
    """choose_plan's arithmetic for a model file already on disk (edge.model.gguf.GGUFInfo)."""
    shape: AttentionShape = shape_from_gguf(gguf_info)
    dims = dims_from_gguf(gguf_info)
    ple_tensor = next((t for t in gguf_info.tensors if t.name == PLE_TENSOR), None)
    ple = ple_tensor.n_bytes if ple_tensor is not None else 0
    kv, compute = context_buffers(shape, dims, gguf_info.usable_ctx(settings.n_ctx), settings, swa_full=swa_full)
    lazy = lazy_effective(settings.lazy_mode, ple)
    lines = memory_lines(
        weights=gguf_info.file_size,
        ple=ple,
        lazy=lazy,
        kv=kv,
        compute=compute,
        mmproj=mmproj_bytes,
        mmproj_note="on the GPU (shared memory)" if mmproj_on_gpu else "on the CPU",
        os_headroom=os_headroom_mb * MIB,
        load_mode=settings.load_mode,
        image_tokens=settings.image_tokens,
    )
    budget, why = device_budget(device)
    total = sum(line.bytes for line in lines)
    available = device.available_memory_bytes
    needed_now = total - os_headroom_mb * MIB
    notes = [f"budget: {why}"]
    if total > budget:
        notes.append(
            f"needs {gb(total)} of {gb(budget)}: {gb(total - budget)} over; lower n_ctx, "
            "turn lazy_mode on or use a smaller quant"
        )
    if available and needed_now > available:
        notes.append(
            f"loading needs {gb(needed_now)} but only {gb(available)} is free right now "
            f"({gb(needed_now - available)} short); close other programs"
        )
    return FitReport(tuple(lines), total, budget, available, needed_now, tuple(notes))


def fit_on_device(
    gguf_info,
    settings: RunSettings,
    device: DeviceInfo,
    mmproj_bytes: int = 0,
    *,
    os_headroom_mb: int = 0,
    mmproj_on_gpu: bool = False,
    what: str = "the model",
) -> tuple[RunSettings, FitReport]:
    """The one fit policy for files on disk (setup's imported files, every load): the settings as
    they are when they fit this device, else with lazy PLE on when that fits, else MemoryFitError
    with the numbers. The projector's bytes count wherever one will be opened."""

    def report_for(s: RunSettings) -> FitReport:
        return check_fits(
            gguf_info, s, device, mmproj_bytes, os_headroom_mb=os_headroom_mb, mmproj_on_gpu=mmproj_on_gpu
        )

    report = report_for(settings)
    if report.fits_device:
        return settings, report
    if settings.lazy_mode != "on":
        lazy = replace(settings, lazy_mode="on")
        lazy_report = report_for(lazy)
        if lazy_report.fits_device:
            return lazy, lazy_report
    raise MemoryFitError(
        f"{what} with n_ctx {settings.n_ctx} needs {gb(report.total_bytes)} but this machine has "
        f"{gb(report.budget_bytes)} ({gb(report.total_bytes - report.budget_bytes)} over); lower --ctx or use "
        "a smaller quant"
    )
