"""Read and check a GGUF file's header in pure Python, before llama.cpp ever touches it.

llama.cpp aborts the whole process on some malformed files, so every model path goes through
`inspect_gguf` first: magic, version, metadata, tensor table, and that the tensor data the table
promises is really in the file (a truncated download fails here, not inside C++).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, BinaryIO

from edge.errors import ModelFileError

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# ggml type id -> (elements per block, bytes per block); from gguf-py's GGML_QUANT_SIZES.
GGML_BLOCK_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4),
    1: (1, 2),
    2: (32, 18),
    3: (32, 20),
    6: (32, 22),
    7: (32, 24),
    8: (32, 34),
    9: (32, 36),
    10: (256, 84),
    11: (256, 110),
    12: (256, 144),
    13: (256, 176),
    14: (256, 210),
    15: (256, 292),
    16: (256, 66),
    17: (256, 74),
    18: (256, 98),
    19: (256, 50),
    20: (32, 18),
    21: (256, 110),
    22: (256, 82),
    23: (256, 136),
    24: (1, 1),
    25: (1, 2),
    26: (1, 4),
    27: (1, 8),
    28: (1, 8),
    29: (256, 56),
    30: (1, 2),
    34: (256, 54),
    35: (256, 66),
    39: (32, 17),
    40: (64, 36),
    41: (128, 18),
    42: (64, 18),
}

# GGUF metadata value types: id -> struct format (scalars); 8 = string, 9 = array.
_SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# Arrays we never need the contents of (the vocabulary) are skipped, not decoded, for speed.
_SKIPPED_ARRAY_KEYS = (
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.scores",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
)
# Sanity caps so a corrupt header cannot make us allocate gigabytes.
_MAX_STRING = 64 * 1024 * 1024
_MAX_COUNT = 1 << 32


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # relative to the start of the data section

    @property
    def n_bytes(self) -> int:
        block, size = GGML_BLOCK_SIZES[self.ggml_type]
        n = 1
        for dim in self.shape:
            n *= dim
        return n // block * size


@dataclass(frozen=True)
class GGUFInfo:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: tuple[TensorInfo, ...]
    data_offset: int
    file_size: int
    skipped_keys: frozenset[str] = field(default_factory=frozenset)

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    @property
    def name(self) -> str:
        return str(self.metadata.get("general.name", self.path.stem))

    @property
    def chat_template(self) -> str | None:
        return self.metadata.get("tokenizer.chat_template")

    @property
    def is_projector(self) -> bool:
        return self.architecture == "clip"

    def arch_value(self, key: str, default: Any = None) -> Any:
        """Metadata under the architecture's prefix, e.g. arch_value('context_length')."""
        return self.metadata.get(f"{self.architecture}.{key}", default)

    @property
    def n_ctx_train(self) -> int:
        """The context the model was trained for (0: the file does not say)."""
        return int(self.arch_value("context_length", 0) or 0)

    def usable_ctx(self, requested: int) -> int:
        """`requested`, capped at the trained context: more positions than that are never allocated."""
        return min(requested, self.n_ctx_train) if self.n_ctx_train else requested

    @property
    def is_gemma(self) -> bool:
        return self.architecture.startswith("gemma")


def supported_architectures() -> frozenset[str]:
    text = files("edge").joinpath("llama_archs.txt").read_text()
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


