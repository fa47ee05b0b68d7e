"""Which layers go to which worker: as few as make this board fit, each worker by its free memory.

RPC pools memory, it does not add speed (a remote layer waits on the link every token), so this board
keeps every layer it can hold and the workers take the rest: a tail of the layer stack, since that is
what llama.cpp offloads (`n_gpu_layers` counts from the end). The output matrix stays here too
(a tensor override), so a token's 262,144 logits never cross the link: only hidden states do.
Gemma 4's last layers reuse the KV cache of two earlier ones; a reused cache on the other side of the
link would be copied every token, so a tail that holds a reusing layer starts at or before the layers
it reuses. The projector (ears and eyes) always stays on this board, with the microphone and camera.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edge.errors import MemoryFitError
from edge.model.kv_size import AttentionShape
from edge.model.memory import MIB, MemoryLine, gb
from edge.workers.probe import WorkerInfo

_BLOCK = re.compile(r"^blk\.(\d+)\.")
# What a worker allocates beyond its layers and their cache: llama.cpp's compute buffer for them.
WORKER_COMPUTE_BYTES = 256 * MIB
# What a worker's memory report is trusted for: the rest is left for its own system.
WORKER_HEADROOM_BYTES = 256 * MIB


@dataclass(frozen=True)
class LayerSplit:
    """Layers [start, n_layer) run on the workers, `counts[i]` of them on workers[i], in order."""

    workers: tuple[WorkerInfo, ...]
    counts: tuple[int, ...]
    n_layer: int
    moved_bytes: int  # weights and KV cache that leave this board
    worker_lines: tuple[tuple[str, tuple[MemoryLine, ...]], ...]  # per worker: its memory lines

    @property
    def remote_layers(self) -> int:
        return sum(self.counts)

    @property
    def start(self) -> int:
        return self.n_layer - self.remote_layers

    @property
    def n_gpu_layers(self) -> int:
        """llama.cpp's count: the remote layers plus the output "layer" (its norm; the matrix is kept here)."""
        return self.remote_layers + 1 if self.remote_layers else 0

    @property
    def tensor_split(self) -> list[float]:
        """Per worker, in order; the last worker with layers also holds the output norm (a worker with
        none then gets nothing, not an extra hop for one norm)."""
        last = max((i for i, c in enumerate(self.counts) if c), default=len(self.counts) - 1)
        return [float(c + (i == last)) for i, c in enumerate(self.counts)]

    def board_notes(self) -> list[str]:
        """One line per worker: what it holds (the memory lines `plan_split` checked)."""
        out = []
        for endpoint, lines in self.worker_lines:
            held = ", ".join(f"{line.label} {gb(line.bytes)}" for line in lines[1:] if line.bytes)
            out.append(f"worker {endpoint}: layers {lines[0].note}" + (f"; {held}" if held else ""))
        return out

    def describe(self) -> str:
        parts = [f"{c} on {w.endpoint}" for w, c in zip(self.workers, self.counts, strict=True) if c]
        return f"layers {self.start}-{self.n_layer - 1} of {self.n_layer} on workers ({', '.join(parts)})"


def layer_bytes(tensors, n_layer: int) -> list[int]:
    """Weight bytes of each repeating layer (blk.N.*)."""
    sizes = [0] * n_layer
    for tensor in tensors:
        match = _BLOCK.match(tensor.name)
        if match and int(match.group(1)) < n_layer:
            sizes[int(match.group(1))] += tensor.n_bytes
    return sizes


def kv_bytes_per_layer(shape: AttentionShape, kv) -> list[int]:
    """Each layer's own KV cache bytes (0 for a layer that reuses another's), from the cache estimate."""
    per_global = kv.global_layers.bytes // kv.global_layers.layers if kv.global_layers.layers else 0
    per_sliding = kv.sliding_layers.bytes // kv.sliding_layers.layers if kv.sliding_layers.layers else 0
    return [
        0 if il >= shape.kv_layers else (per_sliding if shape.is_swa[il] else per_global) for il in range(shape.n_layer)
    ]


