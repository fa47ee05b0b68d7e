#!/usr/bin/env python3
"""What layers on a worker cost each decoded token: the same model loaded twice in one process, all
layers here and with the shortest tail on an `edge-gemma worker` at 127.0.0.1 (through its gate), each
decoding the same prompt at the same seed, alternately, at 128 and 1,024 tokens.

    python scripts/workers_decode.py                  # the tiny Gemma 4 and, when made, E2B Q4_0
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROMPT = "Tell me a long story about a lighthouse keeper and the ships she watched."


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_worker(threads: int) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "worker", "--port", str(port), "--threads", str(threads)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    for line in proc.stderr:  # the worker says "allowed:" once it listens
        if "allowed:" in line:
            return proc, f"127.0.0.1:{port}"
    raise RuntimeError("the worker did not start")


def compare(path: Path, seeds: tuple[int, ...], lengths=(128, 1024), threads: int = 2) -> dict:
    from edge.launch import LoadRequest, SettingsOverrides, load_model, prepare_run
    from edge.model.engine import GEMMA_SAMPLING

    worker, endpoint = _start_worker(threads)
    overrides = SettingsOverrides(n_ctx=2048, n_threads=threads, n_threads_batch=threads)
    try:
        plans = {
            "here": prepare_run(LoadRequest(model=str(path), overrides=overrides, no_tune=True, workers=())),
            "split": prepare_run(
                LoadRequest(model=str(path), overrides=overrides, no_tune=True, workers=(endpoint,), worker_layers=1)
            ),
        }
        loaded = {name: load_model(plan) for name, plan in plans.items()}
        try:
            rows = []
            for length in lengths:
                rates: dict[str, list[float]] = {"here": [], "split": []}
                same = True
                for seed in seeds:
                    texts = {}
                    for name, model in loaded.items():
                        generation = model.complete(
                            PROMPT, GEMMA_SAMPLING.with_(max_tokens=length, seed=seed), special=True
                        )
                        texts[name] = "".join(generation)
                        rates[name].append(generation.stats.generation_tps)
                    same &= texts["here"] == texts["split"]
                here, split = statistics.median(rates["here"]), statistics.median(rates["split"])
                rows.append(
                    {
                        "tokens": length,
                        "here_tps": round(here, 2),
                        "split_tps": round(split, 2),
                        "ratio": round(split / here, 3),
                        "same_text": same,
                    }
                )
                print(f"{path.name} {rows[-1]}", flush=True)
        finally:
            for model in loaded.values():
                model.close()
        return {"split": plans["split"].split.describe(), "seeds": list(seeds), "rows": rows}
    finally:
        worker.kill()
        worker.wait()


def main() -> int:
    from edge.model.synthetic import FULLSIZE_DIR, TINY_DIR, TINY_TEXT_NAME

    started = time.strftime("%Y-%m-%d %H:%M")
    out = {"tiny": compare(TINY_DIR / TINY_TEXT_NAME, (1, 2, 3))}
    e2b = FULLSIZE_DIR / "gemma-4-E2B-shaped-Q4_0.gguf"
    if e2b.exists():
        out["e2b-Q4_0"] = compare(e2b, (1, 2))
    out["measured"] = started
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
