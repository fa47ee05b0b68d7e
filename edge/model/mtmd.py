"""Audio into a loaded Gemma 4 through libmtmd (llama_cpp.mtmd_cpp).

Open the mmproj once for a loaded `llama_cpp.Llama`, then feed a prompt that holds the media
marker plus 16 kHz mono float32 PCM; the text and audio land in the llama's KV cache and
`llama.n_tokens` / `llama.input_ids` stay consistent, so ordinary sampling follows, e.g.

    with MtmdAudio(llama, mmproj) as audio:
        audio.eval_prompt_with_audio(llama, f"<|turn>user\\n{audio.marker}...", pcm)
        for tok in llama.generate(llama.input_ids[: llama.n_tokens].tolist(), temp=0.0): ...

(`generate` sees the whole prompt already cached and samples at once.) libmtmd's helpers are not
thread-safe: use one MtmdAudio from one worker thread.
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np

from edge.errors import AudioError, ModelFileError

# libmtmd aborts the whole process on a 1-sample buffer and fails on a 30 s split whose tail is
# too short to frame; 100 ms is well above both limits and below any real utterance.
MIN_SAMPLES_AT_16K = 1_600
MTMD_PIECE_SECONDS = 30
# input_ids slots under media embeddings get a value no token has, so a later prompt can never
# prefix-match them and reuse the audio's KV by accident.
MEDIA_TOKEN_PLACEHOLDER = -1


@dataclass(frozen=True)
class AudioEvalResult:
    """What one prompt+audio evaluation put into the context."""

    n_audio_tokens: int  # embeddings decoded for the audio (about 25 per second)
    n_chunks: int  # audio chunks mtmd made (one per started 30 s)
    n_text_tokens: int  # text tokens around the audio, including <|audio> / <audio|>
    encode_ms: float  # time in the audio encoder only (not the LLM decode)
    n_past: int  # llama.n_tokens afterwards: where sampling continues


def _mtmd() -> Any:
    try:
        from llama_cpp import mtmd_cpp
    except (ImportError, OSError) as e:  # OSError: libmtmd missing from the build
        raise AudioError(f"llama-cpp-python has no usable libmtmd ({e}); reinstall llama-cpp-python==0.3.36") from e
    return mtmd_cpp


def check_pcm(pcm: Any, sample_rate: int = 16_000) -> np.ndarray:
    """Validate a mono float32 buffer for mtmd; return a contiguous copy clipped to [-1, 1].

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
    min_samples = MIN_SAMPLES_AT_16K * sample_rate // 16_000
    if pcm.size < min_samples:
        raise AudioError(
            f"audio is too short: {pcm.size} samples, need at least {min_samples} "
            f"({1000 * min_samples // sample_rate} ms at {sample_rate} Hz)"
        )
    if not np.isfinite(pcm).all():
        raise AudioError("audio contains NaN or infinite samples: check the capture or decoder")
    out = np.clip(pcm, -1.0, 1.0).astype(np.float32, copy=False)
    # A tail shorter than the minimum after a 30 s split would hit the same abort: pad it with silence.
    piece = MTMD_PIECE_SECONDS * sample_rate
    tail = out.size % piece
    if out.size > piece and 0 < tail < min_samples:
        out = np.concatenate([out, np.zeros(min_samples - tail, dtype=np.float32)])
    return np.ascontiguousarray(out)


