"""Layers on another board: `edge-gemma worker` (llama.cpp's RPC server behind an allow-list) and `--workers`.

Workers and clients are real `edge-gemma` processes with the real llama.cpp RPC backend, on 127.0.0.1
or, for a peer that is not loopback, in a network namespace made for the test (scripts/lan_boards.py).
"""

import importlib.util
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import httpx2 as httpx
import openai as openai_module
import pytest
from cli_helpers import assert_one_line_error, edge_gemma, free_port
from conftest import FIXTURES

from edge.errors import MemoryFitError, UsageError
from edge.model.kv_size import KNOWN_SHAPES
from edge.workers.probe import WorkerInfo, WorkerUnreachable, probe
from edge.workers.split import earliest_start, plan_split

TINY = FIXTURES / "gemma4-tiny" / "tiny-gemma-4-E2B.gguf"
GB = 10**9
PROMPT = "The capital of France is"


def _lan_boards():
    spec = importlib.util.spec_from_file_location("lan_boards", FIXTURES.parent.parent / "scripts" / "lan_boards.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["lan_boards"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


class Worker:
    """A real `edge-gemma worker`; `argv_prefix` runs it inside a board (network namespace)."""

    def __init__(self, *args: str, host: str = "127.0.0.1", argv_prefix: tuple[str, ...] = ()):
        self.port = free_port()
        self.endpoint = f"{host}:{self.port}"
        self.proc = subprocess.Popen(
            [*argv_prefix, sys.executable, "-m", "edge.cli", "worker", "--host", host, "--port", str(self.port), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
            start_new_session=True,  # kill() takes the whole worker, as unplugging its board would
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.time() + 60
        while not any("allowed:" in line for line in self.lines):
            assert self.proc.poll() is None and time.time() < deadline, "\n".join(self.lines)
            time.sleep(0.05)

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())

    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 10) -> bool:
        deadline = time.time() + timeout
        while text not in self.log() and time.time() < deadline:
            time.sleep(0.05)
        return text in self.log()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)

    stop = kill


@pytest.fixture
def worker(llama_cpp_available):
    w = Worker()
    yield w
    w.stop()


def _worker(endpoint: str, free: int) -> WorkerInfo:
    return WorkerInfo(endpoint, (7, 0, 0), 1, free, free)


# -- the planner, on described boards -----------------------------------------------------------------


def test_the_tail_takes_the_layers_whose_cache_its_last_layers_reuse():
    # E2B: 35 layers, the last 20 reuse the caches of layers 13 (sliding) and 14 (global).
    shape = KNOWN_SHAPES["e2b"]
    assert shape.kv_layers == 15
    assert earliest_start(shape, 33) == 13
    assert earliest_start(shape, 5) == 5
    weights, kv = [100 * 10**6] * 35, [0] * 35
    split = plan_split(
        workers=(_worker("10.0.0.2:50052", 8 * GB),), weights=weights, kv=kv, shape=shape, local_over_bytes=150 * 10**6
    )
    assert (split.start, split.remote_layers, split.n_gpu_layers) == (13, 22, 23)
    assert split.moved_bytes == 22 * 100 * 10**6
    assert split.worker_lines[0][0] == "10.0.0.2:50052"


def test_layers_are_spread_by_each_workers_free_memory():
    shape = KNOWN_SHAPES["e4b"]
    weights, kv = [50 * 10**6] * shape.n_layer, [5 * 10**6] * shape.n_layer
    a, b = _worker("10.0.0.2:50052", 2 * GB), _worker("10.0.0.3:50052", 6 * GB)
    split = plan_split(workers=(a, b), weights=weights, kv=kv, shape=shape, local_over_bytes=0, worker_layers=40)
    assert split.remote_layers == 40 and sum(split.counts) == 40
    assert split.counts == (10, 30)
    assert split.tensor_split == [10.0, 31.0]  # the last worker also holds the output norm
    lopsided = plan_split(
        workers=(b, _worker("10.0.0.4:50052", 10**6)), weights=weights, kv=kv, shape=shape, local_over_bytes=0,
        worker_layers=40,
    )  # fmt: skip
    assert lopsided.counts == (40, 0) and lopsided.tensor_split == [41.0, 0.0]


def test_a_worker_short_of_memory_is_named_before_anything_is_sent():
    shape = KNOWN_SHAPES["e2b"]
    with pytest.raises(MemoryFitError, match="the worker at 10.0.0.2:50052 has 1.00 GB free"):
        plan_split(
            workers=(_worker("10.0.0.2:50052", 1 * GB),),
            weights=[100 * 10**6] * 35,
            kv=[0] * 35,
            shape=shape,
            local_over_bytes=10**9,
        )


# -- real workers -------------------------------------------------------------------------------------


