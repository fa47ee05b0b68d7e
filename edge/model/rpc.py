"""llama.cpp's RPC backend (ggml-rpc) through ggml's C API: a worker's server, and remote devices to load onto.

llama-cpp-python's own `rpc_servers` option broke after an upstream change (abetlen #1914), so this
calls ggml directly: `ggml_backend_rpc_start_server` serves this machine's CPU to one client at a time;
`ggml_backend_rpc_add_server` makes a worker's device that `llama_model_params.devices` can name.
The backend exists only in a build made with -DGGML_RPC=ON (the README's install and scripts/test.sh
build it); any other build is refused in one line with the command that rebuilds it.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

from edge.errors import UsageError
from edge.model.backend import CPU_DEVICE, cdll, ggml_library

REBUILD_COMMAND = (
    'CMAKE_ARGS="-DGGML_RPC=ON" pip install --force-reinstall --no-deps --no-cache-dir llama-cpp-python==0.3.36'
)
# The protocol this build speaks (ggml-rpc.h); a worker must answer HELLO with the same major version.
PROTOCOL_MAJOR, PROTOCOL_MINOR = 7, 0


def supports_rpc() -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_supports_rpc())


def require_rpc(what: str) -> None:
    """UsageError unless this llama.cpp build has the RPC backend."""
    if not supports_rpc():
        raise UsageError(
            f"{what} needs llama.cpp's RPC backend, and this llama-cpp-python was built without it "
            f"(a wheel cached from an earlier install is reused silently); rebuild it: {REBUILD_COMMAND}"
        )


@lru_cache(maxsize=1)
def _rpc() -> ctypes.CDLL:
    """libggml-rpc (the backend's two entry points), typed."""
    import llama_cpp

    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    lib = cdll(lib_dir, "ggml-rpc")
    if lib is None or not hasattr(lib, "ggml_backend_rpc_add_server"):
        raise UsageError(f"this llama.cpp build has no ggml RPC library in {lib_dir}; rebuild it: {REBUILD_COMMAND}")
    voidp, size_t = ctypes.c_void_p, ctypes.c_size_t
    lib.ggml_backend_rpc_add_server.restype, lib.ggml_backend_rpc_add_server.argtypes = voidp, [ctypes.c_char_p]
    lib.ggml_backend_rpc_start_server.restype = None
    lib.ggml_backend_rpc_start_server.argtypes = [ctypes.c_char_p, ctypes.c_char_p, size_t, size_t, voidp]
    return lib


def serve_forever(endpoint: str, threads: int, cache_dir: Path | None) -> None:
    """Serve this machine's CPU at `endpoint` ("127.0.0.1:PORT"), one client at a time; never returns
    unless the socket cannot be made (then llama.cpp says why on stderr). Blocks in C with the GIL
    released, so call it on a thread of its own."""
    devices = (ctypes.c_void_p * 1)(ggml_library().ggml_backend_dev_by_type(CPU_DEVICE))
    cache = str(cache_dir).encode() if cache_dir else None
    _rpc().ggml_backend_rpc_start_server(endpoint.encode(), cache, threads, 1, devices)


def remote_devices(endpoint: str) -> list[int]:
    """The ggml devices a worker serves, added to this process (llama.cpp connects to ask how many).
    Call only after `probe` answered: llama.cpp ends the process if the worker cannot be reached."""
    reg = _rpc().ggml_backend_rpc_add_server(endpoint.encode())
    if not reg:
        raise UsageError(f"the worker at {endpoint} serves no device; restart it (edge-gemma worker)")
    ggml = ggml_library()
    return [ggml.ggml_backend_reg_dev_get(reg, i) for i in range(ggml.ggml_backend_reg_dev_count(reg))]


class DeviceList:
    """The NULL-terminated ggml_backend_dev_t array llama_model_params.devices points at; keep it alive
    until the load returns."""

    def __init__(self, devices: list[int]):
        self.array = (ctypes.c_void_p * (len(devices) + 1))(*devices, None)

    @property
    def address(self) -> int:
        return ctypes.addressof(self.array)