class MtmdAudio:
    """An mmproj with an audio encoder, opened for one loaded Llama. Close it (or use `with`)."""

    def __init__(
        self,
        llama: Any,
        mmproj_path: str | Path,
        *,
        n_threads: int | None = None,
        use_gpu: bool | None = None,
        warmup: bool = True,
    ) -> None:
        path = Path(mmproj_path)
        if not path.is_file():
            raise ModelFileError(f"mmproj file not found: {path}; run `edge-gemma setup` to download it")
        self._m = m = _mtmd()
        self._llama = llama
        params = m.mtmd_context_params_default()
        # Encoding is a batch job like prompt processing: give it the batch thread count.
        params.n_threads = n_threads or llama.n_threads_batch
        params.use_gpu = bool(llama.model_params.n_gpu_layers) if use_gpu is None else use_gpu
        params.print_timings = False
        params.warmup = warmup
        params.flash_attn_type = llama.context_params.flash_attn_type
        _route_mtmd_logs(m)
        # libmtmd prints an "audio is experimental" warning straight to stderr on every load, past
        # the log callback: silence the C streams unless the model was loaded verbose.
        from llama_cpp._utils import suppress_stdout_stderr

        with suppress_stdout_stderr(disable=bool(getattr(llama, "verbose", False))):
            self._ctx = m.mtmd_init_from_file(str(path).encode(), llama.model, params)
        if not self._ctx:
            self._ctx = None
            raise ModelFileError(
                f"libmtmd could not load {path.name} for this model: it is not an mmproj, "
                "is truncated, or belongs to another model size; run `edge-gemma setup`"
            )
        if not m.mtmd_support_audio(self._ctx):
            self.close()
            raise AudioError(
                f"{path.name} has no audio encoder; run `edge-gemma setup` to get the "
                "Gemma 4 E2B/E4B mmproj that carries one (projector gemma4a)"
            )
        self.marker: str = m.mtmd_default_marker().decode()
        self.audio_sample_rate: int = int(m.mtmd_get_audio_sample_rate(self._ctx))
        # Free before the Llama frees its model, whichever is closed first (ExitStack runs LIFO).
        stack = getattr(llama, "_stack", None)
        if stack is not None:
            stack.callback(self.close)

    def close(self) -> None:
        if self._ctx is not None:
            self._m.mtmd_free(self._ctx)
            self._ctx = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def supports_vision(self) -> bool:
        return bool(self._ctx is not None and self._m.mtmd_support_vision(self._ctx))

    def eval_prompt_with_audio(
        self, llama: Any, prompt: str, pcm: np.ndarray, *, append: bool = False
    ) -> AudioEvalResult:
        """Evaluate `prompt` (one `self.marker` where the audio goes) with `pcm` into `llama`.

        By default the context starts afresh; `append=True` continues after `llama.n_tokens`
        (then the prompt must not start with <bos>).
        """
        if self._ctx is None:
            raise AudioError("the mmproj is closed; open a new MtmdAudio")
        if llama is not self._llama:
            raise AudioError("this MtmdAudio was opened for a different Llama; open one per model")
        if prompt.count(self.marker) != 1:
            raise AudioError(
                f"the prompt must contain the media marker {self.marker!r} exactly once, "
                f"found {prompt.count(self.marker)}"
            )
        samples = check_pcm(pcm, self.audio_sample_rate)

        m = self._m
        start = llama.n_tokens if append else 0
        bos_id = llama.token_bos()
        bos = llama.detokenize([bos_id], special=True).decode(errors="replace") if bos_id >= 0 else ""
        # A rendered chat template already begins with <bos>: adding one more degrades the model.
        add_special = not append and not (bos and prompt.startswith(bos))
        data = samples.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        bitmap = m.mtmd_bitmap_init_from_audio(samples.size, data)  # copies the samples
        if not bitmap:
            raise AudioError("libmtmd could not take the audio buffer")
        chunks = m.mtmd_input_chunks_init()
        try:
            text = m.mtmd_input_text()
            raw = prompt.encode()
            text.text, text.text_len = raw, len(raw)
            text.add_special, text.parse_special = add_special, True
            bitmaps = (m.mtmd_bitmap_p_ctypes * 1)(bitmap)
            rc = m.mtmd_tokenize(self._ctx, chunks, ctypes.byref(text), bitmaps, 1)
            if rc != 0:
                raise AudioError(f"libmtmd could not tokenize the prompt with audio (code {rc})")
            need = start + m.mtmd_helper_get_n_pos(chunks)
            if need > llama.n_ctx():
                raise AudioError(
                    f"prompt plus audio need {need} context positions but n_ctx is "
                    f"{llama.n_ctx()}: raise n_ctx or send shorter audio"
                )
            return self._eval_chunks(llama, chunks, start)
        finally:
            m.mtmd_input_chunks_free(chunks)
            m.mtmd_bitmap_free(bitmap)

    def _eval_chunks(self, llama: Any, chunks: Any, start: int) -> AudioEvalResult:
        import llama_cpp as lc

        m = self._m
        llama.n_tokens = start
        # Drop anything cached past the start (llama.eval does the same before each text chunk).
        lc.llama_memory_seq_rm(lc.llama_get_memory(llama.ctx), -1, start, -1)
        n_audio = n_audio_chunks = n_text = 0
        encode_s = 0.0
        for i in range(m.mtmd_input_chunks_size(chunks)):
            chunk = m.mtmd_input_chunks_get(chunks, i)
            kind = m.mtmd_input_chunk_get_type(chunk)
            if kind == m.MTMD_INPUT_CHUNK_TYPE_TEXT:
                n = ctypes.c_size_t()
                ptr = m.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                tokens = [ptr[j] for j in range(n.value)]
                if tokens:
                    llama.eval(tokens)  # keeps input_ids, n_tokens and the last logits in step
                n_text += len(tokens)
                continue
            if kind != m.MTMD_INPUT_CHUNK_TYPE_AUDIO:
                raise AudioError("the prompt produced a non-audio media chunk; pass only audio here")
            t0 = time.perf_counter()
            rc = m.mtmd_encode_chunk(self._ctx, chunk)
            encode_s += time.perf_counter() - t0
            if rc != 0:
                raise AudioError(f"the audio encoder failed (code {rc})")
            n_past = llama.n_tokens
            new_n_past = ctypes.c_int32(n_past)
            rc = m.mtmd_helper_decode_image_chunk(
                self._ctx,
                llama.ctx,
                chunk,
                m.mtmd_get_output_embd(self._ctx),
                n_past,
                0,
                llama.n_batch,
                ctypes.byref(new_n_past),
                m.mtmd_helper_post_decode_callback(),
                None,
            )
            if rc != 0:
                raise AudioError(f"decoding the audio embeddings failed (code {rc}); try a larger n_ctx or n_batch")
            llama.input_ids[n_past : new_n_past.value] = MEDIA_TOKEN_PLACEHOLDER
            llama.n_tokens = new_n_past.value
            n_audio += m.mtmd_input_chunk_get_n_tokens(chunk)
            n_audio_chunks += 1
        return AudioEvalResult(
            n_audio_tokens=n_audio,
            n_chunks=n_audio_chunks,
            n_text_tokens=n_text,
            encode_ms=round(encode_s * 1000.0, 3),
            n_past=llama.n_tokens,
        )


_LOGS_ROUTED = False


def _route_mtmd_logs(m: Any) -> None:
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
