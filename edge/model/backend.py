"""Which of ggml's extra CPU kernels a model load may use; fragile ones are tried in a child first.

ggml's CPU backend can move weights into "extra" buffer types with faster kernels: CPU_REPACK
(interleaved Q4_0/Q4_K/IQ4_NL for AVX2 and NEON; Q4_0 prefill is about a third faster with it) and
AMX (Intel tile instructions). On some machines AMX is advertised, the kernel grants the tile
permission, and the instructions still fault (llama.cpp #20824, ollama #17249): no flag check can
tell, only running them. So when this build offers a fragile type, `backend_probe` runs a 1 MB model
in a child process; if the child dies by a signal, loads avoid that type from then on and keep
CPU_REPACK through tensor overrides. The verdict is cached per CPU and llama.cpp build.

`backend_choice()` is the one place that decides; every model load asks it (runner.LoadedModel).
EDGE_GEMMA_EXTRA_BUFTS=auto|on|off overrides it; EDGE_GEMMA_FRAGILE_BUFTS names the suspect types.
"""

from __future__ import annotations

import ctypes
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from edge.errors import UsageError
from edge.jsonio import read_json, write_json_atomic
from edge.paths import cache_dir

MODE_ENV = "EDGE_GEMMA_EXTRA_BUFTS"
FRAGILE_ENV = "EDGE_GEMMA_FRAGILE_BUFTS"
MODES = ("auto", "on", "off")
DEFAULT_FRAGILE = ("AMX",)
REPACK = "CPU_REPACK"
PROBE_TIMEOUT_S = 120
VERDICT_FILE = "cpu-backend.json"
PROBE_AVOID_ENV = "EDGE_GEMMA_PROBE_AVOID"  # set for the probe child only


@dataclass(frozen=True)
class ProbeResult:
    """How one probe child ended."""

    mode: str  # "all": every extra buffer type; "safe": the fragile ones avoided
    ok: bool  # the child ran its batch and decodes and exited 0
    crashed: bool  # it died by a signal (a native fault), the case the probe exists for
    detail: str  # "exit 0", "SIGILL", "timed out after 120 s", "exit 1: <last stderr line>"
    seconds: float


@dataclass(frozen=True)
class BackendChoice:
    """What model loads in this process do with the CPU's extra buffer types."""

    offered: tuple[str, ...]  # extra buffer types this build offers on this CPU, e.g. ("AMX", "CPU_REPACK")
    avoided: tuple[str, ...]  # the ones loads must not use
    reason: str  # one line: why, for `detect`, notes and bench JSON
    probes: tuple[ProbeResult, ...] = ()  # the probes behind a verdict (cached or fresh)
    fresh: bool = False  # probed in this process: say it once

    @property
    def use_extra_bufts(self) -> bool:
        """llama.cpp's model param: False means plain CPU buffers only (llama-bench --repack 0)."""
        return not self.avoided

    @property
    def repack_by_override(self) -> bool:
        """Extra buffers are off, but CPU_REPACK is kept by forcing its tensors there by name."""
        return bool(self.avoided) and REPACK in self.offered and REPACK not in self.avoided

    @property
    def kernels(self) -> str:
        """Short form for stat lines and bench JSON, e.g. "CPU_REPACK (AMX avoided)"."""
        used = [b for b in self.offered if b not in self.avoided]
        text = ", ".join(used) if used else "plain CPU"
        return text + (f" ({', '.join(self.avoided)} avoided)" if self.avoided else "")

    def to_dict(self) -> dict:
        return {
            "offered": list(self.offered),
            "avoided": list(self.avoided),
            "kernels": self.kernels,
            "reason": self.reason,
            "use_extra_bufts": self.use_extra_bufts,
            "repack_by_override": self.repack_by_override,
            "probes": [asdict(p) for p in self.probes],
        }


# -- what this build offers -------------------------------------------------------------------------


@lru_cache(maxsize=1)
def offered_buffer_types() -> tuple[str, ...]:
    """The CPU backend's extra buffer types, in the order llama.cpp tries them (AMX before REPACK)."""
    return tuple(name for name, _ in _extra_bufts())


def buffer_type_handle(name: str) -> int:
    """The ggml_backend_buffer_type_t of an extra buffer type, for tensor_buft_overrides."""
    for buft_name, handle in _extra_bufts():
        if buft_name == name:
            return handle
    raise KeyError(name)


