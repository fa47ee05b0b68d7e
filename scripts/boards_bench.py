#!/usr/bin/env python3
"""Across boards: a model split between this board and `edge-gemma worker`s on stand-in boards on a LAN.

Each worker runs in a network namespace joined to ours by a veth pair shaped like gigabit Ethernet or
Wi-Fi, in a memory cgroup of its board's size (scripts/lan_boards.py); the board with the microphone
runs here, in a cgroup of its own size, with a Pi 5 4GB's device facts (tests/fixtures/devices). For each
row: load time, prompt (pp512) and generation (tg128) tokens/s, the first token of a 5 s spoken turn
(projector here, audio encoded and prefilled, one token out), and bytes over the link per generated
token (the veth's counters). Needs root; all traffic stays on this machine.

    python scripts/boards_bench.py            # prints JSON; fullsize_report.py --sections boards saves it
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import lan_boards  # noqa: E402

PI5_4GB_ROOT = REPO / "tests" / "fixtures" / "devices" / "pi5-4gb"
GIB = 2**30
BOARD_MEMORY = {"pi5-4gb": int(3.5 * GIB), "pi5-8gb": int(7.5 * GIB)}  # RAM less the OS's share
PORT = 50052


def child(args: argparse.Namespace) -> None:
    """On the board with the microphone: plan, load, measure; the last stdout line is JSON."""
    from edge.errors import EdgeError
    from edge.launch import LoadRequest, ProjectorUse, SettingsOverrides, load_model, prepare_run

    out: dict = {}
    request = LoadRequest(
        model=args.model,
        mmproj=Path(args.mmproj),
        device="pi5-4gb",
        overrides=SettingsOverrides(n_ctx=2048, n_threads=2, n_threads_batch=2),
        no_tune=True,
        root=PI5_4GB_ROOT,
        workers=tuple(args.workers.split(",")) if args.workers else (),
        worker_layers=args.worker_layers,
    )
    try:
        plan = prepare_run(request)
    except EdgeError as exc:
        print(json.dumps({"refused": str(exc)}), flush=True)
        return
    out["plan"] = {
        "total_bytes": plan.memory.total_bytes,
        "budget_bytes": plan.memory.budget_bytes,
        "lines": [[line.label, line.bytes, line.note] for line in plan.memory.lines],
        "split": plan.split.describe() if plan.split else None,
        "workers": [[name, [[ln.label, ln.bytes, ln.note] for ln in lines]] for name, lines in plan.split.worker_lines]
        if plan.split
        else [],
    }
    start = time.perf_counter()
    with load_model(plan, ProjectorUse.HEARING) as loaded:
        out["load_s"] = time.perf_counter() - start
        engine = loaded.engine
        rng = np.random.default_rng(512)
        tokens = [loaded.llama.token_bos()] + rng.integers(1000, 200_000, 511).tolist()
        engine.extend_tokens(tokens[:16])  # warm-up: graphs allocated, first pages read
        engine.reset()
        t = time.perf_counter()
        engine.extend_tokens(tokens)
        out["pp512_tps"] = 512 / (time.perf_counter() - t)
        link = _link_bytes(args.link_if)
        t = time.perf_counter()
        for i in range(128):
            engine.extend_tokens([1000 + i])
        out["tg128_tps"] = 128 / (time.perf_counter() - t)
        out["link_bytes_per_token"] = (_link_bytes(args.link_if) - link) / 128 if args.link_if else 0
        from fullsize_report import speech  # the same espeak-ng clip the other sections speak

        pcm = speech(5.0)
        prompt = loaded.chat_prompt([{"role": "user", "content": loaded.projector.marker + "Answer briefly."}]).text
        t = time.perf_counter()
        report = engine.prefill(prompt, [pcm], fresh=True)
        engine.extend_tokens([1000])  # the first token of the answer
        out["spoken_5s_first_token_s"] = time.perf_counter() - t
        out["audio_tokens"] = report.media_tokens
    print(json.dumps(out), flush=True)


def _link_bytes(interface: str | None) -> int:
    if not interface:
        return 0
    stats = Path("/sys/class/net") / interface / "statistics"
    return int((stats / "rx_bytes").read_text()) + int((stats / "tx_bytes").read_text())


def run_here(
    model: Path, mmproj: Path, workers: list[str], link_if: str | None, memory: int, worker_layers: int | None = None
) -> dict:
    """The child in a cgroup of `memory` bytes (the board with the microphone), its result."""
    cmd = [sys.executable, __file__, "child", "--model", str(model), "--mmproj", str(mmproj)]
    cmd += ["--workers", ",".join(workers)] + (["--link-if", link_if] if link_if else [])
    cmd += ["--worker-layers", str(worker_layers)] if worker_layers is not None else []
    with lan_boards.memory_cgroup("here", memory) as group:
        cmd = ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        result = {"returncode": proc.returncode}
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if lines:
            result.update(json.loads(lines[-1]))
        else:
            result["stderr"] = proc.stderr.strip().splitlines()[-3:]
        result["max_usage"] = int((group / "memory.max_usage_in_bytes").read_text())
        result["limit"] = memory
        return result


def with_worker(
    model: Path, mmproj: Path, link: str, board_memory: int, here_memory: int, worker_layers: int | None = None
) -> dict:
    """One worker on its own board behind a shaped link; this board runs the model split over it."""
    with lan_boards.board("worker1", 1, link=link, memory_bytes=board_memory) as board:
        worker = subprocess.Popen(
            board.command(
                sys.executable,
                "-m",
                "edge.cli",
                "worker",
                "--host",
                board.board_ip,
                "--port",
                str(PORT),
                "--allow",
                f"{board.host_ip}/32",
                "--threads",
                "1",
                "--no-announce",
            ),  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_for_port(board.board_ip, PORT, worker)
            result = run_here(model, mmproj, [board.reach(PORT)], "egh1", here_memory, worker_layers)
            result["worker_max_usage"] = board.max_usage()
            result["worker_limit"] = board_memory
            result["link"] = link
            result["delay_by_relay"] = bool(board.delay_s)
        finally:
            worker.kill()
            worker.wait()
            result_err = worker.stderr.read()
        result["worker_log"] = [line for line in result_err.splitlines() if "left after" in line or "refused" in line]
        return result


def _wait_for_port(host: str, port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    import socket

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited: {proc.stderr.read()[-500:]}")
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the worker did not start listening")


def measure(models: dict[str, tuple[Path, Path]]) -> dict:
    """Rows: E4B with its projector alone on a 4 GB board (refused by the plan), E4B with one 4 GB worker
    over Ethernet and over Wi-Fi; E2B alone, and E2B split over Ethernet with the fewest layers a split
    can have (--worker-layers 1: the tail grows to the layers whose cache the last ones reuse)."""
    why = lan_boards.available()
    if why:
        return {"error": why}
    here = BOARD_MEMORY["pi5-4gb"]
    rows = {}
    if "e4b" in models:
        e4b, e4b_mm = models["e4b"]
        rows["e4b-alone"] = run_here(e4b, e4b_mm, [], None, here)
        for link in ("ethernet", "wifi"):
            rows[f"e4b-worker-{link}"] = with_worker(e4b, e4b_mm, link, BOARD_MEMORY["pi5-4gb"], here)
    if "e2b" in models:
        e2b, e2b_mm = models["e2b"]
        rows["e2b-alone"] = run_here(e2b, e2b_mm, [], None, here)
        rows["e2b-worker-ethernet"] = with_worker(e2b, e2b_mm, "ethernet", BOARD_MEMORY["pi5-4gb"], here, 1)
    for key, row in rows.items():
        print(f"boards {key}: {json.dumps({k: v for k, v in row.items() if k != 'plan'})}", flush=True)
    return {"rows": rows, "board_memory": BOARD_MEMORY, "links": lan_boards.LINKS}


def main(argv: list[str]) -> int:
    if argv[:1] == ["child"]:
        ap = argparse.ArgumentParser()
        ap.add_argument("--model", required=True)
        ap.add_argument("--mmproj", required=True)
        ap.add_argument("--workers", default="")
        ap.add_argument("--link-if")
        ap.add_argument("--worker-layers", type=int)
        child(ap.parse_args(argv[1:]))
        return 0
    from edge.model.synthetic import FULLSIZE_DIR

    def pair(size: str, precision: str) -> tuple[Path, Path]:
        return (
            FULLSIZE_DIR / f"gemma-4-{size}-shaped-Q4_0.gguf",
            FULLSIZE_DIR / f"mmproj-gemma-4-{size}-shaped-{precision}.gguf",
        )

    models = {"e4b": pair("E4B", "F16"), "e2b": pair("E2B", "F16")}
    print(json.dumps(measure({k: v for k, v in models.items() if v[0].exists() and v[1].exists()}), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
