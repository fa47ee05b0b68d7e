"""Human-readable text for the CLI: tables and stat lines. No terminal I/O here, only strings."""

from __future__ import annotations

from collections.abc import Iterable

GIB = 2**30


def format_stats(stats, loaded=None, tuned_note: str | None = None) -> str:
    """One line like `ollama run --verbose`: prompt tokens (evaluated and cached) and rates, each
    rate only where enough work was timed for it to mean something."""
    if stats is None:
        return ""
    p = stats.prefill
    prompt = f"prompt {p.prompt_tokens} tok"
    if p.reused:
        prompt += f" ({p.reused} cached, {p.evaluated} new)"
    parts = [
        prompt + _rate(stats.prompt_tps),
        f"generated {stats.generated_tokens} tok" + _rate(stats.generation_tps),
        f"first token {stats.time_to_first_token:.2f} s",
    ]
    if loaded is not None:
        s = loaded.settings
        parts.append(f"load {loaded.load_seconds:.2f} s")
        parts.append(
            f"threads {s.n_threads}/{s.n_threads_batch}, ctx {loaded.n_ctx}, {s.load_mode}"
            + (", lazy PLE" if s.lazy_mode == "on" else "")
        )
        if loaded.backend.avoided:
            parts.append(f"kernels {loaded.backend.kernels}")
        if tuned_note:
            parts.append(tuned_note)
    return "[" + " | ".join(parts) + "]"


def _rate(tps: float | None) -> str:
    return f" @ {tps:.1f} tok/s" if tps is not None else ""


def format_profiles_table(profiles: Iterable) -> str:
    rows = [("PROFILE", "FAMILY", "RAM", "MODEL", "QUANT", "CTX", "THREADS", "DESCRIPTION")]
    for p in sorted(profiles, key=lambda p: (p.family, p.memory_gb)):
        ram = f"{p.memory_gb} GB" if p.memory_gb else "any"
        threads = "auto" if p.n_threads == 0 else f"{p.n_threads}/{p.n_threads_batch}"
        rows.append((p.name, p.family, ram, p.model.upper(), p.quants[0], str(p.n_ctx), threads, p.description))
    return _table(rows)


def format_device(info, choice, backend=None) -> str:
    lines = [
        f"board:     {info.board}",
        f"kind:      {info.kind} ({info.arch})",
        f"memory:    {info.total_memory_bytes / GIB:.1f} GiB total, "
        f"{info.available_memory_bytes / GIB:.1f} GiB available"
        + (f" (board sold as {info.board_ram_gb} GB)" if info.board_ram_gb else ""),
        f"cpu:       {info.cpu_model}, {info.physical_cores} physical / {info.logical_cores} logical cores",
    ]
    if info.efficiency_cores:
        lines.append(f"cores:     performance {list(info.performance_cores)}, efficiency {list(info.efficiency_cores)}")
    lines.append(f"features:  {', '.join(info.cpu_features) or 'none detected'}")
    if info.jetson_module:
        lines.append(f"jetson:    {info.jetson_module}, L4T {info.l4t_release or 'unknown'}")
    lines.append(f"gpu:       {'llama.cpp built with GPU offload' if info.gpu_offload else 'CPU-only llama.cpp build'}")
    if backend is not None:
        lines.append(f"kernels:   {backend.kernels}: {backend.reason}")
    p = choice.profile
    lines += [
        "",
        f"profile:   {p.name}: {p.description}",
        f"settings:  {p.model.upper()} {p.quants[0]}, ctx {p.n_ctx}, threads "
        f"{'auto' if p.n_threads == 0 else p.n_threads}/{'auto' if p.n_threads_batch == 0 else p.n_threads_batch}, "
        f"{p.load_mode}, lazy PLE {p.lazy_mode}, GPU layers {p.n_gpu_layers}",
    ]
    lines += ["", "why:"] + [f"  - {line}" for line in tuple(info.evidence) + tuple(choice.reasons)]
    return "\n".join(lines)


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
