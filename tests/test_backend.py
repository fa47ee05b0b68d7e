"""The CPU-kernel decision (edge/model/backend.py): real probe children, the cached verdict, overrides.

This machine's CPU may have no AMX, so the crash path is proven by naming CPU_REPACK fragile and
making the probe child fault for real where CPU_REPACK would run (EDGE_GEMMA_PROBE_FAULT): the
child dies by SIGSEGV, the parent sees it, exactly as with a faulting AMX kernel.
"""

import ctypes
import json
import re

import pytest
from conftest import require

from edge.errors import UsageError
from edge.model import backend
from edge.model.backend import BackendChoice, ProbeResult, backend_choice, verdict_path
from edge.model.buffer_overrides import repack_patterns
from edge.model.engine import GREEDY, LoadedModel
from edge.model.gguf import TensorInfo
from edge.settings import RunSettings


@pytest.fixture
def repack_offered(llama_cpp_available):
    require("CPU_REPACK" in backend.offered_buffer_types(), "a llama.cpp build with CPU_REPACK (AVX2 or NEON)")


@pytest.fixture(scope="module")
def amx_faults(llama_cpp_available) -> bool:
    """This CPU offers AMX and its kernels really fault (a virtualized Xeon, llama.cpp #20824): then
    no load may run every kernel, and the tests below check that the crash is seen instead."""
    return "AMX" in backend.offered_buffer_types() and backend.run_probe("all").crashed


@pytest.fixture(autouse=True)
def no_knobs(monkeypatch):
    for name in (backend.MODE_ENV, backend.FRAGILE_ENV, "EDGE_GEMMA_PROBE_FAULT"):
        monkeypatch.delenv(name, raising=False)
    verdict_path().unlink(missing_ok=True)  # the session verdict conftest copied in


