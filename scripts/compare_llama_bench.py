#!/usr/bin/env python3
"""Run llama.cpp's `llama-bench` and `edge-gemma bench` on the same model, threads and tests, and print
both with the ratio, so anyone can check edge-gemma's numbers against the reference tool.

Both get the same settings: threads (decode = prompt threads, as llama-bench has one -t), prompt and
generation sizes, repetitions, n_batch/n_ubatch, flash attention, KV cache types and load mode.
Tuned settings are ignored (--no-tune). The CPU's extra kernels match too: when edge-gemma's
backend verdict avoids one (AMX that crashed in a probe, or EDGE_GEMMA_EXTRA_BUFTS=off), llama-bench
gets `--repack 0` and edge-gemma runs with EDGE_GEMMA_EXTRA_BUFTS=off, because llama-bench's -ot
cannot force tensors into CPU_REPACK the way edge-gemma keeps it. With --rounds N the two tools take
turns N times, which spreads slow drift (thermals, other load) over both.

Examples:
  scripts/compare_llama_bench.py --model demo -t 2
  scripts/compare_llama_bench.py -m ~/models/gemma-4-E2B-it-Q4_K_M.gguf -t 4 \
      --llama-bench ~/llama.cpp/build/bin/llama-bench
  scripts/compare_llama_bench.py --model demo -t 1,2 --rounds 3 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--llama-bench", help="path to llama-bench (default: the one on PATH)")
    parser.add_argument("-m", "--model", default="demo", help="'demo' or a .gguf path (default: demo)")
    parser.add_argument("-t", "--threads", default="2", help="thread counts, e.g. 1,2,4 (default: 2)")
    parser.add_argument("-p", "--n-prompt", default="512")
    parser.add_argument("-n", "--n-gen", default="128")
    parser.add_argument("-r", "--repetitions", type=int, default=5)
    parser.add_argument("-b", "--batch-size", type=int, default=512)
    parser.add_argument("-ub", "--ubatch-size", type=int, default=512)
    parser.add_argument("-fa", "--flash-attn", choices=("on", "off"), default="on")
    parser.add_argument("--cache-type", default="f16", help="KV cache type for K and V (default: f16)")
    parser.add_argument("--load-mode", default="mmap", choices=("mmap", "none", "mlock", "mmap+mlock"))
    parser.add_argument("--rounds", type=int, default=1, help="alternate the two tools this many times")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    return parser.parse_args(argv)


def resolve_model(spec: str) -> Path:
    if spec == "demo":
        from edge.model.files import ensure_demo_model

        return ensure_demo_model()
    path = Path(spec).expanduser()
    if not path.is_file():
        sys.exit(f"error: model {spec} not found")
    return path


def busy_fraction(seconds: float = 0.5) -> float | None:
    """Share of CPU time other processes used over `seconds` (Linux /proc/stat), before a run."""

    def read() -> tuple[int, int]:
        with open("/proc/stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait

    try:
        total0, idle0 = read()
        time.sleep(seconds)
        total1, idle1 = read()
    except (OSError, ValueError, IndexError):
        return None
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def run_json(command: list[str], what: str, env: dict | None = None) -> list[dict]:
    busy = busy_fraction()
    if busy is not None and busy > 0.15:
        print(
            f"warning: the machine was {busy:.0%} busy before this run: its numbers will be low and noisy",
            file=sys.stderr,
        )
    print(f"$ {' '.join(command)}", file=sys.stderr)
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        sys.exit(f"error: {what} failed (exit {result.returncode}):\n{tail}")
    return json.loads(result.stdout)


def llama_bench_command(binary: str, model: Path, a: argparse.Namespace, repack: bool) -> list[str]:
    return [
        binary,
        "--repack",
        "1" if repack else "0",
        "-m",
        str(model),
        "-t",
        a.threads,
        "-p",
        a.n_prompt,
        "-n",
        a.n_gen,
        "-r",
        str(a.repetitions),
        "-b",
        str(a.batch_size),
        "-ub",
        str(a.ubatch_size),
        "-fa",
        a.flash_attn,
        "-ctk",
        a.cache_type,
        "-ctv",
        a.cache_type,
        "-lm",
        a.load_mode,
        "-o",
        "json",
    ]


def edge_command(model: Path, a: argparse.Namespace) -> list[str]:
    return [
        sys.executable,
        "-m",
        "edge.cli",
        "bench",
        "-m",
        str(model),
        "-t",
        a.threads,
        "-tb",
        a.threads,
        "-p",
        a.n_prompt,
        "-n",
        a.n_gen,
        "-r",
        str(a.repetitions),
        "-b",
        str(a.batch_size),
        "-ub",
        str(a.ubatch_size),
        "-o",
        "json",
        "--no-tune",
    ]


def test_name(record: dict) -> str:
    if record["n_prompt"] and not record["n_gen"]:
        name = f"pp{record['n_prompt']}"
    elif record["n_gen"] and not record["n_prompt"]:
        name = f"tg{record['n_gen']}"
    else:
        name = f"pp{record['n_prompt']}+tg{record['n_gen']}"
    return name + (f" @ d{record['n_depth']}" if record.get("n_depth") else "")


def collect(rounds: list[list[dict]]) -> dict[tuple[str, int], list[float]]:
    """(test, threads) -> every repetition's tokens/s over all rounds."""
    samples: dict[tuple[str, int], list[float]] = {}
    for records in rounds:
        for record in records:
            if "samples_ts" in record:
                samples.setdefault((test_name(record), record["n_threads"]), []).extend(record["samples_ts"])
    return samples


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    binary = a.llama_bench or shutil.which("llama-bench")
    if not binary:
        print(
            "error: no llama-bench on PATH; pass --llama-bench PATH (build it from llama.cpp with "
            "`cmake --build build --target llama-bench`)",
            file=sys.stderr,
        )
        return 2
    model = resolve_model(a.model)
    from edge.model.backend import MODE_ENV, backend_choice

    backend = backend_choice()
    repack = backend.use_extra_bufts
    edge_env = dict(os.environ) if repack else dict(os.environ, **{MODE_ENV: "off"})
    print(f"CPU kernels: {backend.kernels}; {backend.reason}; llama-bench --repack {int(repack)}", file=sys.stderr)
    theirs, ours = [], []
    for round_number in range(a.rounds):
        # Alternate who goes first, so neither tool always runs on a cooler board.
        order = [("llama-bench", theirs), ("edge-gemma", ours)]
        for name, sink in order if round_number % 2 == 0 else reversed(order):
            if name == "llama-bench":
                sink.append(run_json(llama_bench_command(binary, model, a, repack), name))
            else:
                sink.append(run_json(edge_command(model, a), name, edge_env))
            for record in sink[-1]:
                print(
                    f"  round {round_number + 1} {name}: {test_name(record)} t={record['n_threads']} "
                    f"{record['avg_ts']:.2f} ± {record['stddev_ts']:.2f}",
                    file=sys.stderr,
                )
    ref, mine = collect(theirs), collect(ours)
    rows = []
    for key in ref:
        if key not in mine:
            continue
        r, m = ref[key], mine[key]
        rows.append(
            {
                "test": key[0],
                "threads": key[1],
                "llama_bench_ts": statistics.mean(r),
                "llama_bench_stdev": statistics.stdev(r) if len(r) > 1 else 0.0,
                "edge_gemma_ts": statistics.mean(m),
                "edge_gemma_stdev": statistics.stdev(m) if len(m) > 1 else 0.0,
                "ratio": statistics.mean(m) / statistics.mean(r),
                # The median ratio shrugs off a repetition that another process slowed down.
                "median_ratio": statistics.median(m) / statistics.median(r),
            }
        )
    info = {
        "model": str(model),
        "cpu_info": theirs[0][0].get("cpu_info") if theirs[0] else None,
        "llama_bench_build": theirs[0][0].get("build_commit") if theirs[0] else None,
        "edge_gemma_llama_cpp": ours[0][0].get("llama_cpp_version") if ours[0] else None,
        "rounds": a.rounds,
        "repetitions": a.repetitions,
        "repack": repack,
    }
    if a.json:
        print(json.dumps({"info": info, "rows": rows}, indent=2))
        return 0
    print(
        f"model {model.name} | {info['cpu_info']} | llama-bench build {info['llama_bench_build']} | "
        f"edge-gemma on llama-cpp-python {info['edge_gemma_llama_cpp']} | {a.rounds} round(s) x {a.repetitions} reps"
    )
    print(f"| {'test':<12} | threads | {'llama-bench t/s':>18} | {'edge-gemma t/s':>18} | ours/theirs | median ratio |")
    print(f"| {'-' * 12} | ------: | {'-' * 17}: | {'-' * 17}: | ----------: | -----------: |")
    for row in rows:
        print(
            f"| {row['test']:<12} | {row['threads']:>7} | "
            f"{row['llama_bench_ts']:>9.2f} ± {row['llama_bench_stdev']:>6.2f} | "
            f"{row['edge_gemma_ts']:>9.2f} ± {row['edge_gemma_stdev']:>6.2f} | {row['ratio']:>10.3f}x "
            f"| {row['median_ratio']:>11.3f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
