"""Keep ggml's CPU_REPACK kernels while a fragile extra buffer type (AMX) is switched off.

llama.cpp has one switch for all extra buffer types (`use_extra_bufts`), and an override to the plain
CPU buffer type re-admits them. So with a fragile type avoided, loads turn the switch off and force
exactly the tensors CPU_REPACK would have taken into it by name (`tensor_buft_overrides`). Forcing a
tensor CPU_REPACK cannot repack crashes at load, so the rule below mirrors ggml-cpu/repack.cpp's
`ggml_repack_get_optimal_repack_type` for x86 (the only place AMX exists); elsewhere nothing is forced.
"""

from __future__ import annotations

import ctypes
import platform
import re
from collections import defaultdict

from edge.model.backend import REPACK, BackendChoice, buffer_type_handle, cpu_buffer_type

# ggml type ids (ggml.h) that x86 CPU_REPACK interleaves, and the CPU feature each needs.
_Q4_0, _Q2_K, _Q4_K, _IQ4_NL = 2, 10, 12, 20
_X86_REPACK_TYPES = {_Q4_0: "AVX2", _Q4_K: "AVX2", _IQ4_NL: "AVX2", _Q2_K: "AVX512"}
_BLOCK_TENSOR = re.compile(r"^blk\.(\d+)\.(.+)$")


def repack_patterns(tensors, system_info: str, machine: str | None = None) -> list[str]:
    """Regexes (llama.cpp matches them with std::regex_search) naming the tensors CPU_REPACK takes.

    `tensors`: gguf_file.TensorInfo items (shape in ggml order, ne[0] first). Only 2-D matmul
    weights qualify: block tensors and `output.weight`; embeddings are read by row (get_rows), which
    repacked data cannot serve. One pattern per tensor kind keeps llama.cpp's regex work small.
    """
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "i686", "x86"):
        return []
    features = set(re.findall(r"(\w+) = 1", system_info))  # "CPU : AVX2 = 1 | AVX512 = 1 | ..."
    layers_by_kind: dict[str, list[str]] = defaultdict(list)
    patterns = []
    for tensor in tensors:
        need = _X86_REPACK_TYPES.get(tensor.ggml_type)
        if need is None or need not in features or len(tensor.shape) != 2 or tensor.shape[1] % 8:
            continue
        block = _BLOCK_TENSOR.match(tensor.name)
        if block:
            layers_by_kind[block.group(2)].append(block.group(1))
        elif tensor.name == "output.weight":
            patterns.append(r"^output\.weight$")
    for kind, layers in sorted(layers_by_kind.items()):
        patterns.append(rf"^blk\.(?:{'|'.join(layers)})\.{re.escape(kind)}$")
    return patterns


class TensorOverrides:
    """The NULL-terminated C array llama_model_params.tensor_buft_overrides points at.

    Keep the object alive until the load returns: llama.cpp reads the patterns during the load.
    """

    class _Entry(ctypes.Structure):
        _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]

    def __init__(self, rules: list[tuple[str, int]]):
        """`rules`: (pattern, buffer type handle) pairs; the first pattern that matches a tensor wins."""
        self._encoded = [(p.encode(), buft) for p, buft in rules]
        self.array = (self._Entry * (len(rules) + 1))()
        for i, (pattern, buft) in enumerate(self._encoded):
            self.array[i].pattern, self.array[i].buft = pattern, buft
        self.array[len(rules)].pattern, self.array[len(rules)].buft = None, None

    @property
    def address(self) -> int:
        return ctypes.addressof(self.array)


# The output matrix (Gemma's is the token embedding, tied): kept on this board when layers go to RPC
# workers, so a token's logits (vocabulary x 4 bytes) are computed here, not sent over the link.
OUTPUT_PATTERNS = (r"^output\.weight$", r"^token_embd\.weight$")


def overrides_for(choice: BackendChoice, tensors, *, keep_output_here: bool = False) -> TensorOverrides | None:
    """What a load with this choice must force into CPU_REPACK (and, with workers, keep on the CPU),
    or None when nothing is forced."""
    rules = []
    if keep_output_here:
        rules += [(pattern, cpu_buffer_type()) for pattern in OUTPUT_PATTERNS]
    if choice.repack_by_override:
        import llama_cpp

        patterns = repack_patterns(tensors, llama_cpp.llama_print_system_info().decode(errors="replace"))
        rules += [(pattern, buffer_type_handle(REPACK)) for pattern in patterns]
    return TensorOverrides(rules) if rules else None
