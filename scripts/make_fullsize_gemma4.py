#!/usr/bin/env python3
"""Write E2B- and E4B-shaped Gemma 4 GGUFs with random weights, to measure speed and memory at real size.

Speed and memory depend on tensor shapes and types, not on what the weights say. The real files cannot
be fetched here, so this writes the same shapes (every dimension, the layer pattern, the KV-shared
layers, the full per-layer-embedding table, the real Gemma 4 tokenizer) with seeded random weights:

1. an F16 text GGUF, tensor by tensor (the 4.7 GB PLE table in row chunks), so it fits any memory;
2. Q4_0 and Q4_K_M from it with llama.cpp's own quantizer (llama_model_quantize), which picks the
   per-tensor types exactly as llama-quantize does for the published files; the F16 is then removed;
3. a full-size audio+vision mmproj in F16 and Q8_0 (conv weights and the position table stay F32,
   as llama.cpp's converter writes them).

`--check` reads the files back, compares every tensor shape with the configuration and each file's
size with the published one (FACTS.md). The files are never committed: they go to a cache directory.

Examples:
    python scripts/make_fullsize_gemma4.py --model e2b            # ~3.5 GB of quants + mmproj
    python scripts/make_fullsize_gemma4.py --model e4b --quants Q4_0
    python scripts/make_fullsize_gemma4.py --model e2b --check
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import os
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, quants

from edge.model.synthetic import (
    FTYPES,
    SHAPES,
    TINY_DIR,
    Shape,
    add_mmproj_keys,
    file_names,
    read_tokenizer,
)
from edge.model.synthetic import FULLSIZE_DIR as DEFAULT_OUT
from edge.model.synthetic import TINY_TEXT_NAME as TINY_TEXT

SEED = 5_2026
CHUNK_ELEMENTS = 1 << 25  # 32 M values (128 MB of float32) per random draw keeps memory flat
# The two embedding tables' types in the published files. llama-quantize's defaults give both Q6_K,
# 0.5 GB more than ggml-org's E2B Q4_0; these reproduce the published sizes (FACTS.md: E4B Q4_K_M's
# PLE table is 1.94 GB, which is Q5_K). ggml type ids: Q4_0 2, Q8_0 8, Q5_K 13, Q6_K 14.
EMBEDDING_TYPES = {"Q4_0": {"token_embd": 8, "per_layer_token_embd": 2}, "Q4_K_M": {"per_layer_token_embd": 13}}


@dataclass(frozen=True)
class TensorSpec:
    """A tensor to write: numpy-order shape, stored type, and how its random values are drawn."""

    name: str
    shape: tuple[int, ...]
    dtype: type = np.float16
    std: float = 0.02
    mean: float = 0.0  # 1.0 for norm gains: near-identity keeps activations sane through random layers

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


def f32(name: str, *shape: int, mean: float = 1.0, std: float = 0.02) -> TensorSpec:
    return TensorSpec(name, shape, np.float32, std, mean)


def f16(name: str, *shape: int, std: float = 0.02) -> TensorSpec:
    return TensorSpec(name, shape, np.float16, std)


def text_specs(s: Shape, n_vocab: int) -> list[TensorSpec]:
    """The tensors llama.cpp's gemma4 loader reads, in the names and order of the tiny fixture."""
    out = [
        f16("token_embd.weight", n_vocab, s.n_embd, std=0.5),
        f16("per_layer_token_embd.weight", n_vocab, s.n_layer * s.n_embd_per_layer, std=0.5),
        f16("per_layer_model_proj.weight", s.n_layer * s.n_embd_per_layer, s.n_embd),
        f32("per_layer_proj_norm.weight", s.n_embd_per_layer),
        f32("rope_freqs.weight", s.head_dim_full // 2, mean=1.0, std=0.0),  # replaced by the real factors
    ]
    for i in range(s.n_layer):
        p, hd, n_ff = f"blk.{i}.", s.head_dim_swa if s.swa(i) else s.head_dim_full, s.ff(i)
        out += [f32(p + "attn_norm.weight", s.n_embd), f16(p + "attn_q.weight", s.n_head * hd, s.n_embd)]
        if s.has_kv(i):  # KV-shared layers read an earlier layer's cache: no K/V of their own
            out += [
                f16(p + "attn_k.weight", s.n_head_kv * hd, s.n_embd),
                f16(p + "attn_v.weight", s.n_head_kv * hd, s.n_embd),
            ]
        out += [f16(p + "attn_output.weight", s.n_embd, s.n_head * hd), f32(p + "attn_q_norm.weight", hd)]
        if s.has_kv(i):
            out.append(f32(p + "attn_k_norm.weight", hd))
        out += [
            f32(p + "post_attention_norm.weight", s.n_embd),
            f32(p + "ffn_norm.weight", s.n_embd),
            f16(p + "ffn_gate.weight", n_ff, s.n_embd),
            f16(p + "ffn_up.weight", n_ff, s.n_embd),
            f16(p + "ffn_down.weight", s.n_embd, n_ff),
            f32(p + "post_ffw_norm.weight", s.n_embd),
            f16(p + "inp_gate.weight", s.n_embd_per_layer, s.n_embd),
            f16(p + "proj.weight", s.n_embd, s.n_embd_per_layer),
            f32(p + "post_norm.weight", s.n_embd),
            f32(p + "layer_output_scale.weight", 1, mean=0.9, std=0.0),
        ]
    return out + [f32("output_norm.weight", s.n_embd)]


def clippable(p: str, proj: str, n: int) -> list[TensorSpec]:
    """Gemma4ClippableLinear: an n x n weight plus four F32 scalar bounds."""
    bounds = (("input_min", -8), ("input_max", 8), ("output_min", -8), ("output_max", 8))
    return [f16(f"{p}{proj}.weight", n, n)] + [f32(f"{p}{proj}.{b}", 1, mean=m, std=0.0) for b, m in bounds]


def mmproj_specs(s: Shape) -> list[TensorSpec]:
    e = s.encoders
    c0, c1 = e.a_conv_ch
    a_ff, a_dh, v_dh = 4 * e.a_embd, e.a_embd // e.a_head, e.v_embd // e.v_head
    out = [
        f16("v.patch_embd.weight", e.v_embd, 3, e.v_patch, e.v_patch),
        TensorSpec("v.position_embd.weight", (2, e.v_pos, e.v_embd), np.float32, 0.02),  # the converter keeps F32
    ]
    for i in range(e.v_layer):
        p = f"v.blk.{i}."
        out.append(f32(p + "ln1.weight", e.v_embd))
        out += [f16(p + proj + ".weight", e.v_embd, e.v_embd) for proj in ("attn_q", "attn_k", "attn_v", "attn_out")]
        out += [
            f32(p + "attn_q_norm.weight", v_dh),
            f32(p + "attn_k_norm.weight", v_dh),
            f32(p + "attn_post_norm.weight", e.v_embd),
            f32(p + "ln2.weight", e.v_embd),
            f16(p + "ffn_gate.weight", e.v_ff, e.v_embd),
            f16(p + "ffn_up.weight", e.v_ff, e.v_embd),
            f16(p + "ffn_down.weight", e.v_embd, e.v_ff),
            f32(p + "ffn_post_norm.weight", e.v_embd),
            f32(p + "out_scale.weight", 1, mean=0.9, std=0.0),
        ]
    out += [
        f32("v.std_bias", e.v_embd, mean=0.0, std=0.0),
        f32("v.std_scale", e.v_embd, std=0.0),
        f16("mm.input_projection.weight", s.n_embd, e.v_embd),
        f32("a.conv1d.0.weight", c0, 1, 3, 3, mean=0.0, std=0.3),  # conv weights stay F32 (converter rule)
        f32("a.conv1d.0.norm.weight", c0),
        f32("a.conv1d.1.weight", c1, c0, 3, 3, mean=0.0, std=0.05),
        f32("a.conv1d.1.norm.weight", c1),
        f16("a.input_projection.weight", e.a_embd, c1 * 128 // 4),  # 128 mel bins, two stride-2 convs
    ]
    for i in range(e.a_layer):
        p = f"a.blk.{i}."
        for ffn in ("", "_1"):  # the conformer's two half-step FFNs
            out += [
                f32(p + f"ffn_norm{ffn}.weight", e.a_embd),
                f16(p + f"ffn_up{ffn}.weight", a_ff, e.a_embd),
                f16(p + f"ffn_down{ffn}.weight", e.a_embd, a_ff),
                f32(p + f"ffn_post_norm{ffn}.weight", e.a_embd),
            ]
        out.append(f32(p + "attn_pre_norm.weight", e.a_embd))
        for proj in ("attn_q", "attn_k", "attn_v", "attn_out"):
            out += clippable(p, proj, e.a_embd)
        out += [
            f32(p + "per_dim_scale.weight", a_dh, mean=0.7),
            f32(p + "per_dim_k_scale.weight", a_dh, mean=0.7),
            f16(p + "attn_k_rel.weight", e.a_embd, e.a_embd),
            f32(p + "attn_post_norm.weight", e.a_embd),
            f32(p + "conv_norm.weight", e.a_embd),
            f16(p + "conv_pw1.weight", 2 * e.a_embd, e.a_embd),
            f32(p + "conv_dw.weight", e.a_embd, e.a_dw_kernel, mean=0.0, std=0.2),
            f32(p + "norm_conv.weight", e.a_embd),
            f16(p + "conv_pw2.weight", e.a_embd, e.a_embd),
            f32(p + "ln2.weight", e.a_embd),
        ]
    return out + [
        f16("a.pre_encode.out.weight", e.a_out, e.a_embd),
        f32("a.pre_encode.out.bias", e.a_out, mean=0.0),
        f16("mm.a.input_projection.weight", s.n_embd, e.a_out),
    ]


def random_chunks(spec: TensorSpec, shape: Shape) -> Iterator[np.ndarray]:
    """The tensor's values in row chunks of at most CHUNK_ELEMENTS, one seeded stream per tensor."""
    if spec.name == "rope_freqs.weight":  # global layers rotate a quarter of the head; 1e30 leaves the rest
        n_rot = shape.head_dim_full // 8
        yield np.array([1.0] * n_rot + [1e30] * (shape.head_dim_full // 2 - n_rot), dtype=np.float32)
        return
    rng = np.random.default_rng([SEED, zlib.crc32(spec.name.encode())])
    row = int(np.prod(spec.shape[1:])) if len(spec.shape) > 1 else int(spec.shape[0])
    rows = spec.shape[0] if len(spec.shape) > 1 else 1
    step = max(1, CHUNK_ELEMENTS // row)
    for start in range(0, rows, step):
        n = min(step, rows - start) * row
        values = rng.standard_normal(n, dtype=np.float32) * spec.std + spec.mean
        yield values.astype(spec.dtype, copy=False)


def write_gguf(path: Path, arch: str, metadata, specs: list[TensorSpec], shape: Shape, q8: bool = False) -> None:
    """Stream `specs` into a GGUF, one chunk at a time. With q8, 2D F16 matrices become Q8_0."""

    def stored(spec: TensorSpec) -> tuple[GGMLQuantizationType, int]:
        if q8 and spec.dtype is np.float16 and len(spec.shape) == 2 and spec.shape[-1] % 32 == 0:
            return GGMLQuantizationType.Q8_0, int(np.prod(spec.shape)) // 32 * 34
        return (GGMLQuantizationType.F16 if spec.dtype is np.float16 else GGMLQuantizationType.F32), spec.nbytes

    tmp = path.with_suffix(".tmp")
    w = GGUFWriter(tmp, arch)
    metadata(w)
    for spec in specs:
        qtype, nbytes = stored(spec)
        if qtype == GGMLQuantizationType.Q8_0:
            w.add_tensor_info(
                spec.name, (*spec.shape[:-1], spec.shape[-1] // 32 * 34), np.dtype(np.uint8), nbytes, qtype
            )
        else:
            w.add_tensor_info(spec.name, spec.shape, np.dtype(spec.dtype), nbytes)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    fout = w.fout[0]
    for spec in specs:
        qtype, nbytes = stored(spec)
        w.write_padding(fout, fout.tell())
        for chunk in random_chunks(spec, shape):
            if qtype == GGMLQuantizationType.Q8_0:
                chunk = quants.quantize(chunk.reshape(-1, spec.shape[-1]).astype(np.float32), qtype)
            chunk.tofile(fout)
        w.write_padding(fout, nbytes)
    w.close()
    os.replace(tmp, path)


def text_metadata(s: Shape, tokenizer: list):
    def add(w: GGUFWriter) -> None:
        a = "gemma4"
        w.add_type("model")
        w.add_name(f"gemma-4-{s.name}-shaped (random weights, for speed and memory only)")
        w.add_file_type(1)  # F16 before quantization
        w.add_uint32(f"{a}.context_length", 131072)
        w.add_uint32(f"{a}.embedding_length", s.n_embd)
        w.add_uint32(f"{a}.block_count", s.n_layer)
        ffs = [s.ff(i) for i in range(s.n_layer)]
        w.add_key_value(f"{a}.feed_forward_length", ffs, GGUFValueType.ARRAY, GGUFValueType.INT32)
        w.add_uint32(f"{a}.attention.head_count", s.n_head)
        w.add_uint32(f"{a}.attention.head_count_kv", s.n_head_kv)
        w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", 1e-6)
        for suffix, dim in (("", s.head_dim_full), ("_swa", s.head_dim_swa)):
            w.add_uint32(f"{a}.attention.key_length{suffix}", dim)
            w.add_uint32(f"{a}.attention.value_length{suffix}", dim)
            w.add_uint32(f"{a}.rope.dimension_count{suffix}", dim)
        w.add_uint32(f"{a}.attention.sliding_window", 512)
        pattern = [s.swa(i) for i in range(s.n_layer)]
        w.add_key_value(f"{a}.attention.sliding_window_pattern", pattern, GGUFValueType.ARRAY, GGUFValueType.BOOL)
        w.add_uint32(f"{a}.attention.shared_kv_layers", s.n_shared_kv)
        w.add_uint32(f"{a}.embedding_length_per_layer_input", s.n_embd_per_layer)
        w.add_float32(f"{a}.rope.freq_base", 1_000_000.0)
        w.add_float32(f"{a}.rope.freq_base_swa", 10_000.0)
        w.add_float32(f"{a}.final_logit_softcapping", 30.0)
        for key, value, vtype, sub in tokenizer:
            w.add_key_value(key, value, vtype, sub)

    return add


def mmproj_metadata(s: Shape, file_type: int):
    def add(w: GGUFWriter) -> None:
        e = s.encoders
        add_mmproj_keys(
            w,
            name=f"mmproj-gemma-4-{s.name}-shaped (random weights)",
            file_type=file_type,
            text_embd=s.n_embd,
            vision=(e.v_embd, e.v_ff, e.v_layer, e.v_head),
            audio=(e.a_embd, 4 * e.a_embd, e.a_layer, e.a_head),
            patch_size=e.v_patch,
        )

    return add


@functools.cache
def gemma4_tokenizer() -> tuple[list, int]:
    """The real Gemma 4 tokenizer and chat template (from the tiny fixture), and its vocabulary size."""
    tokenizer = read_tokenizer(TINY_DIR / TINY_TEXT)
    return tokenizer, len(next(v for k, v, *_ in tokenizer if k == "tokenizer.ggml.tokens"))


def quantize(src: Path, dst: Path, quant: str, threads: int) -> None:
    """llama.cpp's own quantizer (llama-quantize's rules) with the published files' embedding types."""
    import llama_cpp  # only here: --check and the writers need no llama.cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = threads
    params.ftype = FTYPES[quant]
    types = EMBEDDING_TYPES[quant]
    if "token_embd" in types:
        params.token_embedding_type = types["token_embd"]
    override = llama_cpp.llama_model_tensor_override
    table = (override * 2)(
        override(rb"^per_layer_token_embd\.weight$", types["per_layer_token_embd"]), override(None, 0)
    )
    params.tt_overrides = ctypes.cast(table, ctypes.POINTER(override))
    tmp = dst.with_suffix(".tmp")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
    if rc != 0:
        sys.exit(f"llama_model_quantize({src.name} -> {dst.name}) failed with {rc}")
    os.replace(tmp, dst)


def build(s: Shape, out: Path, wanted: list[str], threads: int, keep_f16: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    names = file_names(s)
    tokenizer, n_vocab = gemma4_tokenizer()
    f16_path = out / names["F16"]
    todo = [q for q in wanted if not (out / names[q]).exists()]
    if todo and not f16_path.exists():
        _timed(
            f"write {f16_path.name}",
            lambda: write_gguf(f16_path, "gemma4", text_metadata(s, tokenizer), text_specs(s, n_vocab), s),
        )
    for q in todo:
        _timed(f"quantize {names[q]}", lambda q=q: quantize(f16_path, out / names[q], q, threads))
    if not keep_f16 and f16_path.exists():
        f16_path.unlink()
    for kind, q8, ftype in (("mmproj-F16", False, 1), ("mmproj-Q8_0", True, 7)):
        path = out / names[kind]
        if not path.exists():
            _timed(
                f"write {path.name}",
                lambda path=path, q8=q8, ft=ftype: write_gguf(
                    path, "clip", mmproj_metadata(s, ft), mmproj_specs(s), s, q8=q8
                ),
            )


def _timed(what: str, step) -> None:
    start = time.perf_counter()
    step()
    print(f"{what}: {time.perf_counter() - start:.0f} s", flush=True)


def check(s: Shape, out: Path) -> bool:
    """Every tensor's shape as configured; sizes beside the published files. True when all shapes match."""
    names = file_names(s)
    _, n_vocab = gemma4_tokenizer()
    published = dict(s.published)
    expected = {"text": text_specs(s, n_vocab), "mmproj": mmproj_specs(s)}
    ok = True
    for kind, name in names.items():
        path = out / name
        if not path.exists():
            continue
        specs = expected["mmproj" if kind.startswith("mmproj") else "text"]
        reader = GGUFReader(path)
        got = {t.name: tuple(int(d) for d in reversed(t.shape)) for t in reader.tensors}
        want = {sp.name: sp.shape for sp in specs}
        wrong = sorted(n for n in want.keys() | got.keys() if got.get(n) != want.get(n))
        ok &= not wrong
        size = path.stat().st_size
        line = f"{name}: {len(got)} tensors, {'shapes OK' if not wrong else f'{len(wrong)} WRONG: {wrong[:3]}'}"
        line += f", {size:,} bytes"
        if kind in published:
            line += f" vs published {published[kind]:,} ({(size / published[kind] - 1) * 100:+.1f}%)"
        print(line)
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=sorted(SHAPES), default="e2b")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    ap.add_argument("--quants", default="Q4_0,Q4_K_M", help="text quants to make (Q4_0, Q4_K_M)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="quantizer threads")
    ap.add_argument("--keep-f16", action="store_true", help="keep the F16 text file after quantizing")
    ap.add_argument("--check", action="store_true", help="only compare existing files with the configuration")
    args = ap.parse_args(argv)
    shape = SHAPES[args.model]
    wanted = [q.strip() for q in args.quants.split(",") if q.strip()]
    if unknown := [q for q in wanted if q not in FTYPES]:
        sys.exit(f"unknown quant {unknown[0]}; choose from {', '.join(FTYPES)}")
    if not args.check:
        build(shape, args.out, wanted, args.threads, args.keep_f16)
    return 0 if check(shape, args.out) else 1


if __name__ == "__main__":
    raise SystemExit(main())
