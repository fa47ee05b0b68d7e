"""Gemma 4 files with random weights, for tests and measurements: what both model makers share.

scripts/make_tiny_gemma4.py writes the tiny fixture (tests/fixtures/gemma4-tiny) and
scripts/make_fullsize_gemma4.py full-size E2B/E4B shapes; scripts/fullsize_report.py measures them.
The shapes, file names and GGUF keys live here so the scripts import the package, not each other.
Writing needs the dev extra's `gguf` package (imported only where a file is read or written).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edge.errors import ModelFileError

REPO = Path(__file__).resolve().parents[2]  # a source checkout: the fixtures are not installed
TINY_DIR = REPO / "tests" / "fixtures" / "gemma4-tiny"
TINY_TEXT_NAME = "tiny-gemma-4-E2B.gguf"
TINY_MMPROJ_NAME = "mmproj-tiny-gemma-4-E2B.gguf"
FULLSIZE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edge-gemma" / "fullsize"
FTYPES = {"Q4_0": 2, "Q4_K_M": 15}  # llama_ftype values (LLAMA_FTYPE_MOSTLY_*)
N_MEL = 128  # the audio encoder's mel bins


@dataclass(frozen=True)
class Encoders:
    """The mmproj's audio conformer and vision tower. Same for E2B and E4B: only the projections
    into the text model differ (the published Q8_0 files differ by exactly those bytes)."""

    a_embd: int = 1024
    a_layer: int = 12
    a_head: int = 8
    a_conv_ch: tuple[int, int] = (128, 32)
    a_out: int = 1536
    a_dw_kernel: int = 5
    v_embd: int = 768
    v_layer: int = 16
    v_head: int = 12
    v_ff: int = 3072
    v_patch: int = 16
    v_pos: int = 10240


@dataclass(frozen=True)
class Shape:
    """One Gemma 4 size, in the HF config's terms (FACTS.md; google/gemma-4-E*B-it config.json)."""

    name: str
    n_embd: int
    n_layer: int
    swa_period: int  # (period - 1) sliding layers, then one global
    n_shared_kv: int
    n_head: int
    n_head_kv: int
    n_ff: int
    double_wide: bool  # KV-shared layers have a 2x FFN (use_double_wide_mlp)
    n_embd_per_layer: int = 256
    head_dim_swa: int = 256
    head_dim_full: int = 512
    encoders: Encoders = Encoders()
    published: tuple[tuple[str, int], ...] = ()  # (file kind, bytes) of the real files

    def swa(self, i: int) -> bool:
        return (i + 1) % self.swa_period != 0

    def has_kv(self, i: int) -> bool:
        return i < self.n_layer - self.n_shared_kv

    def ff(self, i: int) -> int:
        return self.n_ff * 2 if self.double_wide and not self.has_kv(i) else self.n_ff


SHAPES = {
    "e2b": Shape(
        "E2B",
        n_embd=1536,
        n_layer=35,
        swa_period=5,
        n_shared_kv=20,
        n_head=8,
        n_head_kv=1,
        n_ff=6144,
        double_wide=True,
        published=(("Q4_0", 2_841_481_184), ("mmproj-Q8_0", 557_367_776), ("mmproj-F16", 985_654_080)),
    ),
    "e4b": Shape(
        "E4B",
        n_embd=2560,
        n_layer=42,
        swa_period=6,
        n_shared_kv=18,
        n_head=8,
        n_head_kv=2,
        n_ff=10240,
        double_wide=False,
        published=(("Q4_0", 4_590_807_392), ("Q4_K_M", 5_335_289_824), ("mmproj-Q8_0", 559_874_528)),
    ),
    # A shrunken configuration for the test of this script: real structure, toy widths.
    "test": Shape(
        "test",
        n_embd=64,
        n_layer=4,
        swa_period=2,
        n_shared_kv=2,
        n_head=2,
        n_head_kv=1,
        n_ff=128,
        double_wide=True,
        n_embd_per_layer=8,
        head_dim_swa=32,
        head_dim_full=64,
        encoders=Encoders(
            a_embd=64,
            a_layer=1,
            a_head=2,
            a_conv_ch=(8, 4),
            a_out=64,
            v_embd=64,
            v_layer=1,
            v_head=2,
            v_ff=128,
            v_pos=1024,
        ),
    ),
}


def file_names(s: Shape) -> dict[str, str]:
    base = f"gemma-4-{s.name}-shaped"
    return {
        "F16": f"{base}-F16.gguf",
        **{q: f"{base}-{q}.gguf" for q in FTYPES},
        "mmproj-F16": f"mmproj-{base}-F16.gguf",
        "mmproj-Q8_0": f"mmproj-{base}-Q8_0.gguf",
    }


def read_tokenizer(path: Path) -> list[tuple]:
    """Copy every tokenizer.* key exactly (strings as raw bytes), in file order: (key, value, type, item type)."""
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(path)
    out = []
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        if vtype == GGUFValueType.ARRAY:
            sub = field.types[-1]
            if sub == GGUFValueType.STRING:
                value = [bytes(field.parts[i]) for i in field.data]
            else:
                value = field.contents()
            out.append((key, value, vtype, sub))
        elif vtype == GGUFValueType.STRING:
            out.append((key, bytes(field.parts[field.data[0]]), vtype, None))
        else:
            out.append((key, field.contents(), vtype, None))
    if not any(k == "tokenizer.chat_template" for k, *_ in out):
        raise ModelFileError(f"{path} has no tokenizer.chat_template: not a Gemma 4 vocab file")
    return out


def add_mmproj_keys(
    w,
    *,
    name: str,
    file_type: int,
    text_embd: int,
    vision: tuple[int, int, int, int],
    audio: tuple[int, int, int, int],
    patch_size: int,
) -> None:
    """The clip.* metadata of a Gemma 4 audio+vision mmproj; `vision` and `audio` are (embedding,
    feed-forward, blocks, heads). `w` is a gguf.GGUFWriter."""
    from gguf import GGUFValueType

    w.add_type("mmproj")
    w.add_name(name)
    w.add_file_type(file_type)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_audio_encoder", True)
    w.add_string("clip.vision.projector_type", "gemma4v")
    w.add_string("clip.audio.projector_type", "gemma4a")
    w.add_bool("clip.use_gelu", True)
    for prefix, (n_embd, n_ff, n_layer, n_head) in (("vision", vision), ("audio", audio)):
        w.add_uint32(f"clip.{prefix}.embedding_length", n_embd)
        w.add_uint32(f"clip.{prefix}.feed_forward_length", n_ff)
        w.add_uint32(f"clip.{prefix}.block_count", n_layer)
        w.add_uint32(f"clip.{prefix}.attention.head_count", n_head)
        w.add_uint32(f"clip.{prefix}.projection_dim", text_embd)
        w.add_float32(f"clip.{prefix}.attention.layer_norm_epsilon", 1e-6)
    w.add_uint32("clip.vision.image_size", 224)  # unused by gemma4v's dynamic resize
    w.add_uint32("clip.vision.patch_size", patch_size)
    w.add_key_value("clip.vision.image_mean", [0.0, 0.0, 0.0], GGUFValueType.ARRAY, GGUFValueType.FLOAT32)
    w.add_key_value("clip.vision.image_std", [1.0, 1.0, 1.0], GGUFValueType.ARRAY, GGUFValueType.FLOAT32)
    w.add_uint32("clip.audio.num_mel_bins", N_MEL)
