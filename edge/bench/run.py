"""One whole `edge-gemma bench` run: load the model (timed, page cache noted), run the tests, an
optional sustained run, a chat time-to-first-token, and the conditions around them.

The measurement itself is in bench.py; this module adds what llama-bench does not report (load time,
peak RSS, TTFT, temperatures) and the probes behind those numbers.
"""

from __future__ import annotations

import ctypes
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from edge.bench.measure import (
    BenchContext,
    BenchResult,
    BenchTest,
    Progress,
    SweepSpec,
    check_sweep,
    expand_sweep,
    mean,
    now_rfc3339,
    run_sweep,
)
from edge.launch import RunPlan
from edge.model.engine import GREEDY
from edge.settings import RunSettings, usable_cores

MIN_BENCH_CTX = 512  # room for the chat prompt used to time the first token


@dataclass(frozen=True)
class DurationBlock:
    end_s: float  # seconds since the duration run started
    tokens_per_s: float
    temp_c: float | None
    throttled: bool


@dataclass(frozen=True)
class DurationResult:
    """Decode run continuously (blocks of tgN from an empty cache) to show sustained speed."""

    n_threads: int
    block_tokens: int
    seconds: float
    blocks: tuple[DurationBlock, ...]

    @property
    def window_s(self) -> float:
        return min(60.0, self.seconds / 2)  # "first minute", shorter when the run is short

    @property
    def first_tps(self) -> float:
        return mean(
            [b.tokens_per_s for b in self.blocks if b.end_s <= self.window_s]
            or [b.tokens_per_s for b in self.blocks[:1]]
        )

    @property
    def last_tps(self) -> float:
        end = self.blocks[-1].end_s if self.blocks else 0.0
        return mean([b.tokens_per_s for b in self.blocks if b.end_s > end - self.window_s])

    @property
    def max_temp_c(self) -> float | None:
        temps = [b.temp_c for b in self.blocks if b.temp_c is not None]
        return max(temps) if temps else None


def run_duration(
    loaded, seconds: float, *, n_threads: int, block_tokens: int = 32, thermal=None, progress: Progress | None = None
) -> DurationResult:
    """Decode continuously for `seconds` in tg blocks, recording speed and temperature per block."""
    blocks: list[DurationBlock] = []
    settings = loaded.settings
    with BenchContext(loaded, n_batch=settings.n_batch, n_ubatch=settings.n_ubatch) as bench:
        bench.set_threads(n_threads, n_threads)
        bench.generate(1)  # warmup
        start = time.monotonic()
        try:
            while time.monotonic() - start < seconds:
                bench.clear()
                elapsed = bench.generate(block_tokens)
                sample = thermal.sample() if thermal else None
                block = DurationBlock(
                    time.monotonic() - start,
                    1e9 * block_tokens / elapsed,
                    sample.cpu_temp_c if sample else None,
                    bool(sample and sample.throttled),
                )
                blocks.append(block)
                if progress:
                    temp = f", {block.temp_c:.1f} C" if block.temp_c is not None else ""
                    progress(f"sustained decode: {block.end_s:.0f}/{seconds:.0f} s, {block.tokens_per_s:.2f} t/s{temp}")
        except KeyboardInterrupt:
            pass  # keep the blocks so far: a sustained run is often stopped by hand
        finally:
            bench.clear()
    return DurationResult(n_threads, block_tokens, seconds, tuple(blocks))


TTFT_MESSAGES = [{"role": "user", "content": "In two sentences, what can a Raspberry Pi 5 do at home?"}]


@dataclass(frozen=True)
class RunConditions:
    """What a run measured besides tokens/s, and what it ran on: enough to compare two runs."""

    model_filename: str
    model_type: str  # llama.cpp's description, e.g. "gemma3 270M Q4_K - Medium"
    model_size: int
    model_n_params: int
    n_ctx: int
    load_mode: str
    lazy_mode: str
    flash_attn: bool
    type_k: str
    type_v: str
    n_gpu_layers: int
    device_profile: str
    device_kind: str
    device_board: str
    cpu_info: str
    load_s: float
    load_cache: str  # page cache before the load: cold, warm, partial N%, unknown
    peak_rss: int | None  # bytes, whole process (VmHWM)
    ttft_s: float | None  # short chat prompt, warm model: call -> first text
    temp_start_c: float | None
    temp_end_c: float | None
    power_mode: str | None
    throttled_since_boot: tuple[str, ...]
    thermal_source: str
    tuned: str | None  # which tuned settings were applied, if any
    use_extra_bufts: bool  # llama.cpp's model param (llama-bench's "repack" field)
    cpu_kernels: str  # extra CPU kernels used, e.g. "CPU_REPACK (AMX avoided)", and below why
    cpu_kernels_reason: str
    edge_gemma_version: str
    llama_cpp_version: str
    system_info: str
    started_at: str


