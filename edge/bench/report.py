"""Bench results as text: llama-bench's md/json/jsonl/csv, published reference numbers, saved runs
and their side-by-side comparison. Strings only; no terminal I/O here.

JSON records use llama-bench's field names where they mean the same thing, so scripts written for
llama-bench output read ours; our extra fields (load_s, ttft_s, peak_rss, temperatures, ...) follow.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.bench.measure import BenchResult
from edge.bench.run import BenchRun
from edge.errors import EdgeError, UsageError
from edge.paths import data_dir
from edge.setup.catalog import has_quant_token

FORMATS = ("md", "json", "jsonl", "csv")
MIB = 2**20


class ResultsFileError(EdgeError):
    """The saved results file cannot be read."""


# ---- records ------------------------------------------------------------------------------------


def to_records(run: BenchRun) -> list[dict[str, Any]]:
    return [to_record(run, result) for result in run.results]


def to_record(run: BenchRun, result: BenchResult) -> dict[str, Any]:
    c, t = run.conditions, result.spec
    return {
        # llama-bench's fields
        "cpu_info": c.cpu_info,
        "backends": "CPU" if c.n_gpu_layers == 0 else "GPU",
        "model_filename": c.model_filename,
        "model_type": c.model_type,
        "model_size": c.model_size,
        "model_n_params": c.model_n_params,
        "n_batch": t.n_batch,
        "n_ubatch": t.n_ubatch,
        "n_threads": t.n_threads,
        "n_threads_batch": t.n_threads_batch,
        "type_k": c.type_k,
        "type_v": c.type_v,
        "n_gpu_layers": c.n_gpu_layers,
        "flash_attn": int(c.flash_attn),
        "use_mmap": c.load_mode.startswith("mmap"),
        "load_mode": c.load_mode,
        "lazy_mode": c.lazy_mode,
        "repack": int(c.use_extra_bufts),
        "n_prompt": t.n_prompt,
        "n_gen": t.n_gen,
        "n_depth": t.n_depth,
        "test_time": result.test_time,
        "avg_ns": result.avg_ns,
        "stddev_ns": result.stddev_ns,
        "avg_ts": result.avg_ts,
        "stddev_ts": result.stddev_ts,
        "samples_ns": list(result.samples_ns),
        "samples_ts": list(result.samples_ts),
        # ours
        "test": t.name,
        "run_id": run.run_id,
        "device_profile": c.device_profile,
        "device_kind": c.device_kind,
        "device_board": c.device_board,
        "n_ctx": c.n_ctx,
        "load_s": c.load_s,
        "load_cache": c.load_cache,
        "peak_rss": c.peak_rss,
        "ttft_s": c.ttft_s,
        "temps_c": list(result.temps_c),
        "throttled": list(result.throttled),
        "throttled_any": result.any_throttled,
        "temp_start_c": c.temp_start_c,
        "temp_end_c": c.temp_end_c,
        "throttled_since_boot": list(c.throttled_since_boot),
        "power_mode": c.power_mode,
        "thermal_source": c.thermal_source,
        "tuned": c.tuned,
        "cpu_kernels": c.cpu_kernels,
        "cpu_kernels_reason": c.cpu_kernels_reason,
        "edge_gemma_version": c.edge_gemma_version,
        "llama_cpp_version": c.llama_cpp_version,
        "system_info": c.system_info,
        "interrupted": run.interrupted,
    }


def sustained_record(run: BenchRun) -> dict[str, Any] | None:
    d = run.duration
    if d is None:
        return None
    return {
        "test": f"tg{d.block_tokens} sustained",
        "run_id": run.run_id,
        "n_threads": d.n_threads,
        "duration_s": d.seconds,
        "first_window_s": d.window_s,
        "first_ts": d.first_tps,
        "sustained_ts": d.last_tps,
        "max_temp_c": d.max_temp_c,
        "blocks": [[round(b.end_s, 2), round(b.tokens_per_s, 3), b.temp_c, b.throttled] for b in d.blocks],
    }


# ---- formats ------------------------------------------------------------------------------------


def render(run: BenchRun, fmt: str) -> str:
    if fmt not in FORMATS:
        raise UsageError(f"-o {fmt!r}: use one of {', '.join(FORMATS)}")
    records = to_records(run)
    extra = sustained_record(run)
    if fmt == "json":
        return json.dumps(records + ([extra] if extra else []), indent=2)
    if fmt == "jsonl":
        return "\n".join(json.dumps(r) for r in records + ([extra] if extra else []))
    if fmt == "csv":
        return to_csv(records)
    return to_markdown(run)


def to_csv(records: list[dict[str, Any]]) -> str:
    if not records:
        return ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in record.items()})
    return out.getvalue().rstrip("\n")


def to_markdown(run: BenchRun) -> str:
    """llama-bench's table (model, size, params, backend, threads, test, t/s), then the conditions."""
    c = run.conditions
    varies = {key: len({getattr(r.spec, key) for r in run.results}) > 1 for key in ("n_batch", "n_ubatch")}
    header = ["model", "size", "params", "backend", "threads"]
    header += [name for name, key in (("n_batch", "n_batch"), ("n_ubatch", "n_ubatch")) if varies[key]]
    header += ["test", "t/s"]
    rows = []
    for r in run.results:
        t = r.spec
        threads = str(t.n_threads) if t.n_threads == t.n_threads_batch else f"{t.n_threads}/{t.n_threads_batch}"
        row = [
            c.model_type,
            _size(c.model_size),
            _params(c.model_n_params),
            "CPU" if c.n_gpu_layers == 0 else "GPU",
            threads,
        ]
        row += [str(getattr(t, key)) for key in ("n_batch", "n_ubatch") if varies[key]]
        mark = " *" if r.any_throttled else ""
        rows.append(row + [t.name, f"{r.avg_ts:.2f} ± {r.stddev_ts:.2f}{mark}"])
    lines = [_md_table(header, rows, left={"model", "backend"})]
    if any(r.any_throttled for r in run.results):
        lines.append("* the board reported throttling during at least one repetition")
    if run.interrupted:
        lines.append(f"interrupted: {len(run.results)} test(s) finished before Ctrl-C")
    lines += ["", conditions_line(run)]
    if run.duration and run.duration.blocks:
        d = run.duration
        lines.append(
            f"sustained tg{d.block_tokens} over {d.blocks[-1].end_s:.0f} s at {d.n_threads} threads: "
            f"first {d.window_s:.0f} s {d.first_tps:.2f} t/s, last {d.window_s:.0f} s "
            f"{d.last_tps:.2f} t/s ({_ratio(d.last_tps, d.first_tps)})"
            + (f", max {d.max_temp_c:.1f} C" if d.max_temp_c is not None else "")
        )
    lines += reference_lines(run)
    return "\n".join(lines)