@lru_cache(maxsize=1)
def ggml_library() -> ctypes.CDLL | None:
    """This build's libggml with the device-registry calls edge-gemma makes typed (None: not found)."""
    import llama_cpp

    ggml = cdll(Path(llama_cpp.__file__).parent / "lib", "ggml")
    if ggml is None:
        return None
    voidp, size_t = ctypes.c_void_p, ctypes.c_size_t
    ggml.ggml_backend_dev_by_type.restype, ggml.ggml_backend_dev_by_type.argtypes = voidp, [ctypes.c_int]
    ggml.ggml_backend_dev_backend_reg.restype, ggml.ggml_backend_dev_backend_reg.argtypes = voidp, [voidp]
    ggml.ggml_backend_dev_buffer_type.restype, ggml.ggml_backend_dev_buffer_type.argtypes = voidp, [voidp]
    ggml.ggml_backend_reg_get_proc_address.restype = voidp
    ggml.ggml_backend_reg_get_proc_address.argtypes = [voidp, ctypes.c_char_p]
    ggml.ggml_backend_reg_dev_count.restype, ggml.ggml_backend_reg_dev_count.argtypes = size_t, [voidp]
    ggml.ggml_backend_reg_dev_get.restype, ggml.ggml_backend_reg_dev_get.argtypes = voidp, [voidp, size_t]
    return ggml


CPU_DEVICE = 0  # GGML_BACKEND_DEVICE_TYPE_CPU


@lru_cache(maxsize=1)
def _extra_bufts() -> tuple[tuple[str, int], ...]:
    """Asks ggml through its public C API: CPU device -> its registry -> ggml_backend_dev_get_extra_bufts."""
    import llama_cpp

    ggml = ggml_library()
    base = cdll(Path(llama_cpp.__file__).parent / "lib", "ggml-base")
    if ggml is None or base is None:
        return ()
    voidp = ctypes.c_void_p
    base.ggml_backend_buft_name.restype, base.ggml_backend_buft_name.argtypes = ctypes.c_char_p, [voidp]
    device = ggml.ggml_backend_dev_by_type(CPU_DEVICE)
    if not device:
        return ()
    address = ggml.ggml_backend_reg_get_proc_address(
        ggml.ggml_backend_dev_backend_reg(device), b"ggml_backend_dev_get_extra_bufts"
    )
    if not address:
        return ()
    get_extra = ctypes.CFUNCTYPE(ctypes.POINTER(voidp), voidp)(address)
    array, found = get_extra(device), []
    for i in range(64):  # NULL-terminated; a bound in case a future ABI differs
        if not array[i]:
            break
        found.append((base.ggml_backend_buft_name(array[i]).decode(), array[i]))
    return tuple(found)


def cpu_buffer_type() -> int:
    """The CPU device's plain buffer type (ggml_backend_dev_buffer_type), for tensor_buft_overrides."""
    ggml = ggml_library()
    return ggml.ggml_backend_dev_buffer_type(ggml.ggml_backend_dev_by_type(CPU_DEVICE))


def cdll(lib_dir: Path, name: str) -> ctypes.CDLL | None:
    """One of llama-cpp-python's libraries by its platform's file name, None when absent."""
    for candidate in (f"lib{name}.so", f"lib{name}.dylib", f"{name}.dll"):
        if (lib_dir / candidate).exists():
            return ctypes.CDLL(str(lib_dir / candidate))
    return None


# -- the decision -----------------------------------------------------------------------------------


