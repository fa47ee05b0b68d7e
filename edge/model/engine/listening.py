"""Hearing a clip while it is spoken: the audio encoder run on windows, keeping only exact rows.

Gemma 4's audio encoder (llama.cpp `gemma4a`) is causal but for its last row: attention runs in
blocks of 12 rows (0.48 s) aligned to the clip's start, each seeing the block before; its
convolutions look back only; the subsampling looks one row ahead. So the rows of a clip's prefix
are the whole clip's rows, bit for bit, except the last. And a row needs only a bounded past:
encoding a window that starts `warm_blocks` blocks before it gives the same bytes as the whole clip.
Measured (scripts/listening_exactness.py): the tiny fixture's 2-layer encoder is exact after 3
blocks, the full-size 12-layer one after 16 (15 left one row off); `n_layer + 4` blocks covers both.

So each step encodes only the new audio and that warm-up, whatever the clip's length: the work at
the end of speech no longer grows with the question. The rows go to the engine as an EncodedAudio;
the engine prefills them in batches aligned to the clip's start and matches them in its cache by
their bytes (core.py), so what was prefilled early is exactly what a whole-clip pass would hold.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from edge.audio_format import MAX_CLIP_SECONDS, SAMPLE_RATE
from edge.errors import AudioError
from edge.model.engine.media import MIN_AUDIO_SAMPLES, EncodedAudio, Projector

SAMPLES_PER_ROW = SAMPLE_RATE // 25  # one audio token per 40 ms
BLOCK_ROWS = 12  # the encoder's attention block (gemma4a.cpp: chunk_size)
BLOCK_SAMPLES = BLOCK_ROWS * SAMPLES_PER_ROW
EXTRA_WARM_BLOCKS = 4  # beyond one block per layer: the convolutions' and the subsampling's reach


@dataclass
class ListenerWork:
    """What listening cost: for the report's "encoder work repeated"."""

    steps: int = 0
    encoded_seconds: float = 0.0  # audio through the encoder, warm-up windows included
    final_encode_seconds: float = 0.0  # encoder time at the end of speech (`finish`)


class Listener:
    """One clip heard as it grows. Give `hear()` the clip so far (always from the same first sample)."""

    def __init__(self, projector: Projector, *, warm_blocks: int | None = None):
        projector.require_audio()
        self.projector = projector
        self.warm_blocks = warm_blocks if warm_blocks is not None else projector.audio_layers + EXTRA_WARM_BLOCKS
        self.rows = np.empty((0, projector.embedding_size), np.float32)  # exact rows so far
        self.work = ListenerWork()
        self._heard = np.empty(0, np.float32)  # the samples heard so far: is a clip still the same one?

    @property
    def heard_samples(self) -> int:
        return self._heard.size

    def same_clip(self, pcm: np.ndarray) -> bool:
        """`pcm` agrees with every sample heard so far, as far as both go (nothing heard: the same)."""
        n = min(pcm.size, self._heard.size)
        return np.array_equal(pcm[:n], self._heard[:n])

    def hear(self, pcm: np.ndarray) -> EncodedAudio | None:
        """Encode what is new in `pcm` (the clip so far); the clip's exact rows, or None while too short."""
        return self._encode(pcm, final=False)

    def finish(self, pcm: np.ndarray) -> EncodedAudio:
        """The whole clip's rows: those heard early, and the rest encoded now."""
        encoded = self._encode(pcm, final=True)
        assert encoded is not None
        return encoded

    def _encode(self, pcm: np.ndarray, *, final: bool) -> EncodedAudio | None:
        if pcm.size > MAX_CLIP_SECONDS * SAMPLE_RATE:
            raise AudioError(f"a clip heard while it is spoken is at most {MAX_CLIP_SECONDS:g} s")
        if not self.same_clip(pcm):
            raise AudioError("listening: this clip does not continue the one heard so far")
        if not final and (pcm.size < MIN_AUDIO_SAMPLES or pcm.size - self.heard_samples < SAMPLES_PER_ROW):
            return self._encoded(pcm)  # nothing new worth a pass of the encoder
        if pcm.size < self.heard_samples:  # the end was trimmed back (its quiet tail): keep only rows inside
            self.rows = self.rows[: max(0, pcm.size // SAMPLES_PER_ROW - 2)]
        known = len(self.rows)
        start_block = max(0, known // BLOCK_ROWS - self.warm_blocks)
        window = pcm[start_block * BLOCK_SAMPLES :]
        t0 = time.perf_counter()
        rows = self.projector.encode_audio(window)
        self.work.steps += 1
        self.work.encoded_seconds += window.size / SAMPLE_RATE
        if final:
            self.work.final_encode_seconds = time.perf_counter() - t0
        offset = start_block * BLOCK_ROWS
        # Early, the last row is left out: it depends on audio still to come.
        self.rows = np.concatenate([self.rows, rows[known - offset : len(rows) if final else len(rows) - 1]])
        self._heard = pcm.copy()
        return self._encoded(pcm)

    def _encoded(self, pcm: np.ndarray) -> EncodedAudio | None:
        """The clip so far with its exact rows (early, one fewer than its audio takes)."""
        return EncodedAudio(pcm, self.rows) if len(self.rows) else None
