"""Fuzz targets for what edge-gemma parses from the outside world, shared by the bounded run in the
test suite (tests/test_fuzz.py) and the longer run (scripts/fuzz.py).

Each target takes bytes from hypothesis and must end in one of two ways: a result, or the EdgeError
subclass that turns into a one-line message. Any other exception is a finding.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import strategies as st

from edge.errors import AudioError, DownloadError, ImageError, ModelFileError, ProfileError

FIXTURES = Path(__file__).parent / "fixtures"
TINY_GGUF = FIXTURES / "gemma4-tiny" / "tiny-gemma-4-E2B.gguf"
PROBE_GGUF = Path(__file__).parent.parent / "edge" / "model" / "backend-probe.gguf"
HEADER_BYTES = 8192  # mutations land where the parser reads: magic, version, counts, keys, tensor table


def seed_gguf() -> bytes:
    """A real GGUF small enough to mutate whole: the shipped backend-probe model (1 MB)."""
    return PROBE_GGUF.read_bytes()


def mutated(draw, seed: bytes, edits: int, position) -> bytes:
    """`seed` with 1 to `edits` bytes flipped, set, inserted, or the tail cut; `position(draw, data)`
    picks where (parsers read their headers first: mutations land there)."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, edits))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert"]))
        at = position(draw, data)
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[at] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]))
        elif kind == "truncate":
            del data[draw(st.integers(0, len(data))) :]
            if not data:
                break
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@st.composite
def mutated_gguf(draw) -> bytes:
    """The probe GGUF with a few bytes flipped, inserted, or cut, mostly in its header."""
    return mutated(draw, seed_gguf(), 8, lambda draw, data: draw(st.integers(0, min(HEADER_BYTES, len(data) - 1))))


def gguf_target(data: bytes):
    """The checked header, or the ModelFileError that refused the file."""
    from edge.model.gguf import check_loadable_model

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzzed.gguf"
        path.write_bytes(data)
        try:
            return check_loadable_model(path)
        except ModelFileError as exc:
            return exc


# Profile TOML: real keys with random values, random keys, and random text.
PROFILE_KEYS = [
    "description",
    "family",
    "memory_gb",
    "model",
    "quants",
    "mmproj_quants",
    "n_ctx",
    "n_threads",
    "n_threads_batch",
    "n_batch",
    "n_ubatch",
    "load_mode",
    "lazy_mode",
    "n_gpu_layers",
    "flash_attn",
    "type_k",
    "type_v",
    "os_headroom_mb",
    "mmproj_gpu",
    "image_tokens",
]
toml_values = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.booleans(),
    st.text(max_size=20),
    st.floats(allow_nan=True),
    st.lists(st.text(max_size=8), max_size=4),
)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(str(value), repr(value))
    if isinstance(value, list):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    return json.dumps(value) if isinstance(value, str) else str(value)


@st.composite
def profile_toml(draw) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    keys = draw(st.lists(st.sampled_from(PROFILE_KEYS) | st.text(min_size=1, max_size=10), max_size=12))
    lines = [f"{json.dumps(k)} = {_toml_value(draw(toml_values))}" for k in keys]
    return "\n".join(lines).encode()


def profile_target(data: bytes):
    """The loaded profile, or the ProfileError that refused the file."""
    from edge.profiles import load_profile_file

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzzed.toml"
        path.write_bytes(data)
        try:
            return load_profile_file(path)
        except ProfileError as exc:
            return exc


@st.composite
def audio_bytes(draw) -> bytes:
    """Random bytes, or a real WAV header with a fuzzed body and fields."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=512))
    import struct

    channels, width = draw(st.integers(0, 9)), draw(st.integers(0, 5))
    rate = draw(st.integers(0, 2**32 - 1))
    body = draw(st.binary(max_size=2048))
    fmt = struct.pack(
        "<HHIIHH",
        draw(st.sampled_from([1, 3, 0xFFFE, 0])),
        channels,
        rate,
        rate * channels * width & 0xFFFFFFFF,
        channels * width & 0xFFFF,
        width * 8,
    )
    return (
        b"RIFF"
        + struct.pack("<I", 36 + len(body))
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", draw(st.sampled_from([len(body), 0, 2**32 - 1])))
        + body
    )


def audio_target(data: bytes):
    """The decoded PCM, or the AudioError that refused the bytes."""
    from edge.audio.files import decode_audio

    try:
        return decode_audio(data, name="fuzzed", max_seconds=600)
    except AudioError as exc:
        return exc


def seed_images() -> dict[str, bytes]:
    """One small real picture in each format a user may send."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(5)
    image = Image.fromarray((rng.random((24, 32, 3)) * 255).astype(np.uint8))
    out = {}
    for fmt in ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"):
        buffer = io.BytesIO()
        image.save(buffer, fmt)
        out[fmt] = buffer.getvalue()
    return out


SEED_IMAGES = seed_images()


@st.composite
def image_bytes(draw) -> bytes:
    """Random bytes, or a real picture with bytes flipped, inserted or cut (headers: sizes, chunk lengths)."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=512))
    seed = SEED_IMAGES[draw(st.sampled_from(sorted(SEED_IMAGES)))]
    return mutated(draw, seed, 6, _header_or_anywhere)


def _header_or_anywhere(draw, data: bytearray) -> int:
    return draw(st.integers(0, min(64, len(data) - 1) if draw(st.booleans()) else len(data) - 1))


def image_target(data: bytes):
    """The decoded picture, or the ImageError that refused the bytes."""
    from edge.vision.images import decode_image

    try:
        return decode_image(data, name="fuzzed")
    except ImageError as exc:
        return exc


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def hub_model_info(draw) -> dict:
    """A model_info answer: the Hub's keys with fuzzed values, sometimes fuzzed siblings."""
    sibling = st.fixed_dictionaries(
        {"rfilename": st.text(max_size=40) | json_values},
        optional={
            "size": json_values | st.integers(-5, 2**60),
            "lfs": st.fixed_dictionaries(
                {}, optional={"sha256": st.text(max_size=70) | json_values, "size": json_values}
            ),
        },
    )
    return draw(
        st.fixed_dictionaries(
            {},
            optional={
                "id": json_values,
                "sha": st.text(alphabet="0123456789abcdef", min_size=40, max_size=40) | json_values,
                "siblings": st.lists(sibling, max_size=4) | json_values,
                "private": json_values,
                "tags": json_values,
            },
        )
    )


def hub_target(hub, repo_id: str, body):
    """Serve `body` as the answer to model_info and list the repo through the real client."""
    from edge.setup.download import list_remote_files

    hub.raw_model_info[repo_id] = json.dumps(body).encode()
    try:
        return list_remote_files(repo_id)
    except DownloadError as exc:
        return exc
