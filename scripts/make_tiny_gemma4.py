#!/usr/bin/env python3
"""Write a tiny random Gemma 4 (E2B-shaped) text GGUF and a tiny audio+vision mmproj for tests.

The files follow the tensor names and metadata keys that llama.cpp's gemma4 model and libmtmd's
gemma4a/gemma4v projectors read, with toy dimensions and seeded random weights: they load and run
through the real code paths, and what they generate is meaningless by design.

The tokenizer and chat template are the real Gemma 4 ones. They are copied from llama.cpp's
models/ggml-vocab-gemma-4.gguf (inside the llama-cpp-python sdist) or, when regenerating, from
the existing fixture. Same inputs + same numpy/gguf versions -> byte-identical files.

Examples:
    python scripts/make_tiny_gemma4.py --vocab vendor/llama.cpp/models/ggml-vocab-gemma-4.gguf
    python scripts/make_tiny_gemma4.py            # regenerate in place, tokenizer from the fixture
"""

from __future__ import annotations

import argparse
import os
import sys
import zlib
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter, quants

from edge.model.synthetic import N_MEL, TINY_DIR, TINY_MMPROJ_NAME, TINY_TEXT_NAME, add_mmproj_keys, read_tokenizer

SEED = 4_2026
DEFAULT_OUT = TINY_DIR
TEXT_NAME, MMPROJ_NAME = TINY_TEXT_NAME, TINY_MMPROJ_NAME

# Text model: E2B's structure at toy size. E2B: 35 layers = (4 sliding + 1 global) x 7, the last 20
# reuse the KV of earlier layers, 1 KV head, head dim 256/512, window 512, per-layer input dim 256.
N_LAYER = 10  # (4 sliding + 1 global) x 2
SWA_PATTERN = [True, True, True, True, False] * 2
N_SHARED_KV = 5  # layers 5..9 read the KV of layer 3 (sliding) / 4 (global)
N_EMBD = 32
N_HEAD, N_HEAD_KV = 2, 1
HEAD_DIM_SWA, HEAD_DIM_FULL = 16, 32
N_FF = 64  # double-wide (128) on the KV-shared layers, as E2B
N_EMBD_PER_LAYER = 2  # the PLE table is n_vocab x (n_layer * this): keep it tiny
SLIDING_WINDOW = 512
PARTIAL_ROTARY_FULL = 0.25  # global layers rotate a quarter of the head ("proportional")

# Audio conformer (projector gemma4a): 128 mel bins in, two stride-2 convs -> 25 tokens/s.
A_N_MEL = N_MEL
A_EMBD, A_HEAD, A_LAYER = 32, 2, 2
A_FF = 4 * A_EMBD  # the converter writes hidden_size * 4
A_CONV_CH = (8, 4)  # subsampling conv channels (E2B: 128, 32)
A_OUT = 32  # conformer output_proj width before the text projection
A_DW_KERNEL = 5  # depthwise conv width the graph's left-pad of 4 implies

# Vision tower (projector gemma4v): patch 16, 3x3 average pooling, learned 2D position table.
V_EMBD, V_HEAD, V_LAYER, V_FF = 32, 2, 2, 64
V_PATCH, V_POS_SIZE = 16, 10240  # the real table size: large images index far into it


def rng_for(name: str) -> np.random.Generator:
    """One stream per tensor, so adding a tensor never changes the others."""
    return np.random.default_rng([SEED, zlib.crc32(name.encode())])


def normal(name: str, shape: tuple[int, ...], std: float = 0.05) -> np.ndarray:
    return (rng_for(name).standard_normal(shape) * std).astype(np.float32)


def norm(name: str, n: int) -> np.ndarray:
    # RMS-norm gains near 1 keep activations in a sane range through the random layers.
    return (1.0 + normal(name, (n,), 0.02)).astype(np.float32)


