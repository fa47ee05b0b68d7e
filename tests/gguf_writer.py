"""Write minimal, valid GGUF files by hand for tests of the header checks."""

import struct
from pathlib import Path


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def write_minimal_gguf(path: Path, architecture: str, n_floats: int = 8) -> Path:
    """A GGUF v3 with general.architecture and one F32 tensor of n_floats values."""
    header = b"GGUF" + struct.pack("<IQQ", 3, 1, 1)
    header += _string("general.architecture") + struct.pack("<I", 8) + _string(architecture)
    header += _string("weight") + struct.pack("<I", 1) + struct.pack("<Q", n_floats)
    header += struct.pack("<IQ", 0, 0)  # type F32, offset 0
    header += b"\0" * (-len(header) % 32)  # data section is 32-byte aligned
    path.write_bytes(header + struct.pack(f"<{n_floats}f", *range(n_floats)))
    return path