def forbid_probes(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("no probe should run here")

    monkeypatch.setattr(backend, "run_probe", fail)


def test_nothing_fragile_offered_means_no_probe_and_every_kernel(monkeypatch, repack_offered):
    monkeypatch.setenv(backend.FRAGILE_ENV, "")  # as on a CPU without AMX
    forbid_probes(monkeypatch)
    choice = backend_choice()
    assert choice.avoided == () and choice.use_extra_bufts and not choice.probes
    assert not verdict_path().exists()


def test_a_fragile_kernel_that_faults_is_avoided_and_remembered(monkeypatch, repack_offered):
    monkeypatch.setenv(backend.FRAGILE_ENV, "CPU_REPACK")
    monkeypatch.setenv("EDGE_GEMMA_PROBE_FAULT", "CPU_REPACK")
    choice = backend_choice()
    crashed, safe = choice.probes
    assert crashed.crashed and crashed.detail == "SIGSEGV" and crashed.mode == "all"
    assert safe.ok and safe.mode == "safe"  # the same child without CPU_REPACK runs
    assert choice.avoided == ("CPU_REPACK",) and not choice.use_extra_bufts and choice.fresh
    assert "crashed in a probe" in choice.reason
    # The next process reads the verdict instead of probing again, and does not announce it again.
    forbid_probes(monkeypatch)
    again = backend_choice()
    assert again.avoided == ("CPU_REPACK",) and not again.fresh
    assert again.probes[0].detail == "SIGSEGV"


def test_a_probe_that_passes_keeps_the_kernels(monkeypatch, repack_offered, amx_faults):
    monkeypatch.setenv(backend.FRAGILE_ENV, "CPU_REPACK")
    choice = backend_choice()  # the "all" probe runs every offered kernel, AMX included
    if amx_faults:
        assert choice.probes[0].crashed and not choice.use_extra_bufts and choice.avoided == ("CPU_REPACK",)
        return
    assert choice.use_extra_bufts and choice.probes[0].ok and len(choice.probes) == 1
    assert json.loads(verdict_path().read_text())["choice"]["use_extra_bufts"] is True


def test_a_new_llama_cpp_build_or_cpu_probes_again(monkeypatch, repack_offered):
    monkeypatch.setenv(backend.FRAGILE_ENV, "CPU_REPACK")
    backend_choice()
    calls = []

    def passing(mode, avoided=()):
        calls.append(mode)
        return ProbeResult(mode, True, False, "exit 0", 0.1)

    monkeypatch.setattr(backend, "run_probe", passing)
    backend_choice()
    assert calls == []  # same key: cached
    real_key = backend.verdict_key
    monkeypatch.setattr(backend, "verdict_key", lambda offered: {**real_key(offered), "llama_cpp": "0.3.99"})
    backend_choice()
    assert calls == ["all"]
    monkeypatch.setattr(backend, "verdict_key", lambda offered: {**real_key(offered), "cpu": "another CPU"})
    backend_choice()
    assert calls == ["all", "all"]


def test_an_inconclusive_probe_plays_safe_and_is_not_cached(monkeypatch, repack_offered):
    monkeypatch.setenv(backend.FRAGILE_ENV, "CPU_REPACK")
    monkeypatch.setattr(
        backend, "run_probe", lambda mode, avoided=(): ProbeResult(mode, False, False, "exit 1: no model", 0.1)
    )
    choice = backend_choice()
    assert not choice.use_extra_bufts and "inconclusive" in choice.reason
    assert not verdict_path().exists()


def test_the_environment_overrides_the_verdict(monkeypatch, repack_offered):
    monkeypatch.setenv(backend.FRAGILE_ENV, "CPU_REPACK")
    forbid_probes(monkeypatch)
    monkeypatch.setenv(backend.MODE_ENV, "off")
    off = backend_choice()
    assert not off.use_extra_bufts and off.avoided == backend.offered_buffer_types()
    monkeypatch.setenv(backend.MODE_ENV, "on")
    assert backend_choice().use_extra_bufts
    monkeypatch.setenv(backend.MODE_ENV, "sometimes")
    with pytest.raises(UsageError, match="auto, on, off"):
        backend_choice()


def test_repack_patterns_mirror_ggml_rules_for_x86():
    info = "CPU : AVX2 = 1 | AVX512 = 0 | REPACK = 1 |"
    tensors = [
        TensorInfo("token_embd.weight", (640, 262144), 2, 0),  # read by row: never repacked
        TensorInfo("blk.0.attn_q.weight", (640, 1024), 12, 0),  # Q4_K, 1024 rows: repacked
        TensorInfo("blk.1.attn_q.weight", (640, 1024), 12, 0),
        TensorInfo("blk.0.ffn_down.weight", (2048, 640), 14, 0),  # Q6_K: no x86 repack
        TensorInfo("blk.0.attn_k.weight", (640, 260), 2, 0),  # Q4_0 but 260 rows: not a multiple of 8
        TensorInfo("blk.2.attn_v.weight", (640, 256), 10, 0),  # Q2_K needs AVX-512
        TensorInfo("output.weight", (640, 1024), 2, 0),
    ]
    patterns = repack_patterns(tensors, info, machine="x86_64")
    assert patterns == [r"^output\.weight$", r"^blk\.(?:0|1)\.attn_q\.weight$"]
    chosen = {t.name for t in tensors if any(re.search(p, t.name) for p in patterns)}
    assert chosen == {"blk.0.attn_q.weight", "blk.1.attn_q.weight", "output.weight"}
    assert repack_patterns(tensors, info, machine="aarch64") == []  # no AMX there: nothing forced


def load_log(path, choice: BackendChoice) -> tuple[str, str]:
    """Load through the runner with this kernel choice; llama.cpp's log and a greedy completion."""
    import llama_cpp
    import llama_cpp._logger

    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def capture(level, text, user_data):
        lines.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(capture, ctypes.c_void_p(0))
    try:
        with LoadedModel(path, RunSettings(n_ctx=256, n_batch=64, n_ubatch=64), backend=choice, verbose=True) as loaded:
            text = loaded.complete("The capital of France is", GREEDY.with_(max_tokens=8)).run()
    finally:
        llama_cpp.llama_log_set(llama_cpp._logger.llama_log_callback, ctypes.c_void_p(0))
    return "".join(lines), text


def repack_mib(log: str) -> float:
    found = re.findall(r"CPU_REPACK model buffer size = +([\d.]+) MiB", log)
    return float(found[0]) if found else 0.0


def test_avoiding_amx_keeps_cpu_repack_by_tensor_override(demo_gguf, repack_offered, amx_faults):
    """With AMX avoided, the same tensors land in CPU_REPACK as in a load without AMX, same output."""
    if amx_faults:  # a load with every kernel would crash here: check the override on its own
        kept_log, kept_text = load_log(demo_gguf, BackendChoice(("AMX", "CPU_REPACK"), ("AMX",), "AMX avoided"))
        assert repack_mib(kept_log) > 0 and "buffer type overridden to CPU_REPACK" in kept_log and kept_text
        return
    default_log, default_text = load_log(demo_gguf, BackendChoice(("CPU_REPACK",), (), "default"))
    kept_log, kept_text = load_log(demo_gguf, BackendChoice(("AMX", "CPU_REPACK"), ("AMX",), "AMX avoided"))
    off_log, _ = load_log(demo_gguf, BackendChoice(("CPU_REPACK",), ("CPU_REPACK",), "off"))
    assert repack_mib(default_log) > 0
    assert repack_mib(kept_log) == repack_mib(default_log)
    assert "buffer type overridden to CPU_REPACK" in kept_log
    assert kept_text == default_text
    assert repack_mib(off_log) == 0


def test_the_probe_child_runs_the_shipped_model(llama_cpp_available, amx_faults):
    result = backend.run_probe("all" if not amx_faults else "safe", avoided=("AMX",) if amx_faults else ())
    assert result.ok and not result.crashed and result.detail == "exit 0"