def conditions_line(run: BenchRun) -> str:
    c = run.conditions
    parts = [f"load {c.load_s:.2f} s ({c.load_cache} page cache)"]
    if c.peak_rss:
        parts.append(f"peak RSS {c.peak_rss / MIB:.0f} MiB")
    if c.ttft_s is not None:
        parts.append(f"first token {c.ttft_s:.2f} s (short chat prompt)")
    if c.temp_start_c is not None:
        parts.append(
            f"CPU {c.temp_start_c:.1f} -> {c.temp_end_c:.1f} C"
            if c.temp_end_c is not None
            else f"CPU {c.temp_start_c:.1f} C"
        )
    else:
        parts.append("no CPU temperature here")
    if c.power_mode:
        parts.append(f"power mode {c.power_mode}")
    if c.throttled_since_boot:
        parts.append("since boot: " + ", ".join(c.throttled_since_boot))
    second = [
        c.cpu_info,
        f"kernels {c.cpu_kernels}",
        f"profile {c.device_profile}",
        c.tuned or "not tuned",
        f"ctx {c.n_ctx}, {c.load_mode}" + (", lazy PLE" if c.lazy_mode == "on" else ""),
        f"edge-gemma {c.edge_gemma_version}, llama-cpp-python {c.llama_cpp_version}",
    ]
    return " | ".join(parts) + "\n" + " | ".join(second)


def _md_table(header: list[str], rows: list[list[str]], left: set[str]) -> str:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]

    def line(cells):
        return (
            "| " + " | ".join(c.ljust(w) if h in left else c.rjust(w) for c, w, h in zip(cells, widths, header)) + " |"
        )

    rule = "| " + " | ".join("-" * w if h in left else "-" * (w - 1) + ":" for w, h in zip(widths, header)) + " |"
    return "\n".join([line(header), rule] + [line(r) for r in rows])