def test_greedy_tokens_are_the_same_with_layers_on_a_worker(worker):
    alone = edge_gemma("run", "-m", str(TINY), "--temperature", "0", "-n", "32", PROMPT)
    split = edge_gemma(
        "run", "-m", str(TINY), "--temperature", "0", "-n", "32", "--workers", worker.endpoint, "--worker-layers", "7",
        PROMPT,
    )  # fmt: skip
    assert alone.returncode == 0 and split.returncode == 0, split.stderr
    assert "of 10 on workers (7 on 127.0.0.1" in split.stderr
    assert f"worker {worker.endpoint}: layers 7 (3-9); weights" in split.stderr  # its memory lines
    assert split.stdout == alone.stdout and len(split.stdout) > len(PROMPT) + 10
    assert worker.wait_for("MB in") and "127.0.0.1 connected" in worker.log()


def test_two_workers_share_the_tail_and_the_tokens_stay_the_same(worker):
    second = Worker()
    try:
        alone = edge_gemma("run", "-m", str(TINY), "--temperature", "0", "-n", "24", PROMPT)
        split = edge_gemma(
            "run", "-m", str(TINY), "--temperature", "0", "-n", "24", "--workers",
            f"{worker.endpoint},{second.endpoint}", "--worker-layers", "7", PROMPT,
        )  # fmt: skip
        assert split.returncode == 0, split.stderr
        assert split.stdout == alone.stdout
        assert f"on {worker.endpoint}" in split.stderr and f"on {second.endpoint}" in split.stderr
        assert worker.wait_for("MB in") and second.wait_for("MB in")  # both were sent layers
    finally:
        second.stop()


def test_a_model_that_fits_alone_leaves_the_workers_unused(worker):
    result = edge_gemma("run", "-m", str(TINY), "--temperature", "0", "-n", "4", "--workers", worker.endpoint, PROMPT)
    assert result.returncode == 0, result.stderr
    assert "fits this board alone: the workers are not used" in result.stderr


def test_an_unreachable_worker_is_one_line_before_loading(llama_cpp_available):
    endpoint = f"127.0.0.1:{free_port()}"
    result = edge_gemma("run", "-m", str(TINY), "-n", "4", "--workers", endpoint, "--worker-layers", "3", PROMPT)
    assert result.returncode == 75, result.stderr  # EX_TEMPFAIL: a service manager may try again
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"cannot reach the worker at {endpoint}" in errors[0]


def _old_rpc_server(port: int, stop: threading.Event) -> None:
    """A server that answers HELLO as a llama.cpp RPC server of protocol 6.1.0 would."""
    with socket.create_server(("127.0.0.1", port)) as listener:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(1 + 8 + 24)
                conn.sendall(struct.pack("<Q", 28) + bytes([6, 1, 0, 0]) + bytes(24))


def test_a_worker_of_another_protocol_version_is_named(llama_cpp_available):
    port, stop = free_port(), threading.Event()
    server = threading.Thread(target=_old_rpc_server, args=(port, stop), daemon=True)
    server.start()
    try:
        result = edge_gemma("run", "-m", str(TINY), "-n", "4", "--workers", f"127.0.0.1:{port}", PROMPT)
    finally:
        stop.set()
        server.join()
    assert_one_line_error(result, f"the worker at 127.0.0.1:{port} speaks llama.cpp RPC 6.1.0", "7.0")


def test_a_worker_lost_mid_reply_fails_that_request_and_serve_keeps_answering(llama_cpp_available):
    from test_serve import Server

    lost = Worker()
    server = Server("-m", str(TINY), "--workers", lost.endpoint, "--worker-layers", "7")
    try:
        client = openai_module.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
        received = 0
        with pytest.raises((openai_module.APIError, httpx.HTTPError)):
            stream = client.chat.completions.create(
                model=TINY.name, messages=[{"role": "user", "content": "Tell me a story."}], max_tokens=4000,
                stream=True,
            )  # fmt: skip
            for _ in stream:
                received += 1
                if received == 20:
                    lost.kill()  # the board is unplugged mid-reply
        assert received >= 20
        deadline = time.time() + 120
        answered = None
        while time.time() < deadline and answered is None:
            try:
                answered = client.chat.completions.create(
                    model=TINY.name, messages=[{"role": "user", "content": "hi"}], max_tokens=4
                )
            except (openai_module.APIError, httpx.HTTPError):
                time.sleep(0.5)
        assert answered is not None and answered.choices[0].message.content
        assert server.proc.poll() is None
    finally:
        code, err = server.stop()
        lost.stop()
    assert f"lost the worker at {lost.endpoint}" in err
    assert "does not answer: running on this board alone" in err
    assert "Traceback" not in err and code in (0, 128 + signal.SIGTERM)


def test_a_worker_beyond_loopback_needs_allow(llama_cpp_available):
    result = edge_gemma("worker", "--host", "0.0.0.0", "--port", str(free_port()))
    assert_one_line_error(result, "--allow CIDR")