def earliest_start(shape: AttentionShape, start: int) -> int:
    """Where a tail starting at `start` must start: a tail always holds the last layer, and when that
    layer reuses another's cache, the tail takes the layers it reads from too."""
    if start >= shape.n_layer or shape.kv_layers >= shape.n_layer:
        return start
    return min(start, _sources(shape))


def _sources(shape: AttentionShape) -> int:
    """The earliest layer a reusing layer reads: the last owning layer of each kind (sliding, global)."""
    owning = range(shape.kv_layers)
    last_swa = max((il for il in owning if shape.is_swa[il]), default=shape.kv_layers)
    last_global = max((il for il in owning if not shape.is_swa[il]), default=shape.kv_layers)
    kinds = {shape.is_swa[il] for il in range(shape.kv_layers, shape.n_layer)}
    return min(last_swa if True in kinds else shape.kv_layers, last_global if False in kinds else shape.kv_layers)


def plan_split(
    *,
    workers: tuple[WorkerInfo, ...],
    weights: list[int],
    kv: list[int],
    shape: AttentionShape,
    local_over_bytes: int,
    worker_layers: int | None = None,
) -> LayerSplit:
    """The fewest tail layers that free `local_over_bytes` on this board (or exactly `worker_layers`),
    spread over the workers in proportion to their free memory; MemoryFitError when they cannot hold them."""
    n_layer = shape.n_layer
    if worker_layers is not None:
        start = n_layer - min(max(worker_layers, 0), n_layer)
    else:
        start, freed = n_layer, 0
        while start > 0 and freed < local_over_bytes:
            start -= 1
            freed += weights[start] + kv[start]
        if freed < local_over_bytes:
            raise MemoryFitError(
                f"even with every layer on the workers this board is {gb(local_over_bytes - freed)} short; "
                "lower --ctx or use a smaller quant"
            )
    if start < n_layer:
        start = earliest_start(shape, start)
    tail = list(range(start, n_layer))
    counts = _spread(tail, workers, weights, kv)
    lines, moved = [], 0
    first = start
    for worker, count in zip(workers, counts, strict=True):
        layers = range(first, first + count)
        first += count
        w, k = sum(weights[i] for i in layers), sum(kv[i] for i in layers)
        moved += w + k
        board = (
            MemoryLine("layers", 0, f"{count} ({layers.start}-{layers.stop - 1})" if count else "none"),
            MemoryLine("weights", w),
            MemoryLine("KV cache", k, "their own cache; reused caches travel with them"),
            MemoryLine("compute buffers (approx.)", WORKER_COMPUTE_BYTES if count else 0),
        )
        need = w + k + (WORKER_COMPUTE_BYTES if count else 0)
        room = max(worker.free_bytes - WORKER_HEADROOM_BYTES, 0)
        if need > room:
            raise MemoryFitError(
                f"the worker at {worker.endpoint} has {gb(worker.free_bytes)} free and its share of the layers "
                f"needs {gb(need + WORKER_HEADROOM_BYTES)} with headroom; add a worker, free memory there, "
                "or lower --ctx"
            )
        lines.append((worker.endpoint, board))
    return LayerSplit(workers, tuple(counts), n_layer, moved, tuple(lines))


def _spread(tail: list[int], workers: tuple[WorkerInfo, ...], weights: list[int], kv: list[int]) -> list[int]:
    """Consecutive runs of `tail`, one per worker, sized by each worker's share of the free memory."""
    total_free = sum(w.free_bytes for w in workers) or 1
    counts, taken = [], 0
    for i, worker in enumerate(workers):
        if i == len(workers) - 1:
            counts.append(len(tail) - taken)
        else:
            share = round(len(tail) * worker.free_bytes / total_free)
            counts.append(min(share, len(tail) - taken))
            taken += counts[-1]
    return counts