class Tensors:
    """Collects (name, array, raw ggml type) in write order. Shapes are numpy order (reversed ggml)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, np.ndarray, GGMLQuantizationType | None]] = []

    def f32(self, name: str, data: np.ndarray) -> None:
        self.items.append((name, np.ascontiguousarray(data, dtype=np.float32), None))

    def f16(self, name: str, data: np.ndarray) -> None:
        self.items.append((name, np.ascontiguousarray(data, dtype=np.float16), None))

    def mat(self, name: str, n_out: int, n_in: int, std: float = 0.05) -> None:
        self.f16(name, normal(name, (n_out, n_in), std))

    def q8_0(self, name: str, data: np.ndarray) -> None:
        qtype = GGMLQuantizationType.Q8_0
        self.items.append((name, quants.quantize(data.astype(np.float32), qtype), qtype))

    def write(self, writer: GGUFWriter) -> None:
        for name, data, raw in self.items:
            writer.add_tensor(name, data, raw_dtype=raw)


def text_tensors(n_vocab: int) -> Tensors:
    t = Tensors()
    # Q8_0 keeps the n_vocab x n_embd table (also the tied output head) at ~9 MB.
    t.q8_0("token_embd.weight", normal("token_embd.weight", (n_vocab, N_EMBD), 0.5))
    t.f16(
        "per_layer_token_embd.weight", normal("per_layer_token_embd.weight", (n_vocab, N_LAYER * N_EMBD_PER_LAYER), 0.5)
    )
    t.mat("per_layer_model_proj.weight", N_LAYER * N_EMBD_PER_LAYER, N_EMBD)
    t.f32("per_layer_proj_norm.weight", norm("per_layer_proj_norm.weight", N_EMBD_PER_LAYER))
    # Global layers rotate only the first dims; 1e30 freq factors leave the rest unrotated.
    n_rot = int(HEAD_DIM_FULL * PARTIAL_ROTARY_FULL / 2)
    t.f32("rope_freqs.weight", np.array([1.0] * n_rot + [1e30] * (HEAD_DIM_FULL // 2 - n_rot)))

    for i in range(N_LAYER):
        p = f"blk.{i}."
        head_dim = HEAD_DIM_SWA if SWA_PATTERN[i] else HEAD_DIM_FULL
        has_kv = i < N_LAYER - N_SHARED_KV
        n_ff = N_FF if has_kv else 2 * N_FF
        t.f32(p + "attn_norm.weight", norm(p + "attn_norm", N_EMBD))
        t.mat(p + "attn_q.weight", N_HEAD * head_dim, N_EMBD)
        if has_kv:  # KV-shared layers have no K/V projections of their own
            t.mat(p + "attn_k.weight", N_HEAD_KV * head_dim, N_EMBD)
            t.mat(p + "attn_v.weight", N_HEAD_KV * head_dim, N_EMBD)
        t.mat(p + "attn_output.weight", N_EMBD, N_HEAD * head_dim)
        t.f32(p + "attn_q_norm.weight", norm(p + "attn_q_norm", head_dim))
        if has_kv:
            t.f32(p + "attn_k_norm.weight", norm(p + "attn_k_norm", head_dim))
        t.f32(p + "post_attention_norm.weight", norm(p + "post_attention_norm", N_EMBD))
        t.f32(p + "ffn_norm.weight", norm(p + "ffn_norm", N_EMBD))
        t.mat(p + "ffn_gate.weight", n_ff, N_EMBD)
        t.mat(p + "ffn_up.weight", n_ff, N_EMBD)
        t.mat(p + "ffn_down.weight", N_EMBD, n_ff)
        t.f32(p + "post_ffw_norm.weight", norm(p + "post_ffw_norm", N_EMBD))
        t.mat(p + "inp_gate.weight", N_EMBD_PER_LAYER, N_EMBD)
        t.mat(p + "proj.weight", N_EMBD, N_EMBD_PER_LAYER)
        t.f32(p + "post_norm.weight", norm(p + "post_norm", N_EMBD))
        t.f32(p + "layer_output_scale.weight", np.array([0.9], dtype=np.float32))
    t.f32("output_norm.weight", norm("output_norm", N_EMBD))
    return t


def write_text(path: Path, tokenizer: list) -> None:
    n_vocab = len(next(v for k, v, *_ in tokenizer if k == "tokenizer.ggml.tokens"))
    arch = "gemma4"
    w = GGUFWriter(path, arch)
    w.add_type("model")
    w.add_name("tiny-gemma-4-E2B (random weights, test fixture)")
    w.add_file_type(7)  # LLAMA_FTYPE_MOSTLY_Q8_0: the largest tensor is Q8_0
    w.add_quantization_version(2)
    w.add_uint32(f"{arch}.context_length", 131072)
    w.add_uint32(f"{arch}.embedding_length", N_EMBD)
    w.add_uint32(f"{arch}.block_count", N_LAYER)
    w.add_key_value(
        f"{arch}.feed_forward_length",
        [N_FF if i < N_LAYER - N_SHARED_KV else 2 * N_FF for i in range(N_LAYER)],
        GGUFValueType.ARRAY,
        GGUFValueType.INT32,
    )
    w.add_uint32(f"{arch}.attention.head_count", N_HEAD)
    w.add_uint32(f"{arch}.attention.head_count_kv", N_HEAD_KV)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)
    w.add_uint32(f"{arch}.attention.key_length", HEAD_DIM_FULL)
    w.add_uint32(f"{arch}.attention.value_length", HEAD_DIM_FULL)
    w.add_uint32(f"{arch}.attention.key_length_swa", HEAD_DIM_SWA)
    w.add_uint32(f"{arch}.attention.value_length_swa", HEAD_DIM_SWA)
    w.add_uint32(f"{arch}.attention.sliding_window", SLIDING_WINDOW)
    w.add_key_value(f"{arch}.attention.sliding_window_pattern", SWA_PATTERN, GGUFValueType.ARRAY, GGUFValueType.BOOL)
    w.add_uint32(f"{arch}.attention.shared_kv_layers", N_SHARED_KV)
    w.add_uint32(f"{arch}.embedding_length_per_layer_input", N_EMBD_PER_LAYER)
    w.add_float32(f"{arch}.rope.freq_base", 1_000_000.0)
    w.add_float32(f"{arch}.rope.freq_base_swa", 10_000.0)
    w.add_uint32(f"{arch}.rope.dimension_count", HEAD_DIM_FULL)
    w.add_uint32(f"{arch}.rope.dimension_count_swa", HEAD_DIM_SWA)
    w.add_float32(f"{arch}.final_logit_softcapping", 30.0)
    for key, value, vtype, sub in tokenizer:
        w.add_key_value(key, value, vtype, sub)
    text_tensors(n_vocab).write(w)
    _finish(w)


def audio_tensors(t: Tensors) -> None:
    c0, c1 = A_CONV_CH
    d_head = A_EMBD // A_HEAD
    t.f32("a.conv1d.0.weight", normal("a.conv1d.0.weight", (c0, 1, 3, 3), 0.3))
    t.f32("a.conv1d.0.norm.weight", norm("a.conv1d.0.norm", c0))
    t.f32("a.conv1d.1.weight", normal("a.conv1d.1.weight", (c1, c0, 3, 3), 0.3))
    t.f32("a.conv1d.1.norm.weight", norm("a.conv1d.1.norm", c1))
    n_freq = A_N_MEL // 4  # two stride-2 convs over the mel axis
    t.mat("a.input_projection.weight", A_EMBD, c1 * n_freq)
    for i in range(A_LAYER):
        p = f"a.blk.{i}."
        for ffn in ("", "_1"):  # the conformer's two half-step FFNs
            t.f32(p + f"ffn_norm{ffn}.weight", norm(p + f"ffn_norm{ffn}", A_EMBD))
            t.mat(p + f"ffn_up{ffn}.weight", A_FF, A_EMBD)
            t.mat(p + f"ffn_down{ffn}.weight", A_EMBD, A_FF)
            t.f32(p + f"ffn_post_norm{ffn}.weight", norm(p + f"ffn_post_norm{ffn}", A_EMBD))
        t.f32(p + "attn_pre_norm.weight", norm(p + "attn_pre_norm", A_EMBD))
        for proj in ("attn_q", "attn_k", "attn_v", "attn_out"):
            t.mat(p + proj + ".weight", A_EMBD, A_EMBD)
            # Gemma4ClippableLinear bounds, read as F32 scalars beside the weight
            for bound, value in (("input_min", -8.0), ("input_max", 8.0), ("output_min", -8.0), ("output_max", 8.0)):
                t.f32(p + f"{proj}.{bound}", np.array([value], dtype=np.float32))
        t.f32(p + "per_dim_scale.weight", 0.7 + normal(p + "per_dim_scale", (d_head,), 0.02))
        t.f32(p + "per_dim_k_scale.weight", 0.7 + normal(p + "per_dim_k_scale", (d_head,), 0.02))
        t.mat(p + "attn_k_rel.weight", A_EMBD, A_EMBD)
        t.f32(p + "attn_post_norm.weight", norm(p + "attn_post_norm", A_EMBD))
        t.f32(p + "conv_norm.weight", norm(p + "conv_norm", A_EMBD))
        t.mat(p + "conv_pw1.weight", 2 * A_EMBD, A_EMBD)
        t.f32(p + "conv_dw.weight", normal(p + "conv_dw", (A_EMBD, A_DW_KERNEL), 0.2))
        t.f32(p + "norm_conv.weight", norm(p + "norm_conv", A_EMBD))
        t.mat(p + "conv_pw2.weight", A_EMBD, A_EMBD)
        t.f32(p + "ln2.weight", norm(p + "ln2", A_EMBD))
    t.mat("a.pre_encode.out.weight", A_OUT, A_EMBD)
    t.f32("a.pre_encode.out.bias", normal("a.pre_encode.out.bias", (A_OUT,), 0.02))
    t.mat("mm.a.input_projection.weight", N_EMBD, A_OUT)


def vision_tensors(t: Tensors) -> None:
    d_head = V_EMBD // V_HEAD
    t.f16("v.patch_embd.weight", normal("v.patch_embd", (V_EMBD, 3, V_PATCH, V_PATCH), 0.05))
    # Two lookup tables (x and y); F16 instead of the converter's F32 to halve the 10240-row table.
    t.f16("v.position_embd.weight", normal("v.position_embd", (2, V_POS_SIZE, V_EMBD), 0.05))
    for i in range(V_LAYER):
        p = f"v.blk.{i}."
        t.f32(p + "ln1.weight", norm(p + "ln1", V_EMBD))
        for proj in ("attn_q", "attn_k", "attn_v", "attn_out"):
            t.mat(p + proj + ".weight", V_EMBD, V_EMBD)
        t.f32(p + "attn_q_norm.weight", norm(p + "attn_q_norm", d_head))
        t.f32(p + "attn_k_norm.weight", norm(p + "attn_k_norm", d_head))
        t.f32(p + "attn_post_norm.weight", norm(p + "attn_post_norm", V_EMBD))
        t.f32(p + "ln2.weight", norm(p + "ln2", V_EMBD))
        t.mat(p + "ffn_gate.weight", V_FF, V_EMBD)
        t.mat(p + "ffn_up.weight", V_FF, V_EMBD)
        t.mat(p + "ffn_down.weight", V_EMBD, V_FF)
        t.f32(p + "ffn_post_norm.weight", norm(p + "ffn_post_norm", V_EMBD))
        t.f32(p + "out_scale.weight", np.array([0.9], dtype=np.float32))
    t.f32("v.std_bias", np.zeros(V_EMBD, dtype=np.float32))
    t.f32("v.std_scale", np.ones(V_EMBD, dtype=np.float32))
    t.mat("mm.input_projection.weight", N_EMBD, V_EMBD)


def write_mmproj(path: Path) -> None:
    w = GGUFWriter(path, "clip")
    add_mmproj_keys(
        w,
        name="mmproj-tiny-gemma-4-E2B (random weights, test fixture)",
        file_type=1,  # F16, as the audio path wants (quantized mmproj degrades audio)
        text_embd=N_EMBD,
        vision=(V_EMBD, V_FF, V_LAYER, V_HEAD),
        audio=(A_EMBD, A_FF, A_LAYER, A_HEAD),
        patch_size=V_PATCH,
    )
    t = Tensors()
    vision_tensors(t)
    audio_tensors(t)
    t.write(w)
    _finish(w)


def _finish(w: GGUFWriter) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    ap.add_argument(
        "--vocab",
        type=Path,
        help="GGUF holding the Gemma 4 tokenizer (ggml-vocab-gemma-4.gguf); default: the existing fixture in --out",
    )
    args = ap.parse_args(argv)

    vocab = args.vocab or args.out / TEXT_NAME
    if not vocab.is_file():
        sys.exit(
            f"no tokenizer source: {vocab} does not exist. Pass --vocab with the "
            "models/ggml-vocab-gemma-4.gguf from the llama-cpp-python sdist "
            "(pip download --no-binary :all: --no-deps llama-cpp-python==0.3.36)"
        )
    tokenizer = read_tokenizer(vocab)  # fully in memory before the source may be overwritten

    args.out.mkdir(parents=True, exist_ok=True)
    for name, write in ((TEXT_NAME, lambda p: write_text(p, tokenizer)), (MMPROJ_NAME, write_mmproj)):
        final = args.out / name
        tmp = final.with_suffix(".tmp")
        write(tmp)
        os.replace(tmp, final)
        print(f"{final}  {final.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