def _size(n: int) -> str:
    return f"{n / MIB:.2f} MiB" if n < 2**30 else f"{n / 2**30:.2f} GiB"


def _params(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n < 1e9 else f"{n / 1e9:.2f} B"


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs else "n/a"


# ---- published reference numbers (FACTS.md) -----------------------------------------------------


@dataclass(frozen=True)
class Reference:
    model: str  # e2b / e4b
    quant: str | None  # None: the source does not say, any quant matches
    device: str  # pi5, orin-nano, mac-cpu, mac-gpu
    where: str
    runtime: str
    prefill: float
    decode: float


REFERENCES = (
    Reference("e2b", None, "pi5", "Raspberry Pi 5 16GB CPU", "LiteRT-LM (official)", 133.0, 7.6),
    Reference("e2b", "Q4_K_M", "pi5", "Raspberry Pi 5 8GB", "llama.cpp llama-bench", 32.0, 6.44),
    Reference("e4b", "Q4_0", "pi5", "Raspberry Pi 5 8GB", "llama.cpp", 18.9, 2.79),
    Reference("e2b", "Q4_K_M", "orin-nano", "Jetson Orin Nano Super", "llama.cpp-based runtime", 620.0, 23.5),
    Reference("e2b", None, "mac-cpu", "MacBook Pro M4 CPU", "LiteRT-LM", 901.0, 42.0),
    Reference("e2b", None, "mac-gpu", "MacBook Pro M4 GPU", "LiteRT-LM", 7835.0, 160.0),
)
QUANT_NAMES = ("Q4_K_M", "Q4_0", "Q8_0", "Q4_K_S", "Q5_K_M", "Q6_K", "BF16", "F16", "UD-Q4_K_XL", "UD-IQ2_M")


def device_class(run: BenchRun) -> str | None:
    c = run.conditions
    if c.device_kind == "pi5":
        return "pi5"
    if c.device_kind == "jetson" and "orin nano" in c.device_board.lower():
        return "orin-nano"
    if c.device_kind == "mac":
        return "mac-cpu" if c.n_gpu_layers == 0 else "mac-gpu"
    return None


def model_identity(run: BenchRun) -> tuple[str | None, str | None]:
    """(e2b/e4b or None, quant or None) from the file name and llama.cpp's description."""
    name = Path(run.conditions.model_filename).name
    model = None
    for text in (name.lower(), run.conditions.model_type.lower()):  # the file name says it best
        model = model or next((m for m in ("e2b", "e4b") if re.search(rf"(^|[\s_.-]){m}($|[\s_.-])", text)), None)
    quant = next((q for q in QUANT_NAMES if has_quant_token(name, q)), None)
    return model, quant


def matching_references(run: BenchRun) -> list[Reference]:
    model, quant = model_identity(run)
    device = device_class(run)
    return [r for r in REFERENCES if r.model == model and r.device == device and (r.quant is None or r.quant == quant)]


def reference_lines(run: BenchRun) -> list[str]:
    """Ours beside each published figure for the same model and device class, with the ratio."""
    refs = matching_references(run)
    if not refs:
        return []
    pp = _fastest(r for r in run.results if r.spec.n_prompt and not r.spec.n_gen and not r.spec.n_depth)
    tg = _fastest(r for r in run.results if r.spec.n_gen and not r.spec.n_prompt and not r.spec.n_depth)
    lines = []
    for ref in refs:
        parts = []
        if pp:
            parts.append(
                f"prefill {ref.prefill:g} t/s, ours {pp.spec.name} {pp.avg_ts:.2f} ({_ratio(pp.avg_ts, ref.prefill)})"
            )
        if tg:
            parts.append(
                f"decode {ref.decode:g} t/s, ours {tg.spec.name} {tg.avg_ts:.2f} ({_ratio(tg.avg_ts, ref.decode)})"
            )
        if parts:
            lines.append(
                f"published, {ref.runtime} on {ref.where}"
                + (f" ({ref.quant})" if ref.quant else "")
                + ": "
                + "; ".join(parts)
            )
    return lines


def _fastest(results: Iterable[BenchResult]) -> BenchResult | None:
    return max(results, key=lambda r: r.avg_ts, default=None)


# ---- saved runs ---------------------------------------------------------------------------------

REQUIRED_KEYS = ("run_id", "test", "model_filename", "n_threads", "avg_ts", "stddev_ts")


def results_path() -> Path:
    return data_dir() / "bench" / "results.jsonl"


def save_run(run: BenchRun, path: Path | None = None) -> Path:
    path = path or results_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        for record in to_records(run):
            fh.write(json.dumps(record) + "\n")
    return path


def load_saved(path: Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """run_id -> its records, oldest run first."""
    path = path or results_path()
    if not path.exists():
        return {}
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsFileError(f"results file {path} is unreadable ({exc}); move it aside to start a new one") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            missing = [key for key in REQUIRED_KEYS if key not in record]
            if missing:
                raise KeyError(", ".join(missing))
            runs.setdefault(str(record["run_id"]), []).append(record)
        except (ValueError, KeyError, TypeError) as exc:
            raise ResultsFileError(
                f"results file {path} line {number} is not a saved result ({exc}); fix or delete that line"
            ) from exc
    return runs


def find_run(runs: dict[str, list[dict[str, Any]]], spec: str) -> tuple[str, list[dict[str, Any]]]:
    """`latest`, `latest~N` (N runs before it), or a run id or its unique prefix."""
    ids = list(runs)
    match = re.fullmatch(r"latest(?:~(\d+))?", spec)
    if match:
        back = int(match.group(1) or 0)
        if back >= len(ids):
            raise UsageError(f"'{spec}': only {len(ids)} saved run(s); see `edge-gemma bench --list`")
        return ids[-1 - back], runs[ids[-1 - back]]
    found = [i for i in ids if i.startswith(spec)]
    if len(found) != 1:
        what = "no saved run" if not found else f"{len(found)} saved runs"
        raise UsageError(f"{what} matches '{spec}'; see `edge-gemma bench --list` for run ids")
    return found[0], runs[found[0]]


def list_runs(runs: dict[str, list[dict[str, Any]]]) -> str:
    rows = [
        [
            run_id,
            Path(recs[0]["model_filename"]).name,
            recs[0].get("device_profile", ""),
            ", ".join(f"{r['test']} {r['avg_ts']:.2f}" for r in recs),
        ]
        for run_id, recs in runs.items()
    ]
    return _md_table(
        ["run", "model", "profile", "results (t/s)"], rows, left={"run", "model", "profile", "results (t/s)"}
    )


def compare_runs(a: tuple[str, list[dict]], b: tuple[str, list[dict]]) -> tuple[str, list[str]]:
    """(table of tests both runs have: A t/s, B t/s, B/A; warnings about what differs)."""
    (id_a, recs_a), (id_b, recs_b) = a, b
    warnings = []
    model_a, model_b = recs_a[0]["model_filename"], recs_b[0]["model_filename"]
    if Path(model_a).name != Path(model_b).name:
        warnings.append(
            f"the runs are of different models ({Path(model_a).name} vs {Path(model_b).name}): "
            "ratios compare models, not settings"
        )
    for key in ("cpu_info", "device_profile", "llama_cpp_version"):
        if recs_a[0].get(key) != recs_b[0].get(key):
            warnings.append(f"{key} differs: {recs_a[0].get(key)} vs {recs_b[0].get(key)}")

    def key(r):
        return (
            r["test"],
            r["n_threads"],
            r.get("n_threads_batch", r["n_threads"]),
            r.get("n_batch"),
            r.get("n_ubatch"),
        )

    by_b = {key(r): r for r in recs_b}
    rows = []
    for r in recs_a:
        other = by_b.get(key(r))
        if other is None:
            continue
        threads = f"{r['n_threads']}" if key(r)[1] == key(r)[2] else f"{key(r)[1]}/{key(r)[2]}"
        rows.append(
            [
                r["test"],
                threads,
                f"{r['avg_ts']:.2f} ± {r['stddev_ts']:.2f}",
                f"{other['avg_ts']:.2f} ± {other['stddev_ts']:.2f}",
                _ratio(other["avg_ts"], r["avg_ts"]),
            ]
        )
    if not rows:
        warnings.append("the runs have no test in common (same test, threads, batch sizes)")
    table = _md_table(["test", "threads", f"A {id_a} t/s", f"B {id_b} t/s", "B/A"], rows, left={"test"})
    return table, warnings
