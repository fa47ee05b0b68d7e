"""KV cache size, computed the way llama.cpp allocates it, from GGUF metadata or known shapes.

What the vendored llama.cpp (llama-cpp-python 0.3.36) does, and this module mirrors:
- n_ctx is padded up to a multiple of 256 before anything is allocated (llama-context.cpp).
- Only layers that own a cache get one: Gemma 4 shares the KV of its last `shared_kv_layers`
  layers with earlier ones; Gemma 3n hard-codes 20 owning layers.
- With sliding-window attention the cache is split in two (llama-kv-cache-iswa.cpp): global layers
  hold n_ctx cells; sliding layers hold pad256(min(n_ctx, n_swa * n_seq + n_ubatch)) cells, unless
  `swa_full` is set, when they hold n_ctx cells too. llama.cpp's *default* is swa_full = true and
  llama-cpp-python keeps it unless told otherwise: the runner must pass swa_full=False.
- Without flash attention V is stored transposed, and when V head sizes differ between layers every
  layer's V is padded to the largest (llama-kv-cache.cpp, TAG_V_CACHE_VARIABLE).
- Per layer: K = row(type_k, n_head_kv * head_k) * cells, V = row(type_v, n_head_kv * head_v) * cells.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.errors import ModelFileError

# cache type -> (elements per block, bytes per block): ggml's type traits.
CACHE_TYPE_BLOCKS: dict[str, tuple[int, int]] = {
    "f32": (1, 4),
    "f16": (1, 2),
    "bf16": (1, 2),
    "q8_0": (32, 34),
    "q5_1": (32, 24),
    "q5_0": (32, 22),
    "q4_1": (32, 20),
    "q4_0": (32, 18),
    "iq4_nl": (32, 18),
}
CELL_PAD = 256  # GGML_PAD(n_ctx, 256) in llama-context.cpp, and the SWA cache's padding

# Sliding-window layout llama.cpp hard-codes when the GGUF has no sliding_window_pattern:
# every n-th layer is global, the others slide (set_swa_pattern with dense_first = false).
_DEFAULT_SWA_PERIOD = {"gemma2": 2, "gemma3": 6, "gemma3n": 5}
_DEFAULT_N_SWA = {"gemma2": 4096}  # gemma2 files may omit sliding_window
_GEMMA3N_KV_LAYERS = 20  # llama-model's gemma3n loader sets n_layer_kv_from_start = 20


@dataclass(frozen=True)
class AttentionShape:
    """What the KV cache size depends on, per layer."""

    arch: str
    n_layer: int
    kv_layers: int  # layers [0, kv_layers) own a cache; later ones reuse an earlier layer's
    is_swa: tuple[bool, ...]  # one per layer
    n_head_kv: tuple[int, ...]  # one per layer
    head_k: int  # global layers
    head_v: int
    head_k_swa: int  # sliding layers
    head_v_swa: int
    n_swa: int  # sliding window in tokens (0 = none)

    def head_dims(self, il: int) -> tuple[int, int]:
        return (self.head_k_swa, self.head_v_swa) if self.is_swa[il] else (self.head_k, self.head_v)


@dataclass(frozen=True)
class KVPart:
    """One half of the cache: the global or the sliding layers."""

    layers: int
    cells: int
    k_bytes: int
    v_bytes: int

    @property
    def bytes(self) -> int:
        return self.k_bytes + self.v_bytes


@dataclass(frozen=True)
class KVCacheEstimate:
    n_ctx: int  # after llama.cpp's padding
    type_k: str
    type_v: str
    global_layers: KVPart
    sliding_layers: KVPart
    shared_layers: int  # layers that own no cache (they reuse another layer's)

    @property
    def total_bytes(self) -> int:
        return self.global_layers.bytes + self.sliding_layers.bytes


def pad(value: int, to: int = CELL_PAD) -> int:
    return -(-value // to) * to


def row_bytes(cache_type: str, n_elements: int) -> int:
    """Bytes of one cache row, as ggml_row_size: whole blocks of the quantized type."""
    if cache_type not in CACHE_TYPE_BLOCKS:
        raise ValueError(f"unknown cache type {cache_type!r}; use one of {', '.join(CACHE_TYPE_BLOCKS)}")
    block, size = CACHE_TYPE_BLOCKS[cache_type]
    if n_elements % block:
        raise ValueError(f"{cache_type} cache needs a head size that is a multiple of {block}, not {n_elements}")
    return n_elements // block * size


def swa_layout(n_layer: int, period: int) -> tuple[bool, ...]:
    """llama.cpp's set_swa_pattern(period): the last layer of each period is global."""
    return tuple(period == 0 or (il % period < period - 1) for il in range(n_layer))


def _per_layer(value, n_layer: int, what: str) -> tuple[int, ...]:
    if isinstance(value, list):
        if len(value) != n_layer:
            raise ModelFileError(f"{what} has {len(value)} entries for {n_layer} layers; the file is damaged")
        return tuple(int(v) for v in value)
    return (int(value),) * n_layer


