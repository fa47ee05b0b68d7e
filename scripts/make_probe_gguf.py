#!/usr/bin/env python3
"""Write the backend-probe model: a ~1 MB random llama-architecture GGUF shipped inside edge-gemma.

`edge/model/backend_probe.py` loads it in a child process to find out whether this CPU really runs
ggml's fragile extra kernels (AMX today). So its weights cover every type those kernels handle
(Q4_0, Q8_0, Q4_K, Q6_K, F16) with shapes they accept (inputs a multiple of 256, outputs of 32),
and the same shapes also suit the CPU_REPACK kernels (outputs a multiple of 8). What it generates is
meaningless by design; only whether the process survives matters.

K-quant blocks are written as raw bytes with small scales: any bit pattern is a valid block, and
gguf-py has no K-quant quantizer. Same seed + numpy/gguf versions -> byte-identical file.

Example:
    python scripts/make_probe_gguf.py            # writes edge/model/backend-probe.gguf
"""

from __future__ import annotations

import argparse
import zlib
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter, TokenType, quants

SEED = 2026_12
OUT = Path(__file__).resolve().parent.parent / "edge" / "model" / "backend-probe.gguf"
N_EMBD, N_FF, N_HEAD, N_LAYER, N_CTX = 256, 256, 4, 2, 256
N_BYTE_TOKENS = 256
N_VOCAB = 3 + N_BYTE_TOKENS + 253  # 512: a multiple of 32, as the AMX output-matmul check wants

# Which weight type each matmul gets: every type the AMX kernels implement appears at least once.
LAYER_TYPES = [
    {
        "attn_q": Q.Q4_0,
        "attn_k": Q.Q4_0,
        "attn_v": Q.Q4_0,
        "attn_output": Q.Q4_0,
        "ffn_gate": Q.Q4_K,
        "ffn_up": Q.Q4_K,
        "ffn_down": Q.Q6_K,
    },
    {
        "attn_q": Q.Q8_0,
        "attn_k": Q.Q8_0,
        "attn_v": Q.Q8_0,
        "attn_output": Q.Q8_0,
        "ffn_gate": Q.F16,
        "ffn_up": Q.F16,
        "ffn_down": Q.Q4_0,
    },
]
# Bytes per 256-value block: Q4_K = d, dmin (f16) + 12 scale bytes + 128 nibble bytes;
# Q6_K = 128 low + 64 high bit bytes + 16 int8 scales + d (f16).
K_BLOCK_BYTES = {Q.Q4_K: 144, Q.Q6_K: 210}


def rng_for(name: str) -> np.random.Generator:
    return np.random.default_rng([SEED, zlib.crc32(name.encode())])


def k_quant_bytes(name: str, qtype: Q, n_out: int, n_in: int) -> np.ndarray:
    """Random K-quant blocks whose f16 scale fields are small, so activations stay finite."""
    rng = rng_for(name)
    blocks = rng.integers(0, 256, size=(n_out, n_in // 256, K_BLOCK_BYTES[qtype]), dtype=np.uint8)
    scale = np.frombuffer(np.float16(0.002).tobytes(), dtype=np.uint8)
    if qtype == Q.Q4_K:
        blocks[..., 0:2] = scale  # d
        blocks[..., 2:4] = scale  # dmin
    else:
        blocks[..., 208:210] = scale  # d is the last field of a Q6_K block
    return blocks.reshape(n_out, -1)


def weight(name: str, qtype: Q, n_out: int, n_in: int) -> tuple[np.ndarray, Q | None]:
    if qtype in K_BLOCK_BYTES:
        return k_quant_bytes(name, qtype, n_out, n_in), qtype
    values = (rng_for(name).standard_normal((n_out, n_in)) * 0.05).astype(np.float32)
    if qtype == Q.F16:
        return values.astype(np.float16), None
    return quants.quantize(values, qtype), qtype


def add_vocab(writer: GGUFWriter) -> None:
    """A byte-fallback SentencePiece vocab: enough for llama.cpp to load; the probe feeds token ids."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(N_BYTE_TOKENS)]
    tokens += [f"\u2581t{i}" for i in range(N_VOCAB - len(tokens))]
    types = (
        [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL]
        + [TokenType.BYTE] * N_BYTE_TOKENS
        + [TokenType.NORMAL] * (N_VOCAB - 3 - N_BYTE_TOKENS)
    )
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * N_VOCAB)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)


def write(path: Path) -> None:
    writer = GGUFWriter(str(path), "llama")
    writer.add_name("edge-gemma backend probe")
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(2)  # mostly Q4_0
    add_vocab(writer)

    def add(name: str, data: np.ndarray, raw: Q | None = None) -> None:
        writer.add_tensor(name, data, raw_dtype=raw)

    add("token_embd.weight", *weight("token_embd.weight", Q.Q8_0, N_VOCAB, N_EMBD))
    for layer, types in enumerate(LAYER_TYPES):
        add(f"blk.{layer}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        add(f"blk.{layer}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        for part, qtype in types.items():
            n_out, n_in = (
                (N_EMBD, N_FF)
                if part == "ffn_down"
                else ((N_FF, N_EMBD) if part.startswith("ffn") else (N_EMBD, N_EMBD))
            )
            name = f"blk.{layer}.{part}.weight"
            add(name, *weight(name, qtype, n_out, n_in))
    add("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    add("output.weight", *weight("output.weight", Q.Q6_K, N_VOCAB, N_EMBD))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
