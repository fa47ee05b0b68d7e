#!/usr/bin/env python3
"""Load `edge-gemma serve` over loopback with the real `openai` client and report what clients see.

For 1, 4 and 16 concurrent clients: requests/s, p50/p95 time to first token and total, the decode
rate one client sees (against `edge-gemma bench`'s tg128 on the same model and machine: HTTP should
cost under 5%), the server's RSS before and after, and failures (503s from a full queue are
deliberate and counted apart).

Examples:
    python scripts/serve_load.py                     # demo model, 24 requests per level
    python scripts/serve_load.py --requests 48 --max-tokens 128 --json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_server(model: str, port: int, max_queue: int, threads: int) -> subprocess.Popen:
    # EDGE_DEBUG=1: no crash-guard fork, so the process measured is the one holding the model.
    env = dict(os.environ, EDGE_DEBUG="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge.cli",
            "serve",
            "-m",
            model,
            "--port",
            str(port),
            "--max-queue",
            str(max_queue),
            "-t",
            str(threads),
            "-c",
            "4096",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    import httpx2

    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if httpx2.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx2.HTTPError:
            time.sleep(0.2)
    proc.kill()
    sys.exit(f"server did not start: {proc.stderr.read()[-500:]}")


def one_request(client, model: str, max_tokens: int, prompt: str) -> dict:
    from openai import APIStatusError

    started = time.perf_counter()
    first = None
    try:
        stream = client.chat.completions.create(
            model=model,
            max_tokens=max_tokens,
            temperature=0.7,
            stream=True,
            messages=[{"role": "user", "content": prompt}],
            stream_options={"include_usage": True},
        )
        tokens = 0
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content and first is None:
                first = time.perf_counter()
            if chunk.usage:
                tokens = chunk.usage.completion_tokens
        end = time.perf_counter()
        return {
            "status": 200,
            "ttft": (first or end) - started,
            "total": end - started,
            "tokens": tokens,
            "decode_tps": (tokens - 1) / (end - first) if first and tokens > 1 and end > first else 0.0,
        }
    except APIStatusError as exc:
        return {"status": exc.status_code, "total": time.perf_counter() - started}


def level(port: int, model: str, clients: int, requests: int, max_tokens: int) -> dict:
    from openai import OpenAI

    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=600)
    results, lock, todo = [], threading.Lock(), list(range(requests))

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                n = todo.pop()
            result = one_request(client, model, max_tokens, f"Tell me a short story about the number {n}.")
            with lock:
                results.append(result)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    ok = [r for r in results if r["status"] == 200]

    def pct(values, q):
        return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else (values[0] if values else 0.0)

    return {
        "clients": clients,
        "requests": len(results),
        "ok": len(ok),
        "busy_503": sum(r["status"] == 503 for r in results),
        "failed": sum(r["status"] not in (200, 503) for r in results),
        "requests_per_s": len(ok) / elapsed,
        "tokens_per_s": sum(r["tokens"] for r in ok) / elapsed,
        "ttft_p50": pct([r["ttft"] for r in ok], 50),
        "ttft_p95": pct([r["ttft"] for r in ok], 95),
        "total_p50": pct([r["total"] for r in ok], 50),
        "total_p95": pct([r["total"] for r in ok], 95),
        "decode_tps_one_client": statistics.median([r["decode_tps"] for r in ok if r["decode_tps"]] or [0.0]),
    }


def bench_tg128(model: str, threads: int) -> float:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge.cli",
            "bench",
            "-m",
            model,
            "--only",
            "tg",
            "-n",
            "128",
            "-r",
            "3",
            "-t",
            str(threads),
            "--no-tune",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)[0]["avg_ts"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-m", "--model", default="demo")
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--max-queue", type=int, default=8)
    parser.add_argument("-t", "--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    tg128 = bench_tg128(args.model, args.threads)
    port = free_port()
    server = start_server(args.model, port, args.max_queue, args.threads)
    try:
        rss_before = rss_mib(server.pid)
        import httpx2

        model = httpx2.get(f"http://127.0.0.1:{port}/v1/models").json()["data"][0]["id"]
        levels = [level(port, model, clients, args.requests, args.max_tokens) for clients in (1, 4, 16)]
        rss_after = rss_mib(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    report = {
        "model": model,
        "bench_tg128": tg128,
        "rss_mib_before": rss_before,
        "rss_mib_after": rss_after,
        "levels": levels,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{model}: bench tg128 {tg128:.1f} tok/s | server RSS {rss_before:.0f} -> {rss_after:.0f} MiB")
    print(
        "| clients | ok | 503 | failed | req/s | tok/s | TTFT p50 | TTFT p95 | total p50 | total p95 | "
        "decode tok/s (one client) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in levels:
        print(
            f"| {r['clients']} | {r['ok']} | {r['busy_503']} | {r['failed']} | {r['requests_per_s']:.2f} | "
            f"{r['tokens_per_s']:.1f} | {r['ttft_p50']:.3f} | {r['ttft_p95']:.3f} | {r['total_p50']:.2f} | "
            f"{r['total_p95']:.2f} | {r['decode_tps_one_client']:.1f} ({r['decode_tps_one_client'] / tg128:.1%} "
            f"of tg128) |"
        )
    return 1 if any(r["failed"] for r in levels) else 0


if __name__ == "__main__":
    sys.exit(main())