def shape_from_gguf(info) -> AttentionShape:
    """Read the attention shape from a GGUF's metadata (an edge.model.gguf.GGUFInfo)."""
    arch = info.architecture
    get = info.arch_value
    n_all = int(get("block_count", 0))
    n_head = get("attention.head_count")
    if not n_all or n_head is None:
        raise ModelFileError(f"{info.path}: no block_count/head_count in {arch} metadata; not a language model")
    # llama.cpp drops MTP/next-token-prediction layers (the last ones) from the main context's cache.
    n_layer = n_all - int(get("nextn_predict_layers", 0) or 0)
    heads = _per_layer(n_head, n_all, "head_count")[:n_layer]
    kv_value = get("attention.head_count_kv")
    n_head_kv = heads if kv_value is None else _per_layer(kv_value, n_all, "head_count_kv")[:n_layer]
    default_head = int(get("embedding_length", 0)) // max(heads[0], 1)
    head_k = int(get("attention.key_length", default_head))
    head_v = int(get("attention.value_length", default_head))
    head_k_swa = int(get("attention.key_length_swa", head_k))
    head_v_swa = int(get("attention.value_length_swa", head_v))

    n_swa = int(get("attention.sliding_window", _DEFAULT_N_SWA.get(arch, 0)) or 0)
    pattern = get("attention.sliding_window_pattern")
    if isinstance(pattern, list):
        is_swa = tuple(bool(x) for x in pattern[:n_layer])
        is_swa += (False,) * (n_layer - len(is_swa))
    elif n_swa <= 0:
        is_swa = (False,) * n_layer
    elif pattern is not None:
        is_swa = swa_layout(n_layer, int(pattern))
    elif arch in _DEFAULT_SWA_PERIOD:
        is_swa = swa_layout(n_layer, _DEFAULT_SWA_PERIOD[arch])
    else:
        # An unknown SWA layout: count every layer as global (never under-estimates).
        is_swa = (False,) * n_layer
    if not any(is_swa):
        n_swa = 0

    kv_layers = n_layer
    if arch == "gemma4":
        kv_layers = min(n_layer, n_all - int(get("attention.shared_kv_layers", 0) or 0))
    elif arch == "gemma3n":
        kv_layers = min(n_layer, _GEMMA3N_KV_LAYERS)
    return AttentionShape(arch, n_layer, kv_layers, is_swa, n_head_kv, head_k, head_v, head_k_swa, head_v_swa, n_swa)


def gemma4_shape(
    n_layer: int,
    shared_kv_layers: int,
    period: int,
    n_head_kv: int,
    head_swa: int = 256,
    head_global: int = 512,
    n_swa: int = 512,
) -> AttentionShape:
    """A Gemma 4 shape from the model card's numbers (used before the file is downloaded)."""
    return AttentionShape(
        "gemma4",
        n_layer,
        n_layer - shared_kv_layers,
        swa_layout(n_layer, period),
        (n_head_kv,) * n_layer,
        head_global,
        head_global,
        head_swa,
        head_swa,
        n_swa,
    )


# FACTS.md: E2B 35 layers (20 share KV), (4 sliding + 1 global) x 7, 1 KV head;
# E4B 42 layers (18 share KV), (5 sliding + 1 global) x 7, 2 KV heads; head dim 256 / 512, window 512.
KNOWN_SHAPES: dict[str, AttentionShape] = {
    "e2b": gemma4_shape(35, 20, 5, 1),
    "e4b": gemma4_shape(42, 18, 6, 2),
}