class _Reader:
    def __init__(self, fh: BinaryIO, path: Path):
        self.fh, self.path = fh, path

    def take(self, n: int) -> bytes:
        data = self.fh.read(n)
        if len(data) != n:
            raise ModelFileError(f"{self.path}: the GGUF header is cut short (truncated file?); download it again")
        return data

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.unpack("<Q")
        if n > _MAX_STRING:
            raise ModelFileError(f"{self.path}: corrupt GGUF header (string of {n} bytes); download the file again")
        return self.take(n).decode("utf-8", errors="replace")

    def value(self, vtype: int, skip: bool = False) -> Any:
        if vtype in _SCALAR_FORMATS:
            return self.unpack(_SCALAR_FORMATS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            item_type, count = self.unpack("<I"), self.unpack("<Q")
            if count > _MAX_COUNT:
                raise ModelFileError(
                    f"{self.path}: corrupt GGUF header (array of {count} items); download the file again"
                )
            if skip and item_type in _SCALAR_FORMATS:
                self.fh.seek(count * struct.calcsize(_SCALAR_FORMATS[item_type]), 1)
                return None
            items = [self.value(item_type, skip) for _ in range(count)]
            return None if skip else items
        raise ModelFileError(
            f"{self.path}: unknown GGUF value type {vtype} (corrupt or newer format); "
            "download the file again or upgrade edge-gemma"
        )


def inspect_gguf(path: str | Path) -> GGUFInfo:
    """Parse the header and tensor table; raise ModelFileError with what to do if anything is off."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}; check the path or run `edge-gemma setup`")
    if not path.is_file():
        raise ModelFileError(f"{path} is not a file; pass the path of a .gguf file")
    file_size = path.stat().st_size
    if file_size == 0:
        raise ModelFileError(f"{path} is empty (0 bytes); download it again")
    try:
        with path.open("rb") as fh:
            return _parse(_Reader(fh, path), file_size)
    except PermissionError as exc:
        raise ModelFileError(f"cannot read {path}: permission denied; fix its permissions") from exc


def _parse(reader: _Reader, file_size: int) -> GGUFInfo:
    path = reader.path
    if reader.fh.read(4) != GGUF_MAGIC:
        raise ModelFileError(
            f"{path} is not a GGUF file; edge-gemma runs llama.cpp GGUF models "
            "(convert with llama.cpp's convert_hf_to_gguf.py or download a .gguf)"
        )
    version = reader.unpack("<I")
    if version not in (2, 3):
        raise ModelFileError(f"{path}: GGUF version {version} is not supported (2 or 3 expected)")
    n_tensors, n_kv = reader.unpack("<Q"), reader.unpack("<Q")
    if n_tensors > _MAX_COUNT or n_kv > _MAX_COUNT:
        raise ModelFileError(f"{path}: corrupt GGUF header; download the file again")

    metadata: dict[str, Any] = {}
    skipped: set[str] = set()
    for _ in range(n_kv):
        key = reader.string()
        skip = key in _SKIPPED_ARRAY_KEYS
        value = reader.value(reader.unpack("<I"), skip=skip)
        if skip:
            skipped.add(key)
        else:
            metadata[key] = value

    tensors = []
    for _ in range(n_tensors):
        name = reader.string()
        n_dims = reader.unpack("<I")
        if n_dims > 8:
            raise ModelFileError(f"{path}: corrupt tensor table ({name}); download the file again")
        shape = tuple(reader.unpack("<Q") for _ in range(n_dims))
        ggml_type, offset = reader.unpack("<I"), reader.unpack("<Q")
        if ggml_type not in GGML_BLOCK_SIZES:
            raise ModelFileError(
                f"{path}: tensor {name} has unknown type {ggml_type}; this llama.cpp build cannot load it"
            )
        tensors.append(TensorInfo(name, shape, ggml_type, offset))

    alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))
    data_offset = -(-reader.fh.tell() // alignment) * alignment
    info = GGUFInfo(path, version, metadata, tuple(tensors), data_offset, file_size, frozenset(skipped))
    _check_data_present(info)
    return info


def _check_data_present(info: GGUFInfo) -> None:
    """The largest tensor end must lie inside the file: catches truncated downloads."""
    needed = max((info.data_offset + t.offset + t.n_bytes for t in info.tensors), default=info.data_offset)
    if needed > info.file_size:
        missing_mb = (needed - info.file_size) / 1e6
        raise ModelFileError(
            f"{info.path} is truncated: {info.file_size:,} bytes but its tensors need "
            f"{needed:,} ({missing_mb:,.1f} MB missing); download it again"
        )


def check_loadable_model(path: str | Path) -> GGUFInfo:
    """A GGUF that this llama.cpp build can load as a language model, or a clear ModelFileError."""
    info = inspect_gguf(path)
    arch = info.architecture
    if not arch:
        raise ModelFileError(f"{info.path} has no general.architecture; it is not a model GGUF")
    if info.is_projector:
        raise ModelFileError(
            f"{info.path} is a multimodal projector (mmproj), not a language model; "
            "pass it with --mmproj and give the model with --model"
        )
    if arch not in supported_architectures():
        raise ModelFileError(
            f"{info.path}: architecture '{arch}' is not supported by this llama.cpp "
            "build; use a Gemma GGUF (gemma3, gemma3n, gemma4)"
        )
    if not info.tensors:
        raise ModelFileError(f"{info.path} has no tensors (a vocab-only GGUF?); use a full model file")
    return info
