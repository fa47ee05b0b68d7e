"""How a prompt's media reach the KV cache: pieces from libmtmd's tokenizer, audio rows decoded in
aligned batches (so a clip heard while spoken matches its whole-clip rows), pictures through libmtmd's
helper. A mixin of Engine (core.py): it uses the engine's context, batches and cache record.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Sequence

import numpy as np

from edge.errors import AudioError, ImageError
from edge.model.engine.cache_record import MEDIA, cache_keys
from edge.model.engine.media import EncodedAudio, MediaPiece, TextPiece
from edge.vision.images import Picture

# Audio rows are decoded in batches of this many, aligned to the clip's start (two encoder blocks,
# 0.96 s of speech): small enough to prefill while the user speaks, large enough to keep matmuls busy.
AUDIO_BATCH = 24


class MediaDecoding:
    def _pieces(self, text: str, clips: Sequence, *, bos: bool):
        if clips:
            if self.projector is None:
                raise AudioError("this model was loaded without a projector, so it can neither hear nor see")
            return self.projector.tokenize(text, clips, add_bos=bos)
        return _Just([TextPiece(self.tokenize(text, bos=bos))])

    def _media_rows(self, pieces: list, clips, on_stage, audio_rows=None) -> list[EncodedAudio | None]:
        """Each media piece's rows (encoded now, or as given), or None where they are decoded by
        libmtmd's helper instead (media the model attends to out of order, M-RoPE): those never match."""
        from edge.model.engine.media import mtmd

        m, given, out = mtmd(), [c for c in clips if isinstance(c, EncodedAudio)], []
        if given and len(given) != sum(1 for c in clips if not isinstance(c, Picture)):
            raise AudioError("give the engine all clips encoded, or none")
        for piece in pieces:
            if isinstance(piece, TextPiece):
                out.append(None)
                continue
            handle = self.projector.handle
            in_order = not m.mtmd_decode_use_mrope(handle) and not m.mtmd_decode_use_non_causal(handle, piece.chunk)
            if piece.kind != "audio" or not in_order:
                out.append(None)
                continue
            if given:
                clip = given.pop(0)
                heard_so_far = audio_rows is not None and not given  # the last clip, still being spoken
                if len(clip.embeddings) != piece.n_tokens and not (heard_so_far and len(clip.embeddings) >= audio_rows):
                    raise AudioError(f"an encoded clip has {len(clip.embeddings)} rows, its audio {piece.n_tokens}")
                out.append(clip)
                continue
            on_stage("audio_eval_start")
            t0 = time.perf_counter()
            out.append(EncodedAudio(np.empty(0, np.float32), self.projector.encode(piece)))
            self._encode_s += time.perf_counter() - t0
        return out

    def _decode_rows(self, clip: EncodedAudio, lo: int, hi: int) -> None:
        """Rows [lo, hi) of a clip's embeddings into the cache, in batches aligned to the clip's start.

        The same rows always go in the same batches, whether a clip is evaluated whole or as it is
        heard: on some CPUs a row's result differs in the last bits with its batch (see the seeds note).
        """
        if self._embd_batch is None:
            self._embd_batch = self._lc.llama_batch_init(AUDIO_BATCH, self.projector.embedding_size, 1)
        batch = self._embd_batch
        row = lo
        while row < hi:
            self.lifetime.check()  # a model closing mid-prompt stops between batches
            stop = min(hi, (row // AUDIO_BATCH + 1) * AUDIO_BATCH)
            part = np.ascontiguousarray(clip.embeddings[row:stop], dtype=np.float32)
            ctypes.memmove(batch.embd, part.ctypes.data, part.nbytes)
            base = len(self.cached)
            for i in range(stop - row):
                batch.pos[i] = base + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = False
            batch.n_tokens = stop - row
            rc = self._lc.llama_decode(self._ctx, batch)
            if rc != 0:
                self._resync()
                raise AudioError(f"decoding the audio embeddings failed (code {rc}); try a larger --ctx")
            self.cached.extend(clip.keys[row:stop])
            row = stop

    def _decode_media(self, piece: MediaPiece) -> float:
        """Encode one media chunk and decode it with libmtmd's helper (images, M-RoPE); returns encode seconds."""
        from edge.model.engine.media import mtmd

        m, projector = mtmd(), self.projector
        t0 = time.perf_counter()
        rc = m.mtmd_encode_chunk(projector.handle, piece.chunk)
        encode_s = time.perf_counter() - t0
        if rc != 0:
            raise _media_error(piece)(f"the {piece.kind} encoder failed (code {rc})")
        n_past = len(self.cached)
        new_n_past = self._lc.llama_pos(n_past)
        rc = m.mtmd_helper_decode_image_chunk(
            projector.handle,
            self._ctx,
            piece.chunk,
            m.mtmd_get_output_embd(projector.handle),
            n_past,
            0,
            self.n_batch,
            ctypes.byref(new_n_past),
            m.mtmd_helper_post_decode_callback(),
            None,
        )
        if rc != 0:
            self._resync()
            raise _media_error(piece)(f"decoding the {piece.kind} embeddings failed (code {rc}); try a larger --ctx")
        keys = cache_keys(piece, None)
        self.cached.extend(keys if len(keys) == new_n_past.value - n_past else [MEDIA] * (new_n_past.value - n_past))
        return encode_s


class _Just:
    """A context manager that yields a ready value (text-only prompts need no media cleanup)."""

    def __init__(self, value):
        self.value = value

    def __enter__(self):
        return self.value

    def __exit__(self, *exc) -> None:
        return None


def _media_error(piece: MediaPiece) -> type[AudioError] | type[ImageError]:
    return ImageError if piece.kind == "image" else AudioError
