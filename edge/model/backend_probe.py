"""The child process behind the CPU kernel probe: load a 1 MB model, run a prompt batch and decodes.

Run as `python -m edge.model.backend_probe` by backend.run_probe, never by hand. It loads
backend-probe.gguf (made by scripts/make_probe_gguf.py: every weight type ggml's AMX kernels handle)
with the extra buffer types EDGE_GEMMA_PROBE_AVOID leaves, then evaluates a 64-token batch (the
prompt-processing kernels) and 4 single tokens (the decode kernels). Exit 0 means the kernels ran;
a fragile kernel that faults kills this process by a signal, which is what the parent looks for.

EDGE_GEMMA_PROBE_FAULT=NAME makes the child fault for real (a NULL read in native code) when the
extra buffer type NAME is in use, as a faulting kernel would: tests use it to prove the crash path on
CPUs whose kernels all work.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

from edge.model.backend import PROBE_AVOID_ENV, BackendChoice, offered_buffer_types

PROBE_MODEL = Path(__file__).with_name("backend-probe.gguf")
FAULT_ENV = "EDGE_GEMMA_PROBE_FAULT"


def main() -> int:
    from edge.model.engine import LoadedModel
    from edge.settings import RunSettings

    offered = offered_buffer_types()
    avoided = tuple(b for b in os.environ.get(PROBE_AVOID_ENV, "").split(",") if b in offered)
    choice = BackendChoice(offered, avoided, "probe")
    settings = RunSettings(
        n_ctx=256, n_batch=64, n_ubatch=64, n_threads=2, n_threads_batch=2, flash_attn=False, load_mode="mmap"
    )
    with LoadedModel(PROBE_MODEL, settings, backend=choice) as loaded:
        if os.environ.get(FAULT_ENV) in offered and os.environ[FAULT_ENV] not in avoided:
            ctypes.string_at(0)  # a real segmentation fault, where the fragile kernel would run
        loaded.engine.extend_tokens([(7 * i) % 500 + 3 for i in range(64)])
        for token in (11, 12, 13, 14):
            loaded.engine.extend_tokens([token])
    return 0


if __name__ == "__main__":
    sys.exit(main())
