"""The projector (mmproj) through libmtmd: audio and pictures turned into prompt pieces.

`Projector` opens an mmproj for a loaded model. `Projector.tokenize(text, media)` splits a prompt
holding one media marker per clip or picture into text tokens and media chunks; the engine
evaluates them (core.py), so the projector itself never changes the model's state. libmtmd is not
thread-safe: one projector, one worker thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.audio_format import MAX_CLIP_SECONDS, SAMPLE_RATE
from edge.errors import AudioError, ImageError, ModelFileError
from edge.model.engine.lifetime import Lifetime
from edge.model.gguf import inspect_gguf
from edge.vision.images import IMAGE_TOKEN_BUDGETS, Picture, check_budget, fit_to_budget

# libmtmd aborts the whole process on a 1-sample buffer and fails on a 30 s split whose tail is
# too short to frame; 100 ms is well above both limits and below any real utterance.
MIN_AUDIO_SAMPLES = SAMPLE_RATE // 10


@dataclass(frozen=True)
class TextPiece:
    tokens: list[int]


@dataclass(frozen=True)
class MediaPiece:
    """One media chunk of a tokenized prompt; valid while its `MediaPrompt` is open."""

    chunk: Any  # mtmd_input_chunk pointer
    n_tokens: int  # embeddings it decodes into
    n_pos: int  # context positions it takes
    kind: str  # "audio" | "image"
    id: str | None = None  # a picture's digest (Picture.digest): the same picture is found in the cache by it


@dataclass(frozen=True, eq=False)
class EncodedAudio:
    """A clip that has been through the audio encoder: its samples and its embeddings, one row per
    audio token. Given to the engine in place of the PCM, it is not encoded again; rows already in
    the KV cache (same bytes, same place) are not evaluated again either."""

    pcm: np.ndarray
    embeddings: np.ndarray  # (tokens, embedding) float32

    @functools.cached_property
    def keys(self) -> list[int]:
        """One cache key per row: a fingerprint of its bytes, negative so no token id can equal it."""
        return [embedding_key(row) for row in self.embeddings]


def embedding_key(row: np.ndarray) -> int:
    digest = hashlib.blake2b(np.ascontiguousarray(row).tobytes(), digest_size=7).digest()
    return -2 - int.from_bytes(digest, "little")  # -1 is MEDIA (core.py): media whose rows we never saw


def mtmd() -> Any:
    try:
        from llama_cpp import mtmd_cpp
    except (ImportError, OSError) as e:  # OSError: libmtmd missing from the build
        raise AudioError(f"llama-cpp-python has no usable libmtmd ({e}); reinstall llama-cpp-python==0.3.36") from e
    return mtmd_cpp


def check_pcm(pcm: Any) -> np.ndarray:
    """Validate a 16 kHz mono float32 buffer for mtmd; return a contiguous copy clipped to [-1, 1].

    Everything is checked here because mtmd aborts the whole process on some bad buffers.
    """
    if not isinstance(pcm, np.ndarray):
        raise AudioError(f"audio must be a numpy float32 array, got {type(pcm).__name__}")
    if pcm.dtype != np.float32:
        raise AudioError(
            f"audio must be float32 PCM in [-1, 1], got dtype {pcm.dtype}: convert it first "
            "(int16: pcm.astype(np.float32) / 32768)"
        )
    if pcm.ndim != 1:
        raise AudioError(f"audio must be mono, a 1-D array; got shape {pcm.shape} (mix down or take one channel)")
    if pcm.size < MIN_AUDIO_SAMPLES:
        raise AudioError(
            f"audio is too short: {pcm.size} samples, need at least {MIN_AUDIO_SAMPLES} "
            f"({1000 * MIN_AUDIO_SAMPLES // SAMPLE_RATE} ms at {SAMPLE_RATE} Hz)"
        )
    if not np.isfinite(pcm).all():
        raise AudioError("audio contains NaN or infinite samples: check the capture or decoder")
    out = np.clip(pcm, -1.0, 1.0).astype(np.float32, copy=False)
    # A tail shorter than the minimum after mtmd's 30 s split would hit the same abort: pad it with silence.
    piece = int(MAX_CLIP_SECONDS * SAMPLE_RATE)
    tail = out.size % piece
    if out.size > piece and 0 < tail < MIN_AUDIO_SAMPLES:
        out = np.concatenate([out, np.zeros(MIN_AUDIO_SAMPLES - tail, dtype=np.float32)])
    return np.ascontiguousarray(out)


class Projector:
    """An mmproj opened for one loaded llama model. Close it before the model (LoadedModel does).

    `lifetime`: the model's (lifetime.py); the encoders run inside it, so closing waits for them."""

    def __init__(
        self,
        model_handle,
        path: str | Path,
        *,
        n_threads: int,
        use_gpu: bool,
        flash_attn_type: int,
        verbose,
        lifetime: Lifetime,
    ):
        self._lifetime = lifetime
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"mmproj file not found: {path}; run `edge-gemma setup` to download it")
        self.path = path
        import llama_cpp

        # Width of the projector's output: the text model's input embedding.
        self.embedding_size = int(llama_cpp.llama_model_n_embd_inp(model_handle))
        self._m = m = mtmd()
        params = m.mtmd_context_params_default()
        params.n_threads = n_threads  # encoding is a batch job like prompt processing
        params.use_gpu = use_gpu
        params.print_timings = False
        params.warmup = True
        params.flash_attn_type = flash_attn_type
        # Pictures arrive already sized to their budget (fit_image): libmtmd must take them as they
        # are, neither growing a small budget's picture to its default minimum of 70 tokens nor
        # shrinking below the model's largest budget.
        params.image_min_tokens = 1
        params.image_max_tokens = IMAGE_TOKEN_BUDGETS[-1]
        _route_logs(m)
        # libmtmd prints an "audio is experimental" warning straight to stderr on every load, past
        # the log callback: silence the C streams unless the model was loaded verbose.
        from llama_cpp._utils import suppress_stdout_stderr

        with suppress_stdout_stderr(disable=verbose):
            self._ctx = m.mtmd_init_from_file(str(path).encode(), model_handle, params)
        if not self._ctx:
            self._ctx = None
            raise ModelFileError(
                f"libmtmd could not load {path.name} for this model: it is not an mmproj, is truncated, "
                "or belongs to another model size; run `edge-gemma setup` or pass the matching --mmproj"
            )
        self.marker: str = m.mtmd_default_marker().decode()
        self.supports_audio = bool(m.mtmd_support_audio(self._ctx))
        self.supports_vision = bool(m.mtmd_support_vision(self._ctx))
        if self.supports_audio and int(m.mtmd_get_audio_sample_rate(self._ctx)) != SAMPLE_RATE:
            rate = int(m.mtmd_get_audio_sample_rate(self._ctx))
            self.close()
            raise ModelFileError(f"{path.name} wants audio at {rate} Hz; edge-gemma feeds Gemma 4's {SAMPLE_RATE} Hz")

    def close(self) -> None:
        if self._ctx is not None:
            self._m.mtmd_free(self._ctx)
            self._ctx = None

    @property
    def handle(self):
        if self._ctx is None:
            raise AudioError("the projector is closed; load the model again")
        return self._ctx

    def require_audio(self) -> None:
        if not self.supports_audio:
            raise AudioError(
                f"{self.path.name} has no audio encoder; run `edge-gemma setup` to get the Gemma 4 "
                "E2B/E4B mmproj that carries one (projector gemma4a)"
            )

    def require_vision(self) -> None:
        if not self.supports_vision:
            raise ImageError(
                f"{self.path.name} has no vision encoder; run `edge-gemma setup` to get the Gemma 4 "
                "E2B/E4B mmproj that carries one (projector gemma4v)"
            )

    @functools.cached_property
    def image_align(self) -> int:
        """The side of the square of pixels one image token stands for (patch x pooling: 48 on Gemma 4)."""
        metadata = inspect_gguf(self.path).metadata
        patch = int(metadata.get("clip.vision.patch_size", 16) or 16)
        return patch * int(metadata.get("clip.vision.projector.scale_factor", 3) or 3)

    def fit_image(self, picture: Picture, tokens: int) -> Picture:
        """The picture sized to use `tokens` image tokens (at most); what `tokenize` takes."""
        self.require_vision()
        return fit_to_budget(picture, check_budget(tokens), self.image_align)

    def image_tokens(self, picture: Picture) -> int:
        """Context positions a fitted picture takes (its begin/end markers are text tokens)."""
        return (picture.width // self.image_align) * (picture.height // self.image_align)

    @contextlib.contextmanager
    def tokenize(
        self, text: str, media: Sequence[np.ndarray | EncodedAudio | Picture], *, add_bos: bool
    ) -> Iterator[list]:
        """The prompt `text` (one marker per clip or picture) as TextPiece/MediaPiece items, valid inside
        the `with`. Pictures must come through `fit_image`."""
        if text.count(self.marker) != len(media):
            raise AudioError(
                f"the prompt must hold the media marker {self.marker!r} once per clip or picture "
                f"({len(media)}), found {text.count(self.marker)}"
            )
        m = self._m
        bitmaps = []
        chunks = m.mtmd_input_chunks_init()
        try:
            for item in media:
                bitmap = self._picture_bitmap(item) if isinstance(item, Picture) else self._audio_bitmap(item)
                bitmaps.append(bitmap)
            prompt = m.mtmd_input_text()
            raw = text.encode()
            prompt.text, prompt.text_len = raw, len(raw)
            prompt.add_special, prompt.parse_special = add_bos, True
            array = (m.mtmd_bitmap_p_ctypes * max(1, len(bitmaps)))(*bitmaps)
            rc = m.mtmd_tokenize(self.handle, chunks, ctypes.byref(prompt), array, len(bitmaps))
            if rc != 0:
                raise AudioError(f"libmtmd could not tokenize the prompt with its media (code {rc})")
            yield [self._piece(m.mtmd_input_chunks_get(chunks, i)) for i in range(m.mtmd_input_chunks_size(chunks))]
        finally:
            m.mtmd_input_chunks_free(chunks)
            for bitmap in bitmaps:
                m.mtmd_bitmap_free(bitmap)

    def _audio_bitmap(self, clip: np.ndarray | EncodedAudio):
        self.require_audio()
        samples = check_pcm(clip.pcm if isinstance(clip, EncodedAudio) else clip)
        bitmap = self._m.mtmd_bitmap_init_from_audio(
            samples.size, samples.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        )
        if not bitmap:
            raise AudioError("libmtmd could not take the audio buffer")
        return bitmap

    def _picture_bitmap(self, picture: Picture):
        self.require_vision()
        align = self.image_align
        if picture.width % align or picture.height % align or self.image_tokens(picture) > IMAGE_TOKEN_BUDGETS[-1]:
            raise ImageError(f"{picture.name} was not sized to a token budget: pass it through Projector.fit_image")
        rgb = np.ascontiguousarray(picture.rgb, dtype=np.uint8)
        bitmap = self._m.mtmd_bitmap_init(
            picture.width, picture.height, rgb.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
        )
        if not bitmap:
            raise ImageError(f"libmtmd could not take {picture.name}")
        self._m.mtmd_bitmap_set_id(bitmap, picture.digest.encode())
        return bitmap

    def encode_audio(self, pcm: np.ndarray) -> np.ndarray:
        """The audio encoder's output for one clip (at most 30 s): (tokens, embedding) float32, a copy.

        What the engine decodes into the KV cache for this clip, encoded on its own (no prompt),
        so a clip heard in pieces can be encoded window by window (listening.py).
        """
        self.require_audio()
        samples = check_pcm(pcm)
        if samples.size > MAX_CLIP_SECONDS * SAMPLE_RATE:
            raise AudioError(f"encode at most {MAX_CLIP_SECONDS:g} s at once, got {samples.size / SAMPLE_RATE:.1f} s")
        with self._lifetime.use(), self.tokenize(self.marker, [samples], add_bos=False) as pieces:
            (piece,) = [p for p in pieces if isinstance(p, MediaPiece)]
            return self.encode(piece)

    def encode(self, piece: MediaPiece) -> np.ndarray:
        """One media chunk through its encoder: (tokens, embedding) float32, a copy."""
        with self._lifetime.use():
            rc = self._m.mtmd_encode_chunk(self.handle, piece.chunk)
            if rc != 0:
                raise AudioError(f"the {piece.kind} encoder failed (code {rc})")
            n_embd = self.embedding_size
            out = ctypes.cast(self._m.mtmd_get_output_embd(self.handle), ctypes.POINTER(ctypes.c_float))
            return np.ctypeslib.as_array(out, shape=(piece.n_tokens * n_embd,)).reshape(piece.n_tokens, n_embd).copy()

    @functools.cached_property
    def audio_layers(self) -> int:
        """The audio encoder's depth, which sets how much past audio a row needs (listening.py).
        Read from the file when first asked, so loading a projector reads nothing more."""
        return int(inspect_gguf(self.path).metadata.get("clip.audio.block_count", 0) or 0)

    def _piece(self, chunk) -> TextPiece | MediaPiece:
        m = self._m
        kind = m.mtmd_input_chunk_get_type(chunk)
        if kind == m.MTMD_INPUT_CHUNK_TYPE_TEXT:
            n = ctypes.c_size_t()
            ptr = m.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
            return TextPiece([ptr[j] for j in range(n.value)])
        audio = kind == m.MTMD_INPUT_CHUNK_TYPE_AUDIO
        chunk_id = None if audio else m.mtmd_input_chunk_get_id(chunk)
        return MediaPiece(
            chunk,
            int(m.mtmd_input_chunk_get_n_tokens(chunk)),
            int(m.mtmd_input_chunk_get_n_pos(chunk)),
            "audio" if audio else "image",
            chunk_id.decode() if chunk_id else None,
        )


_LOGS_ROUTED = False


def _route_logs(m: Any) -> None:
    """Send libmtmd's logs through llama-cpp-python's callback, so Llama(verbose=False) quiets them too."""
    global _LOGS_ROUTED
    if _LOGS_ROUTED:
        return
    try:
        from llama_cpp._logger import llama_log_callback
    except ImportError:  # private module moved: keep libmtmd's default stderr logging
        return
    m.mtmd_log_set(llama_log_callback, ctypes.c_void_p(0))
    m.mtmd_helper_log_set(llama_log_callback, ctypes.c_void_p(0))
    _LOGS_ROUTED = True