def test_a_peer_outside_allow_is_closed_before_llama_cpp_sees_it(llama_cpp_available):
    lan = _lan_boards()
    if why := lan.available():
        pytest.skip(why)
    with lan.board("peer", 41) as board:
        client = [*board.command(sys.executable, "-c")]
        ask = "import sys; from edge.workers.probe import probe; print(probe(sys.argv[1]).version)"
        refusing = Worker("--allow", "10.99.0.0/16", "--no-announce", host=board.host_ip)
        try:
            refused = subprocess.run([*client, ask, refusing.endpoint], capture_output=True, text=True, timeout=60)
            assert refused.returncode != 0 and f"cannot reach the worker at {refusing.endpoint}" in refused.stderr
            assert refusing.wait_for(f"refused {board.board_ip}:"), refusing.log()
            assert "connected" not in refusing.log()  # no byte of it went on to llama.cpp
            assert "neither authenticated nor encrypted" in refusing.log()
        finally:
            refusing.stop()
        admitting = Worker("--allow", f"{board.board_ip}/32", "--no-announce", host=board.host_ip)
        try:
            admitted = subprocess.run([*client, ask, admitting.endpoint], capture_output=True, text=True, timeout=60)
            assert admitted.returncode == 0 and admitted.stdout.strip() == "(7, 0, 0)", admitted.stderr
        finally:
            admitting.stop()


def test_a_build_without_rpc_says_how_to_rebuild(monkeypatch):
    import edge.model.rpc as rpc
    from edge.workers.connect import resolve_workers
    from edge.workers.worker import WorkerOptions, run_worker

    monkeypatch.setattr(rpc, "supports_rpc", lambda: False)
    for attempt in (lambda: resolve_workers(("127.0.0.1:50052",)), lambda: run_worker(WorkerOptions(), print)):
        with pytest.raises(UsageError, match='CMAKE_ARGS="-DGGML_RPC=ON" pip install --force-reinstall'):
            attempt()


def test_probe_gives_up_on_a_silent_peer_within_its_timeout():
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (backlog) and never answers
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(WorkerUnreachable, match="did not answer within 1 s"):
            probe(f"127.0.0.1:{port}", timeout=1.0)
        assert time.monotonic() - started < 10


def test_the_worker_service_unit(llama_cpp_available):
    result = edge_gemma("service", "install", "worker", "--print", "--", "--host", "0.0.0.0", "--allow", "10.0.0.0/8")
    assert result.returncode == 0, result.stderr
    assert "worker --host 0.0.0.0 --allow 10.0.0.0/8" in result.stdout
    assert "After=network-online.target" in result.stdout


def test_a_worker_on_the_lan_is_found_by_detect_and_by_workers_auto(llama_cpp_available):
    lan = Worker("--allow", "127.0.0.0/8,192.0.2.0/24,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16", host="0.0.0.0")
    try:
        assert lan.wait_for("announced on the LAN"), lan.log()
        detected = edge_gemma("detect", "--json")
        assert detected.returncode == 0, detected.stderr
        found = json.loads(detected.stdout)["rpc"]["workers"]
        assert any(w["endpoint"].endswith(f":{lan.port}") and w["memory_bytes"] > 0 for w in found), found
        used = edge_gemma("run", "-m", str(TINY), "-n", "4", "--workers", "auto", "--worker-layers", "2", PROMPT)
        assert used.returncode == 0, used.stderr
        assert f":{lan.port})" in used.stderr and "on workers" in used.stderr
    finally:
        lan.stop()


def test_plan_counts_a_workers_memory(llama_cpp_available, worker, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # catalog sizes: the plan, not the hub, is under test
    result = edge_gemma("plan", "--device", "pi5-4gb", "--workers", worker.endpoint, "--json")
    assert result.returncode == 0, result.stderr
    planned = json.loads(result.stdout)
    assert planned["model"] == "e4b"
    assert any(line["label"] == "on workers" and line["bytes"] < 0 for line in planned["memory"])


def test_allow_lists_are_checked_and_matched():
    from edge.workers.gate import Gate, parse_allow

    with pytest.raises(UsageError, match="--allow 'lan' is not an address or network"):
        parse_allow("lan")
    gate = Gate("127.0.0.1", 0, ("127.0.0.1", 1), parse_allow("192.168.1.0/24, 10.0.0.5"), log=print)
    try:
        admitted = ["127.0.0.1", "192.168.1.77", "10.0.0.5", "::ffff:192.168.1.9", "::1"]
        refused = ["192.168.2.1", "10.0.0.6", "fe80::1"]
        assert all(gate.admits(a) for a in admitted) and not any(gate.admits(a) for a in refused)
    finally:
        gate.listener.close()
