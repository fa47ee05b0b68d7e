"""KV cache and compute-buffer sizes: arithmetic, metadata parsing, and llama.cpp's own report."""

import ctypes
import importlib.util
import re
from pathlib import Path

import pytest
from conftest import FIXTURES, require

from edge.errors import ModelFileError
from edge.model.gguf import GGUFInfo, TensorInfo, inspect_gguf
from edge.model.kv_size import (
    KNOWN_SHAPES,
    compute_buffer_bytes,
    dims_from_gguf,
    kv_cache_for_gguf,
    kv_cache_for_model,
    pad,
    row_bytes,
    shape_from_gguf,
    swa_layout,
)

MIB = 1 << 20


def fake_info(arch: str, meta: dict, tensors=()) -> GGUFInfo:
    metadata = {"general.architecture": arch, **{f"{arch}.{k}": v for k, v in meta.items()}}
    return GGUFInfo(Path(f"/fake/{arch}.gguf"), 3, metadata, tuple(tensors), 0, 1)


def gemma4_e2b_metadata() -> dict:
    """E2B as a real GGUF describes it: per-layer arrays for the sliding pattern and KV heads."""
    return {
        "block_count": 35,
        "embedding_length": 1536,
        "attention.head_count": 8,
        "attention.head_count_kv": [1] * 35,
        "attention.key_length": 512,
        "attention.value_length": 512,
        "attention.key_length_swa": 256,
        "attention.value_length_swa": 256,
        "attention.sliding_window": 512,
        "attention.shared_kv_layers": 20,
        "attention.sliding_window_pattern": [il % 5 != 4 for il in range(35)],
        "embedding_length_per_layer_input": 256,
        "context_length": 131072,
    }


def test_row_bytes_follow_ggml_block_sizes():
    assert row_bytes("f16", 256) == 512
    assert row_bytes("f32", 256) == 1024
    assert row_bytes("q8_0", 256) == 8 * 34
    assert row_bytes("q4_0", 512) == 16 * 18
    with pytest.raises(ValueError, match="multiple of 32"):
        row_bytes("q4_0", 48)
    with pytest.raises(ValueError, match="unknown cache type"):
        row_bytes("q3_k", 256)


def test_llama_cpp_pads_context_to_256():
    assert pad(1000) == 1024 and pad(4096) == 4096 and pad(1) == 256
    assert kv_cache_for_model("e2b", 1000).n_ctx == 1024


def test_known_shapes_match_the_published_figures():
    # FACTS.md: f16 KV, E2B ~36 MiB at 4K and ~780 MiB at 128K; E4B ~104 MiB at 4K, ~2 GiB at 128K.
    assert kv_cache_for_model("e2b", 4096).total_bytes == 36 * MIB
    assert kv_cache_for_model("e2b", 131072).total_bytes == 780 * MIB
    assert kv_cache_for_model("e4b", 4096).total_bytes == 104 * MIB
    assert kv_cache_for_model("e4b", 131072).total_bytes == 2088 * MIB


def test_breakdown_only_counts_layers_that_own_a_cache():
    kv = kv_cache_for_model("e2b", 8192)
    assert (kv.global_layers.layers, kv.sliding_layers.layers, kv.shared_layers) == (3, 12, 20)
    assert kv.global_layers.cells == 8192
    assert kv.sliding_layers.cells == 1024  # pad256(min(8192, 512 window + 512 ubatch))
    assert kv.global_layers.k_bytes == 3 * 512 * 2 * 8192  # 1 KV head x 512 dims x f16
    e4b = kv_cache_for_model("e4b", 8192)
    assert (e4b.global_layers.layers, e4b.sliding_layers.layers, e4b.shared_layers) == (4, 20, 18)


def test_sliding_cells_depend_on_ubatch_and_never_exceed_the_context():
    assert kv_cache_for_model("e2b", 8192, n_ubatch=128).sliding_layers.cells == 768
    assert kv_cache_for_model("e2b", 512).sliding_layers.cells == 512
    # swa_full (llama.cpp's default!) gives sliding layers the whole context.
    assert kv_cache_for_model("e2b", 8192, swa_full=True).sliding_layers.cells == 8192