@dataclass(frozen=True)
class BenchRun:
    run_id: str
    conditions: RunConditions
    results: tuple[BenchResult, ...]
    interrupted: bool = False
    duration: DurationResult | None = None


@dataclass(frozen=True)
class BenchPlan:
    run: RunPlan  # model, device, profile and the settings loaded (n_ctx sized for the tests)
    tests: tuple[BenchTest, ...]
    warnings: tuple[str, ...]


def plan_bench(
    lists: dict[str, tuple[int, ...] | None],
    *,
    only: str | None,
    repetitions: int,
    warmup: bool,
    n_ctx: int | None,
    model: str | None,
    device_name: str,
    root: Path = Path("/"),
    no_tune: bool = False,
    workers: tuple[str, ...] | None = None,
    worker_layers: int | None = None,
) -> BenchPlan:
    """Check the sweep's sizes, then resolve the model once at the context the tests need.

    `lists`: the command line's value lists by llama-bench letter (p, n, d, t, tb, b, ub); None = default.
    """
    from edge.launch import LoadRequest, SettingsOverrides, prepare_run

    def sweep_with(s: RunSettings) -> SweepSpec:
        return SweepSpec(
            n_prompt=() if only == "tg" else lists["p"],
            n_gen=() if only == "pp" else lists["n"],
            n_depth=lists["d"],
            n_threads=lists["t"] or (s.n_threads,),
            n_threads_batch=lists["tb"] or (None if lists["t"] else (s.n_threads_batch,)),
            n_batch=lists["b"] or (s.n_batch,),
            n_ubatch=lists["ub"] or (s.n_ubatch,),
            repetitions=repetitions,
            warmup=warmup,
        )

    check_sweep(sweep_with(RunSettings()))  # sizes first: before the model is even looked at
    need = max(t.n_ctx_needed for t in expand_sweep(sweep_with(RunSettings())))
    overrides = SettingsOverrides(n_ctx=n_ctx or max(need, MIN_BENCH_CTX))
    plan = prepare_run(
        LoadRequest(
            model=model,
            device=device_name,
            overrides=overrides,
            no_tune=no_tune,
            root=root,
            workers=workers,
            worker_layers=worker_layers,
        )
    )
    limit = plan.model_info.usable_ctx(n_ctx or 1 << 30)
    sweep = sweep_with(plan.resolved.settings)
    warnings = check_sweep(sweep, n_ctx_limit=limit, logical_cores=usable_cores(plan.device)[1])
    # The model loads with the sweep's first batch sizes; later ones get their own contexts.
    settings = replace(
        plan.resolved.settings, n_batch=sweep.n_batch[0], n_ubatch=min(sweep.n_ubatch[0], sweep.n_batch[0])
    )
    plan = replace(plan, resolved=replace(plan.resolved, settings=settings))
    return BenchPlan(plan, tuple(expand_sweep(sweep)), tuple(warnings))


