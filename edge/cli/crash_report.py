"""A native crash (a segfault or abort inside llama.cpp) becomes one line that says what to try.

A fault in native code kills the process before any Python handler can run, so the command runs in
a forked child while the parent only waits: if the child dies by a signal, the parent names the
signal and the Python function that was running (from faulthandler's dump, kept in a log file) and
exits 128 + signal, as a shell would. Signals sent to the parent (SIGTERM from a service manager, a
SIGINT from kill) are passed on; Ctrl-C at a terminal reaches the child by itself. EDGE_DEBUG=1 runs
without the guard, with faulthandler's full dump on stderr.
"""

from __future__ import annotations

import faulthandler
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from edge.paths import cache_dir
from edge.workers import loss

_FRAME = re.compile(r'File "([^"]+)", line \d+ in (\S+)')


# Long-running commands started again after their RPC worker was lost (workers/loss.py).
RESTARTABLE = ("serve", "wyoming", "voice")
RESTART_DELAY_S = 5.0
MAX_RESTART_DELAY_S = 60.0


def run_guarded(main: Callable[[], object], command: str) -> None:
    """Run `main` (which may sys.exit); if native code kills it, print one line and exit 128 + signal.
    serve, wyoming and voice are started again when the crash was an RPC worker lost mid-reply, and
    while a worker they need is unreachable after such a loss."""
    if os.environ.get("EDGE_DEBUG") == "1" or not hasattr(os, "fork") or not hasattr(signal, "sigwaitinfo"):
        faulthandler.enable()
        main()
        return
    # ggml's abort would attach gdb and print a C backtrace: the line below, with the Python stack in
    # the log, says more to a user.
    os.environ.setdefault("GGML_NO_BACKTRACE", "1")
    log_path = _crash_log_path()
    mark_path = log_path.with_suffix(".workers") if log_path else None
    if mark_path:
        os.environ[loss.MARK_ENV] = str(mark_path)
    delay = RESTART_DELAY_S
    while True:
        if mark_path:
            mark_path.unlink(missing_ok=True)
        log = open(log_path, "w") if log_path else None  # noqa: SIM115  (stays open for the child's lifetime)
        sys.stdout.flush()
        sys.stderr.flush()
        # Blocked before the fork, so the parent cannot miss the child's exit or a signal in between.
        previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
        guard = os.getpid()
        pid = os.fork()
        if pid == 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
            _end_with_parent(guard)
            if log:
                faulthandler.enable(file=log, all_threads=True)
            main()
            return
        if log:
            log.close()
        code, lost = _wait_for(pid, command, log_path, mark_path)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        again = command in RESTARTABLE and (lost or (loss.restarted() and code == loss.EXIT_WORKER_UNREACHABLE))
        if not again:
            _remove(mark_path)
            sys.exit(code)
        if lost:
            delay = RESTART_DELAY_S
        else:  # still unreachable: wait longer each time, up to a minute, so a week away is not a flood
            delay = min(delay * 2, MAX_RESTART_DELAY_S)
        os.environ[loss.RESTARTED_ENV] = "1"
        try:
            time.sleep(delay)
        except KeyboardInterrupt:
            sys.exit(130)


def _end_with_parent(guard: int) -> None:
    """A SIGTERM for the child if the guard itself is killed (kill -9 leaves no one to pass a signal on):
    no server or worker is left running, unowned, on its port."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != guard:  # the guard died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the guard's own signal handling still passes SIGTERM/SIGINT on


_WATCHED = {signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
_SENT_BY_A_PROCESS = 0  # si_code <= 0 (SI_USER, SI_QUEUE, SI_TKILL): kill(), not the terminal


def _wait_for(pid: int, command: str, log_path: Path | None, mark_path: Path | None) -> tuple[int, list[str]]:
    """Wait for the child, passing on signals meant for the command: (its exit code as a shell
    reports it, the RPC workers it lost when it crashed because one stopped answering).

    Ctrl-C at a terminal reaches the child by itself (same process group), so a SIGINT from the
    terminal is not passed on again; one sent by a process (kill, a test, a supervisor) is.
    """
    while True:
        info = signal.sigwaitinfo(_WATCHED)
        if info.si_signo == signal.SIGCHLD:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                break
        elif info.si_signo != signal.SIGINT or info.si_code <= _SENT_BY_A_PROCESS:
            os.kill(pid, info.si_signo)
    if os.WIFEXITED(status):
        _remove(log_path)
        return os.WEXITSTATUS(status), []
    number = os.WTERMSIG(status)
    if number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        _remove(log_path)  # stopped from outside, not a crash
        return 128 + number, []
    lost = loss.unreachable(loss.marked(mark_path))
    if lost:
        _remove(log_path)
        after = (
            f"starting again in {RESTART_DELAY_S:.0f} s"
            if command in RESTARTABLE
            else "run it again when the worker is back, or without --workers"
        )
        print(
            f"error: `edge-gemma {command}` lost the worker at {', '.join(lost)} (llama.cpp's RPC client ends the "
            f"process when a worker stops answering); {after}",
            file=sys.stderr,
            flush=True,
        )
        return 128 + number, lost
    print(crash_message(command, number, log_path), file=sys.stderr)
    return 128 + number, []


def crash_message(command: str, number: int, log_path: Path | None) -> str:
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    where = innermost_frame(log_path.read_text(errors="replace")) if log_path and log_path.exists() else None
    place = f" in {where}" if where else ""
    dump = f"; the Python stack is in {log_path}" if log_path else ""
    return (
        f"error: `edge-gemma {command}` crashed in native code ({name}{place}). This is a llama.cpp "
        f"fault, not bad input: try again with EDGE_GEMMA_EXTRA_BUFTS=off (plain CPU kernels){dump}; "
        "EDGE_DEBUG=1 shows the full dump"
    )


def innermost_frame(dump: str) -> str | None:
    """The function faulthandler saw running in the crashing thread, e.g. "llama_cpp/_internals.py decode"."""
    current = dump.split("Current thread", 1)[-1]  # all_threads dumps list the crashing thread so
    match = _FRAME.search(current)
    if not match:
        return None
    path = Path(match.group(1))
    return f"{path.parent.name}/{path.name} {match.group(2)}"


def _crash_log_path() -> Path | None:
    try:
        directory = cache_dir()
        directory.mkdir(parents=True, exist_ok=True)
        return directory / f"crash-{os.getpid()}.log"
    except OSError:
        return None  # no writable cache: the one line still comes, without the stack


def _remove(path: Path | None) -> None:
    if path:
        path.unlink(missing_ok=True)
