"""Pictures for the model: decoded, checked and sized to an image-token budget before libmtmd sees one.

Pillow decodes every image, not libmtmd's own decoder (stb_image): Pillow refuses a truncated file
instead of handing on half a picture, reads the size from the header before decoding (so a
decompression bomb is refused for the cost of its header), honours a phone's EXIF rotation, reads
WebP, and shrinks with a proper low-pass filter (libmtmd's bicubic resize aliases on a large
downscale). The picture libmtmd gets is already the size the budget allows, so libmtmd does not
resize it again and the token count is known before anything is encoded.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import ImageError

MAX_IMAGE_BYTES = 20 * 1024 * 1024  # a 48 MP phone JPEG is ~15 MB
MAX_IMAGE_PIXELS = 64_000_000  # above any phone camera (48-50 MP), far below a decompression bomb
# What is kept of a larger picture: twice the pixels of Gemma 4's largest budget (1120 tokens of 48x48),
# so any budget can still be cut from it, while eight 48 MP photos in one request hold ~120 MB, not 1.1 GB.
KEPT_PIXELS = 2 * 1120 * 48 * 48
# Not TIFF: libtiff writes its complaints about a damaged file straight to stderr, past any handler,
# and no camera or phone sends one.
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
# The budgets Gemma 4 was trained with (model card): image tokens per picture.
IMAGE_TOKEN_BUDGETS = (70, 140, 280, 560, 1120)


@dataclass(frozen=True, eq=False)
class Picture:
    """An RGB picture, (height, width, 3) uint8, and where it came from (for messages)."""

    rgb: np.ndarray
    name: str = "image"

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @functools.cached_property
    def digest(self) -> str:
        """A fingerprint of the pixels: the same picture again is found in the KV cache by it."""
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{self.width}x{self.height}".encode())
        h.update(np.ascontiguousarray(self.rgb).tobytes())
        return h.hexdigest()


def read_image(path: str | Path) -> Picture:
    """A picture from a file; every failure is one ImageError that says what to do."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image file not found: {path}")
    size = path.stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise ImageError(
            f"{path} is {size / 2**20:.0f} MiB, over the {MAX_IMAGE_BYTES >> 20} MiB limit; shrink it first"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read {path}: {exc.strerror or exc}") from None
    return decode_image(data, name=str(path))


def decode_image(data: bytes, *, name: str = "the image") -> Picture:
    """A picture from encoded bytes (PNG, JPEG, WebP, GIF: first frame, BMP)."""
    if not data:
        raise ImageError(f"{name} is empty: send the image file's bytes")
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(
            f"{name} is {len(data) / 2**20:.0f} MiB, over the {MAX_IMAGE_BYTES >> 20} MiB limit; shrink it"
        )
    # Pillow warns about what it tolerates (corrupt EXIF, large sizes): a user gets
    # the picture, or this module's one line, never a warning's two.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Picture(_decoded(data, name), name)


def _decoded(data: bytes, name: str) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        # Only our formats' readers look at the bytes (each reads the header only): fewer parsers
        # meet hostile input, and none of the others can log to stderr on the way.
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError:
        raise ImageError(f"{name} claims an absurd size (a decompression bomb?); send a real photo") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise ImageError(f"{name} is not an image this can read; send {', '.join(FORMATS)}") from None
    width, height = image.size
    if width < 1 or height < 1 or width * height > MAX_IMAGE_PIXELS:
        raise ImageError(
            f"{name} says it is {width}x{height} pixels; at most {MAX_IMAGE_PIXELS // 1_000_000} MP are taken: "
            "shrink it (or it is damaged)"
        )
    try:
        if width * height > KEPT_PIXELS:  # a JPEG decodes straight at 1/2-1/8 size: faster, smaller
            scale = math.sqrt(KEPT_PIXELS / (width * height))
            image.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
        image.load()
        image = ImageOps.exif_transpose(image)
        if image.width * image.height > KEPT_PIXELS:
            scale = math.sqrt(KEPT_PIXELS / (image.width * image.height))
            image.thumbnail((max(1, int(image.width * scale)), max(1, int(image.height * scale))), reducing_gap=3.0)
        return _flatten(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):  # truncated or corrupt data
        raise ImageError(f"{name} is truncated or damaged: send the whole file again") from None


def picture_from_rgb(frame: np.ndarray, *, name: str = "camera") -> Picture:
    """A picture from an RGB array (a camera frame), checked like a file would be."""
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ImageError(f"{name}: a frame must be (height, width, 3) uint8 RGB")
    if frame.shape[0] * frame.shape[1] > MAX_IMAGE_PIXELS or min(frame.shape[:2]) < 1:
        raise ImageError(f"{name}: a {frame.shape[1]}x{frame.shape[0]} frame is out of range")
    return Picture(np.ascontiguousarray(frame), name)


def _flatten(image) -> np.ndarray:
    """RGB pixels; transparency is laid over white (a logo on black would vanish)."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def budget_size(width: int, height: int, tokens: int, align: int) -> tuple[int, int]:
    """The size, in multiples of `align` (one image token's square), that keeps the aspect ratio and
    uses as many of `tokens` as it can: small pictures grow to the budget, large ones shrink to it."""
    scale = math.sqrt(tokens * align * align / (width * height))
    cols = max(1, math.floor(width * scale / align))
    rows = max(1, math.floor(height * scale / align))
    while cols * rows > tokens:  # only for extreme aspect ratios, where a side was held at one token
        if cols >= rows:
            cols -= 1
        else:
            rows -= 1
    return cols * align, rows * align


def fit_to_budget(picture: Picture, tokens: int, align: int) -> Picture:
    """The picture resized to `budget_size` (unchanged if it already is that size)."""
    from PIL import Image

    size = budget_size(picture.width, picture.height, tokens, align)
    if size == (picture.width, picture.height):
        return picture
    image = Image.fromarray(picture.rgb).resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    return Picture(np.asarray(image, dtype=np.uint8), picture.name)


def check_budget(tokens: int) -> int:
    if not 1 <= tokens <= IMAGE_TOKEN_BUDGETS[-1]:
        raise ImageError(
            f"an image budget of {tokens} tokens is out of range: use 1 to {IMAGE_TOKEN_BUDGETS[-1]} "
            f"(Gemma 4 was trained with {', '.join(map(str, IMAGE_TOKEN_BUDGETS))})"
        )
    return tokens