def backend_choice() -> BackendChoice:
    """The extra buffer types model loads may use here. Cheap unless a probe is due (about a second)."""
    mode = os.environ.get(MODE_ENV, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise UsageError(f"{MODE_ENV}={mode!r} is not allowed; use one of: {', '.join(MODES)}")
    offered = offered_buffer_types()
    if mode == "off":
        return BackendChoice(offered, offered, f"{MODE_ENV}=off: extra CPU kernels turned off")
    if mode == "on":
        return BackendChoice(offered, (), f"{MODE_ENV}=on: every extra CPU kernel used, unprobed")
    suspect = tuple(b for b in offered if b in fragile_buffer_types())
    if not suspect:
        return BackendChoice(offered, (), "no extra CPU kernel here is known to be fragile")
    return _probed_choice(offered, suspect)


def fragile_buffer_types() -> tuple[str, ...]:
    raw = os.environ.get(FRAGILE_ENV)
    if raw is None:
        return DEFAULT_FRAGILE
    return tuple(name.strip() for name in raw.split(",") if name.strip())


def _probed_choice(offered: tuple[str, ...], suspect: tuple[str, ...]) -> BackendChoice:
    key = verdict_key(offered)
    cached = _read_verdict(key)
    if cached is not None:
        return cached
    first = run_probe("all")
    if first.ok:
        choice = BackendChoice(
            offered, (), f"{', '.join(suspect)} kernels passed a probe on this CPU", (first,), fresh=True
        )
    elif first.crashed:
        choice = _after_crash(offered, suspect, first)
    else:
        # Inconclusive (timeout, no probe file, a Python error): stay safe now, probe again next run.
        return BackendChoice(
            offered,
            offered,
            f"the CPU kernel probe was inconclusive ({first.detail}); extra CPU kernels off for this run",
            (first,),
            fresh=True,
        )
    _write_verdict(key, choice)
    return choice


def _after_crash(offered: tuple[str, ...], suspect: tuple[str, ...], first: ProbeResult) -> BackendChoice:
    """The fragile kernels faulted: check that keeping CPU_REPACK alone runs, else drop every extra type."""
    safe = run_probe("safe", avoided=suspect)
    if safe.ok:
        kept = [b for b in offered if b not in suspect] or ["plain CPU"]
        return BackendChoice(
            offered,
            suspect,
            f"{', '.join(suspect)} kernels crashed in a probe on this CPU "
            f"({first.detail}); using {', '.join(kept)} kernels",
            (first, safe),
            fresh=True,
        )
    return BackendChoice(
        offered,
        offered,
        f"{', '.join(suspect)} kernels crashed in a probe on this CPU "
        f"({first.detail}) and so did the rest ({safe.detail}); using plain CPU kernels",
        (first, safe),
        fresh=True,
    )


def run_probe(mode: str, avoided: tuple[str, ...] = ()) -> ProbeResult:
    """Run backend_probe in a child; a signal death is a crash, anything else non-zero is inconclusive."""
    # The child loads with exactly this choice; it never probes (or asks backend_choice) itself.
    env = dict(os.environ, **{PROBE_AVOID_ENV: ",".join(avoided) if mode == "safe" else ""})
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "edge.model.backend_probe"],
            env=env,
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return ProbeResult(mode, False, False, f"timed out after {PROBE_TIMEOUT_S} s", time.perf_counter() - started)
    seconds = time.perf_counter() - started
    if done.returncode == 0:
        return ProbeResult(mode, True, False, "exit 0", seconds)
    if done.returncode < 0:
        return ProbeResult(mode, False, True, _signal_name(-done.returncode), seconds)
    last = (done.stderr.strip().splitlines() or [""])[-1][:200]
    return ProbeResult(mode, False, False, f"exit {done.returncode}: {last}", seconds)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# -- the cached verdict -----------------------------------------------------------------------------


def verdict_key(offered: tuple[str, ...]) -> dict:
    """What a verdict depends on: the CPU, the llama.cpp build and what it offers. A change re-probes."""
    import llama_cpp

    return {
        "cpu": _cpu_name(),
        "llama_cpp": llama_cpp.__version__,
        "system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
        "offered": list(offered),
        "fragile": list(fragile_buffer_types()),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}".strip()


def verdict_path() -> Path:
    return cache_dir() / VERDICT_FILE


def _read_verdict(key: dict) -> BackendChoice | None:
    data = read_json(verdict_path())
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    try:
        choice = data["choice"]
        probes = tuple(ProbeResult(**p) for p in choice["probes"])
        return BackendChoice(tuple(choice["offered"]), tuple(choice["avoided"]), choice["reason"], probes)
    except (KeyError, TypeError):
        return None  # a damaged cache only costs a new probe


def _write_verdict(key: dict, choice: BackendChoice) -> None:
    try:
        write_json_atomic(verdict_path(), {"key": key, "choice": choice.to_dict(), "when": time.time()})
    except OSError:
        pass  # a read-only home: probe again next time rather than fail the run