def test_quantized_cache_uses_block_bytes():
    assert kv_cache_for_model("e2b", 4096, type_k="q8_0", type_v="q8_0").total_bytes == 36 * MIB * 34 // 64
    mixed = kv_cache_for_model("e2b", 4096, type_k="q8_0", type_v="f16")
    assert mixed.global_layers.v_bytes == 3 * 512 * 2 * 4096


def test_without_flash_attention_v_is_padded_to_the_widest_layer():
    fa = kv_cache_for_model("e2b", 4096)
    no_fa = kv_cache_for_model("e2b", 4096, flash_attn=False)
    assert no_fa.sliding_layers.k_bytes == fa.sliding_layers.k_bytes
    assert no_fa.sliding_layers.v_bytes == 2 * fa.sliding_layers.v_bytes  # 256 -> 512 dims
    assert no_fa.total_bytes == 42 * MIB


def test_gemma4_metadata_gives_the_known_shape():
    shape = shape_from_gguf(fake_info("gemma4", gemma4_e2b_metadata()))
    assert shape == KNOWN_SHAPES["e2b"]


def test_scalar_head_count_kv_and_scalar_pattern():
    meta = gemma4_e2b_metadata() | {"attention.head_count_kv": 2, "attention.sliding_window_pattern": 5}
    shape = shape_from_gguf(fake_info("gemma4", meta))
    assert shape.n_head_kv == (2,) * 35
    assert shape.is_swa == KNOWN_SHAPES["e2b"].is_swa


def test_next_token_prediction_layers_get_no_cache_and_bad_arrays_are_refused():
    meta = gemma4_e2b_metadata() | {
        "block_count": 36,
        "nextn_predict_layers": 1,
        "attention.head_count_kv": [1] * 36,
        "attention.sliding_window_pattern": [il % 5 != 4 for il in range(36)],
    }
    shape = shape_from_gguf(fake_info("gemma4", meta))
    assert shape.n_layer == 35 and len(shape.n_head_kv) == 35
    with pytest.raises(ModelFileError, match="34 entries for 35 layers"):
        shape_from_gguf(fake_info("gemma4", gemma4_e2b_metadata() | {"attention.head_count_kv": [1] * 34}))


def test_gemma3_uses_llama_cpps_hard_coded_pattern():
    meta = {
        "block_count": 18,
        "embedding_length": 640,
        "attention.head_count": 4,
        "attention.head_count_kv": 1,
        "attention.key_length": 256,
        "attention.value_length": 256,
        "attention.sliding_window": 512,
    }
    shape = shape_from_gguf(fake_info("gemma3", meta))
    assert [il for il, swa in enumerate(shape.is_swa) if not swa] == [5, 11, 17]
    assert shape.kv_layers == 18
    no_window = shape_from_gguf(fake_info("gemma3", {k: v for k, v in meta.items() if "sliding" not in k}))
    assert not any(no_window.is_swa) and no_window.n_swa == 0


def test_gemma2_defaults_to_a_4096_window_every_other_layer():
    meta = {
        "block_count": 26,
        "embedding_length": 2304,
        "attention.head_count": 8,
        "attention.head_count_kv": 4,
        "attention.key_length": 256,
        "attention.value_length": 256,
    }
    shape = shape_from_gguf(fake_info("gemma2", meta))
    assert shape.n_swa == 4096 and shape.is_swa == swa_layout(26, 2)


def test_parallel_sequences_split_the_context_into_streams():
    one = kv_cache_for_model("e2b", 8192)
    two = kv_cache_for_model("e2b", 8192, n_seq=2)
    assert two.global_layers.cells == 4096 and two.global_layers.bytes == one.global_layers.bytes
    assert two.sliding_layers.bytes == 2 * one.sliding_layers.bytes


def test_compute_estimate_is_dominated_by_logits_with_flash_attention():
    info = fake_info("gemma4", gemma4_e2b_metadata(), [TensorInfo("token_embd.weight", (1536, 262144), 1, 0)])
    dims = dims_from_gguf(info)
    assert dims.n_vocab == 262144 and dims.n_embd_per_layer == 256
    shape = shape_from_gguf(info)
    small = compute_buffer_bytes(shape, dims, 4096, n_ubatch=512)
    assert 512 * MIB < small < 560 * MIB
    assert compute_buffer_bytes(shape, dims, 4096, n_ubatch=128) < small / 3
    # Without flash attention the score matrix over a long context takes over.
    assert compute_buffer_bytes(shape, dims, 65536, n_ubatch=512, flash_attn=False) > 1024 * MIB