def bench_model(
    plan: RunPlan,
    tests: Sequence[BenchTest],
    repetitions: int,
    *,
    thermal=None,
    warmup: bool = True,
    cold: bool = False,
    duration_s: float = 0.0,
    progress: Progress | None = None,
) -> BenchRun:
    """Load the model (timed), run the tests, optionally a sustained run, then a chat TTFT."""
    from edge import __version__
    from edge.launch import load_model

    model_path, settings, device = plan.model_path, plan.resolved.settings, plan.device
    profile_name, tuned = plan.choice.profile.name, plan.tuned_note
    started_at = now_rfc3339()
    if cold:
        evict_page_cache(model_path)
    load_cache = describe_cache(page_cache_fraction(model_path))
    first = thermal.sample() if thermal else None
    if progress:
        progress(f"loading {model_path.name} ({load_cache} page cache)")
    loaded = load_model(plan)
    try:
        outcome = run_sweep(loaded, tests, repetitions, warmup=warmup, thermal=thermal, progress=progress)
        duration = None
        if duration_s > 0 and not outcome.interrupted:
            n_threads = tests[0].n_threads if tests else settings.n_threads
            duration = run_duration(loaded, duration_s, n_threads=n_threads, thermal=thermal, progress=progress)
        ttft = None if outcome.interrupted else measure_ttft(loaded)
        last = thermal.sample() if thermal else None
        description, model_size, n_params = loaded.describe()
        s = loaded.settings
        conditions = RunConditions(
            model_filename=str(model_path),
            model_type=description,
            model_size=model_size,
            model_n_params=n_params,
            n_ctx=loaded.n_ctx,
            load_mode=s.load_mode,
            lazy_mode=s.lazy_mode,
            flash_attn=s.flash_attn,
            type_k=s.type_k,
            type_v=s.type_v,
            n_gpu_layers=s.n_gpu_layers,
            device_profile=profile_name,
            device_kind=device.kind,
            device_board=device.board,
            cpu_info=ggml_cpu_description() or device.cpu_model,
            load_s=loaded.load_seconds,
            load_cache=load_cache,
            peak_rss=peak_rss_bytes(),
            ttft_s=ttft,
            temp_start_c=first.cpu_temp_c if first else None,
            temp_end_c=last.cpu_temp_c if last else None,
            power_mode=last.power_mode if last else None,
            throttled_since_boot=last.since_boot if last else (),
            thermal_source=last.source if last else "not read",
            tuned=tuned,
            use_extra_bufts=loaded.backend.use_extra_bufts,
            cpu_kernels=loaded.backend.kernels,
            cpu_kernels_reason=loaded.backend.reason,
            edge_gemma_version=__version__,
            llama_cpp_version=_lib().__version__,
            system_info=_lib().llama_print_system_info().decode(errors="replace").strip(),
            started_at=started_at,
        )
    finally:
        loaded.close()
    run_id = started_at.replace("-", "").replace(":", "").rstrip("Z") + f"-{random.randrange(16**4):04x}"
    return BenchRun(run_id, conditions, tuple(outcome.results), outcome.interrupted, duration)


def measure_ttft(loaded) -> float | None:
    """Time to first token of a short chat turn on the warm model, as a user would feel it."""
    try:
        generation = loaded.chat(TTFT_MESSAGES, GREEDY.with_(max_tokens=4))
        generation.run()
    except KeyboardInterrupt:
        return None
    finally:
        loaded.engine.reset()  # the next measurement starts from an empty cache
    return generation.stats.time_to_first_token if generation.stats else None


def _lib():
    import llama_cpp

    return llama_cpp


def ggml_cpu_description() -> str | None:
    """The CPU as llama-bench's cpu_info names it: ggml's CPU backend device description."""
    try:
        lib = ctypes.CDLL(str(Path(_lib().__file__).parent / "lib" / "libggml.so"))
        lib.ggml_backend_dev_count.restype = ctypes.c_size_t
        lib.ggml_backend_dev_get.restype = ctypes.c_void_p
        lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
        lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
        lib.ggml_backend_dev_description.restype = ctypes.c_char_p
        lib.ggml_backend_dev_description.argtypes = [ctypes.c_void_p]
        names = [
            lib.ggml_backend_dev_description(dev).decode(errors="replace")
            for dev in map(lib.ggml_backend_dev_get, range(lib.ggml_backend_dev_count()))
            if lib.ggml_backend_dev_type(dev) in (0, 3)
        ]  # CPU, ACCEL
    except (OSError, AttributeError):
        return None
    return ", ".join(names) or None


def peak_rss_bytes() -> int | None:
    """The process's peak resident set (Linux VmHWM; getrusage elsewhere)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB
    except (ImportError, OSError):
        return None


def page_cache_fraction(path) -> float | None:
    """How much of the file is in the page cache (mincore on a mapping), None where unknown."""
    import mmap
    import os
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                return None
            addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fh.fileno(), 0)
            if addr in (None, ctypes.c_void_p(-1).value):
                return None
            try:
                pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
                vec = (ctypes.c_ubyte * pages)()
                if libc.mincore(ctypes.c_void_p(addr), size, vec) != 0:
                    return None
                import numpy as np

                return float((np.frombuffer(vec, dtype=np.uint8) & 1).sum()) / pages
            finally:
                libc.munmap(ctypes.c_void_p(addr), size)
    except (OSError, AttributeError, ValueError):
        return None


def evict_page_cache(path) -> None:
    """Ask the kernel to drop the file's clean cached pages, so the next load reads the disk."""
    import os

    if not hasattr(os, "posix_fadvise"):
        return
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    except OSError:
        pass


def describe_cache(fraction: float | None) -> str:
    if fraction is None:
        return "unknown"
    if fraction < 0.05:
        return "cold"
    if fraction > 0.95:
        return "warm"
    return f"partial {fraction:.0%}"
