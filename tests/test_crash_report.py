"""A native crash becomes one line (edge/crash_report.py): a real SIGSEGV in a real child process."""

import subprocess
import sys

from edge.cli.crash_report import innermost_frame

CRASHING_COMMAND = """
import ctypes
from edge.cli.crash_report import run_guarded

def decode():
    ctypes.string_at(0)  # a NULL read in native code, as a faulting llama.cpp kernel

def main():
    print("working", flush=True)
    decode()

run_guarded(main, "run")
"""


def run_python(code: str, env_extra: dict, tmp_path) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ, EDGE_GEMMA_HOME=str(tmp_path / "home"), **env_extra)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


def test_a_segfault_is_one_line_naming_the_signal_and_the_function(tmp_path):
    done = run_python(CRASHING_COMMAND, {"EDGE_DEBUG": "0"}, tmp_path)
    assert done.returncode == 128 + 11
    assert done.stdout == "working\n"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "`edge-gemma run` crashed in native code (SIGSEGV in ctypes/__init__.py string_at)" in lines[0]
    assert "EDGE_GEMMA_EXTRA_BUFTS=off" in lines[0] and "EDGE_DEBUG=1" in lines[0]
    log = lines[0].split("the Python stack is in ")[1].split(";")[0]
    assert "in decode" in open(log).read()  # the full dump is kept for a bug report


def test_edge_debug_shows_faulthandlers_full_dump(tmp_path):
    done = run_python(CRASHING_COMMAND, {"EDGE_DEBUG": "1"}, tmp_path)
    assert done.returncode < 0 or done.returncode == 139
    assert "Fatal Python error: Segmentation fault" in done.stderr and "line 6 in decode" in done.stderr


def test_a_normal_exit_code_passes_through_and_leaves_no_log(tmp_path):
    code = "import sys\nfrom edge.cli.crash_report import run_guarded\nrun_guarded(lambda: sys.exit(3), 'x')\n"
    done = run_python(code, {"EDGE_DEBUG": "0"}, tmp_path)
    assert done.returncode == 3 and done.stderr == ""
    assert not list((tmp_path / "home").rglob("crash-*.log"))


def test_innermost_frame_reads_the_crashing_thread():
    dump = (
        "Fatal Python error: Segmentation fault\n\nThread 0x7f01 (most recent call first):\n"
        '  File "/x/threading.py", line 320 in wait\n\n'
        "Current thread 0x7f00 (most recent call first):\n"
        '  File "/venv/llama_cpp/_internals.py", line 331 in decode\n'
        '  File "/venv/llama_cpp/llama.py", line 690 in eval\n'
    )
    assert innermost_frame(dump) == "llama_cpp/_internals.py decode"
    assert innermost_frame("garbage") is None