# --- against llama.cpp itself ----------------------------------------------------------------------


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.fixture
def gemma3_270m(demo_gguf) -> Path:
    """The embedded Gemma 3 270M (conftest assembles it once per session)."""
    return demo_gguf


def llama_report(path: Path, **params) -> dict:
    """Load `path` in llama.cpp and parse what it says it allocated (MiB)."""
    require(_have("llama_cpp"), "llama-cpp-python")
    import llama_cpp
    import llama_cpp._logger

    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def capture(level, text, user_data):
        lines.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(capture, ctypes.c_void_p(0))
    try:
        llm = llama_cpp.Llama(model_path=str(path), n_threads=2, verbose=True, **params)
        llm.close()
    finally:
        llama_cpp.llama_log_set(llama_cpp._logger.llama_log_callback, ctypes.c_void_p(0))
    log = "".join(lines)
    return {
        "kv": [float(x) for x in re.findall(r"llama_kv_cache: size = +([\d.]+) MiB", log)],
        "compute": sum(float(x) for x in re.findall(r"compute buffer size = +([\d.]+) MiB", log)),
    }


def assert_matches_llama_cpp(path: Path, n_ctx: int, n_ubatch: int, flash_attn: bool, swa_full: bool = False):
    """One load: both KV halves (llama.cpp logs global, then sliding) and the compute buffer, within 5%."""
    reported = llama_report(path, n_ctx=n_ctx, n_batch=512, n_ubatch=n_ubatch, flash_attn=flash_attn, swa_full=swa_full)
    info = inspect_gguf(path)
    ours = kv_cache_for_gguf(info, n_ctx, n_ubatch=n_ubatch, n_batch=512, flash_attn=flash_attn, swa_full=swa_full)
    assert len(reported["kv"]) == 2
    assert ours.global_layers.bytes / MIB == pytest.approx(reported["kv"][0], rel=0.05)
    assert ours.sliding_layers.bytes / MIB == pytest.approx(reported["kv"][1], rel=0.05)
    dims = dims_from_gguf(info)
    compute = compute_buffer_bytes(
        shape_from_gguf(info), dims, n_ctx, n_ubatch=n_ubatch, n_batch=512, flash_attn=flash_attn
    )
    compute -= 4 * dims.n_vocab  # llama.cpp logs the one-token output buffer separately
    assert compute / MIB == pytest.approx(reported["compute"], rel=0.05)
    return ours


@pytest.mark.parametrize(
    "n_ctx,n_ubatch,flash_attn,swa_full",
    [
        (1000, 512, True, False),
        (4096, 128, True, False),
        (8192, 512, True, False),
        (4096, 512, True, True),  # llama.cpp's own default: sliding layers get the whole context
        (65536, 512, False, False),  # without flash attention the score matrix outgrows the logits
    ],
)
def test_embedded_model_matches_llama_cpp(gemma3_270m, n_ctx, n_ubatch, flash_attn, swa_full):
    assert_matches_llama_cpp(gemma3_270m, n_ctx, n_ubatch, flash_attn, swa_full)


GEMMA4_TINY = FIXTURES / "gemma4-tiny" / "tiny-gemma-4-E2B.gguf"


@pytest.mark.parametrize("n_ctx,n_ubatch,flash_attn", [(1024, 512, True), (8192, 128, True), (65536, 512, False)])
def test_tiny_gemma4_matches_llama_cpp(n_ctx, n_ubatch, flash_attn):
    """Gemma 4's own layout: shared-KV layers, 32/16 head dims, V padded without flash attention."""
    require(GEMMA4_TINY.is_file(), f"the tiny Gemma 4 fixture {GEMMA4_TINY}")
    ours = assert_matches_llama_cpp(GEMMA4_TINY, n_ctx, n_ubatch, flash_attn)
    assert ours.shared_layers == 5