def kv_cache_bytes(
    shape: AttentionShape,
    n_ctx: int,
    *,
    type_k: str = "f16",
    type_v: str = "f16",
    n_ubatch: int = 512,
    n_batch: int | None = None,
    flash_attn: bool = True,
    swa_full: bool = False,
    n_seq: int = 1,
    kv_unified: bool = False,
) -> KVCacheEstimate:
    """The KV cache llama.cpp allocates for this shape and these context parameters."""
    if n_ctx < 1 or n_seq < 1 or n_ubatch < 1:
        raise ValueError("n_ctx, n_seq and n_ubatch must be positive")
    # llama.cpp clamps the batch to the (unpadded) context, then the micro-batch to the batch.
    n_batch = min(n_ctx, n_batch if n_batch is not None else max(n_ubatch, 2048))
    n_ubatch = min(n_ubatch, n_batch)
    ctx_padded = pad(n_ctx)
    if kv_unified:
        cells_global, n_stream = ctx_padded, 1
    else:
        cells_global, n_stream = pad(ctx_padded // n_seq), n_seq
        ctx_padded = cells_global * n_seq
    cells_swa = (
        cells_global if swa_full else pad(min(cells_global, shape.n_swa * (n_seq if kv_unified else 1) + n_ubatch))
    )

    # Without flash attention V is transposed and padded to the widest V of all layers.
    pad_v = None
    if not flash_attn:
        pad_v = max(shape.n_head_kv[il] * shape.head_dims(il)[1] for il in range(shape.n_layer))

    totals = {True: [0, 0, 0], False: [0, 0, 0]}  # is_swa -> [layers, k, v]
    for il in range(shape.kv_layers):
        swa = shape.is_swa[il] and shape.n_swa > 0
        cells = (cells_swa if swa else cells_global) * n_stream
        head_k, head_v = shape.head_dims(il)
        width_v = pad_v if pad_v is not None else shape.n_head_kv[il] * head_v
        part = totals[swa]
        part[0] += 1
        part[1] += row_bytes(type_k, shape.n_head_kv[il] * head_k) * cells
        part[2] += row_bytes(type_v, width_v) * cells
    g, s = totals[False], totals[True]
    return KVCacheEstimate(
        n_ctx=ctx_padded,
        type_k=type_k,
        type_v=type_v,
        global_layers=KVPart(g[0], cells_global, g[1], g[2]),
        sliding_layers=KVPart(s[0], cells_swa if s[0] else 0, s[1], s[2]),
        shared_layers=shape.n_layer - shape.kv_layers,
    )


def kv_cache_for_gguf(info, n_ctx: int, **kwargs) -> KVCacheEstimate:
    """kv_cache_bytes for a GGUF file already read with edge.model.gguf.inspect_gguf."""
    return kv_cache_bytes(shape_from_gguf(info), n_ctx, **kwargs)


def kv_cache_for_model(model: str, n_ctx: int, **kwargs) -> KVCacheEstimate:
    """kv_cache_bytes for 'e2b' or 'e4b' from the published shapes, before any file is present."""
    if model not in KNOWN_SHAPES:
        raise ValueError(f"no known shape for model {model!r}; use one of {', '.join(KNOWN_SHAPES)}")
    return kv_cache_bytes(KNOWN_SHAPES[model], n_ctx, **kwargs)


# --- compute buffers ------------------------------------------------------------------------------
# llama.cpp reserves one worst-case graph of n_ubatch tokens (llama-context.cpp sched_reserve) and
# the allocator reuses memory between ops, so the buffer is the *peak* of live tensors, not a sum.
# Measured on Gemma 3 270M (CPU, this llama.cpp): 514.50 MiB at n_ubatch 512 whatever n_ctx with
# flash attention = 512 MiB of logits (n_vocab x n_ubatch f32) + 2 x n_embd x n_ubatch f32; without
# flash attention at 64K/128K context the KQ scores take over: 651.76 / 1291.76 MiB
# = n_kv x n_ubatch x (4 B x n_head + 4 B of mask) + ~12 MiB of activations. The formula below
# reproduces those points. On the tiny Gemma 4 fixture without flash attention the f32 KQ mask
# (n_kv x n_ubatch) is still alive next to the logits (642.39 MiB at 64K = 512 + 128 + 2), so that
# case counts both; for any other model this is an estimate, not llama.cpp's own number.


@dataclass(frozen=True)
class ModelDims:
    """What the compute-buffer estimate needs beyond the attention shape."""

    n_vocab: int
    n_embd: int
    n_head: int
    n_ff_max: int
    n_embd_per_layer: int = 0  # Gemma 3n/4 per-layer-embedding width (0 = none)


def dims_from_gguf(info) -> ModelDims:
    get = info.arch_value
    n_embd = int(get("embedding_length", 0))
    tok = next((t for t in info.tensors if t.name == "token_embd.weight"), None)
    n_vocab = int(get("vocab_size", 0) or (tok.shape[1] if tok is not None and len(tok.shape) > 1 else 0))
    heads = get("attention.head_count", 1)
    ff = get("feed_forward_length", 0)
    return ModelDims(
        n_vocab,
        n_embd,
        max(heads) if isinstance(heads, list) else int(heads),
        max(ff) if isinstance(ff, list) else int(ff or 0),
        int(get("embedding_length_per_layer_input", 0) or 0),
    )


def compute_buffer_bytes(
    shape: AttentionShape,
    dims: ModelDims,
    n_ctx: int,
    *,
    n_ubatch: int = 512,
    n_batch: int | None = None,
    flash_attn: bool = True,
) -> int:
    """Estimated compute buffer (all backends together) plus the one-token logits output buffer."""
    n_batch = min(n_ctx, n_batch if n_batch is not None else max(n_ubatch, 2048))
    ub = min(n_ubatch, n_batch)
    n_kv = pad(n_ctx)  # the global layers attend over the whole (padded) cache
    head_max = max(shape.head_k, shape.head_k_swa)
    logits_peak = 4 * ub * (dims.n_vocab + 2 * dims.n_embd)
    activations = (
        4
        * ub
        * (2 * dims.n_ff_max + dims.n_head * head_max + 2 * dims.n_embd + 2 * dims.n_embd_per_layer * shape.n_layer)
    )
    if flash_attn:
        attention = 2 * n_kv * ub  # the f16 mask; flash attention keeps no score matrix
    else:
        attention = n_kv * ub * (4 * dims.n_head + 4)  # f32 scores per head + the f32 mask
        logits_peak += 4 * n_kv * ub  # the mask can outlive the layers (seen on Gemma 4)
    output_buffer = 4 * dims.n_vocab  # logits of the last token (llama-cpp-python asks for one)
    return max(logits_peak, attention + activations) + output_buffer
