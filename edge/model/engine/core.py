"""The engine: the only code that changes a llama context's state.

Everything the model reads or writes goes through `Engine`: prompts (text, and media through the
projector) are prefilled after the longest cached prefix, tokens are sampled with one sampler
chain (sampling.py), and text comes out through one incremental detokenizer (text.py).

The engine keeps its own record of what the KV cache holds (`cached`: one key per position, see
cache_record.py: token ids, audio rows' fingerprints, pictures' digests), so prefix reuse through
text, audio and pictures, continuing after a reply (`extend`) and rolling back (`truncate`) are exact.

Seeds: a seeded request is evaluated from an empty cache, in the same batches every time. On some
CPUs a token's logits differ in the last bits with the batch it was evaluated in, so a prompt
served partly from the cache could draw another token at the same seed. The promise is: the same
seed, request, model and settings give the same reply in this process, whatever ran before.
"""

from __future__ import annotations

import contextlib
import ctypes
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edge.errors import AudioError, ContextFullError, GenerationError, ImageError, UsageError
from edge.model.engine.cache_record import (
    MEDIA,
    cache_keys,
    common_prefix,
    outside_pictures,
    positions_of,
    through_last_media,
)
from edge.model.engine.lifetime import Lifetime
from edge.model.engine.media import EncodedAudio, MediaPiece, Projector, TextPiece
from edge.model.engine.sampling import Sampling, TokenSampler
from edge.model.engine.text import TextStream
from edge.vision.images import Picture

# Audio rows are decoded in batches of this many, aligned to the clip's start (two encoder blocks,
# 0.96 s of speech): small enough to prefill while the user speaks, large enough to keep matmuls busy.
AUDIO_BATCH = 24
MIN_TOKENS_FOR_RATE = 16  # fewer evaluated tokens than this make a tokens/s figure meaningless
MIN_SECONDS_FOR_RATE = 0.001  # perf_counter resolves far finer; below this a rate is noise


@dataclass(frozen=True)
class PrefillReport:
    """What one prompt evaluation did."""

    prompt_tokens: int  # context positions the prompt takes (media included)
    reused: int  # of those, found in the KV cache and not evaluated again
    evaluated: int  # evaluated now
    seconds: float  # evaluating, media encoding included
    media_tokens: int = 0  # embeddings decoded for media
    media_chunks: int = 0
    encode_ms: float = 0.0  # time in the media encoder alone
    last_media_reused: int = 0  # rows of the prompt's last clip found in the cache (heard while spoken)

    @property
    def tps(self) -> float | None:
        """Prefill tokens/s, or None when too little was evaluated for the figure to mean anything."""
        if self.evaluated < MIN_TOKENS_FOR_RATE or self.seconds < MIN_SECONDS_FOR_RATE:
            return None
        return self.evaluated / self.seconds


@dataclass(frozen=True)
class GenerationStats:
    prefill: PrefillReport
    generated_tokens: int  # tokens sampled (the stop token not counted)
    generation_seconds: float  # from the first sampled token to the last
    time_to_first_token: float  # wall clock, from the start of the request to the first text
    total_seconds: float
    finish_reason: str  # "stop" | "length" | "cancelled" | "interrupted"

    @property
    def prompt_tokens(self) -> int:
        return self.prefill.prompt_tokens

    @property
    def prompt_tps(self) -> float | None:
        return self.prefill.tps

    @property
    def generation_tps(self) -> float | None:
        steps = self.generated_tokens - 1  # the first token came from the prompt's logits
        if steps < 2 or self.generation_seconds < MIN_SECONDS_FOR_RATE:
            return None
        return steps / self.generation_seconds

    @property
    def stopped_by_user(self) -> bool:
        return self.finish_reason == "interrupted"


class Engine:
    """One llama context's state: prefill, media, sampling, detokenizing. One thread at a time."""

    def __init__(self, llama, *, n_batch: int):
        import llama_cpp as lc

        self._lc = lc
        self._llama = llama
        self._ctx, self._model = llama.ctx, llama.model
        self._vocab = lc.llama_model_get_vocab(self._model)
        self._memory = lc.llama_get_memory(self._ctx)
        self.n_ctx = llama.n_ctx()
        self.n_batch = n_batch
        self._batch = lc.llama_batch_init(n_batch, 0, 1)
        self._embd_batch = None  # rows of audio embeddings, made when the first clip is decoded
        self._encode_s = 0.0  # encoder time of the prefill in progress
        self.cached: list[int] = []
        self.projector: Projector | None = None
        self.last_prefill: PrefillReport | None = None
        self.last_finish, self.last_generated = "stop", 0  # how the last generate() ended
        self.last_refusals = 0  # tokens the last generate()'s grammar refused (each a full-vocabulary pass)
        self.bos_text = self.token_text(llama.token_bos())
        self.lifetime = Lifetime()  # every native call below runs inside lifetime.use()

    def free(self) -> None:
        """Free the projector and batches. Only through `lifetime.close` (LoadedModel.close): never
        while a job is running."""
        if self.projector is not None:
            self.projector.close()
            self.projector = None
        for batch in (self._batch, self._embd_batch):
            if batch is not None:
                self._lc.llama_batch_free(batch)
        self._batch = self._embd_batch = None

    # -- text <-> tokens -------------------------------------------------------------------------

    def tokenize(self, text: str, *, bos: bool) -> list[int]:
        with self.lifetime.use():
            return self._llama.tokenize(text.encode(), add_bos=bos, special=True)

    def token_bytes(self, token: int, *, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self._lc.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._lc.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def token_text(self, token: int) -> str:
        """A special token's own text ('' for none), e.g. '<bos>'."""
        return self.token_bytes(token, special=True).decode(errors="replace") if token >= 0 else ""

    def is_end_of_generation(self, token: int) -> bool:
        return bool(self._lc.llama_vocab_is_eog(self._vocab, token))

    # -- the KV cache ------------------------------------------------------------------------------

    def reset(self) -> None:
        """An empty cache, laid out as in a fresh context."""
        with self.lifetime.use():
            self._lc.llama_memory_clear(self._memory, True)
            self.cached = []

    @contextlib.contextmanager
    def lent_context(self) -> Iterator[Any]:
        """This model's llama context, lent to code that drives llama.cpp's C API itself (bench,
        tune): the cache is emptied before and after (the record stays true), the thread counts are
        restored after, and the model cannot be freed meanwhile."""
        with self.lifetime.use():
            self.reset()
            try:
                yield self._ctx
            finally:
                self._lc.llama_set_n_threads(self._ctx, self._llama.n_threads, self._llama.n_threads_batch)
                self.reset()

    def truncate(self, n_positions: int) -> None:
        """Forget every cached position from `n_positions` on."""
        if n_positions < len(self.cached):
            with self.lifetime.use():
                self._lc.llama_memory_seq_rm(self._memory, -1, n_positions, -1)
                del self.cached[n_positions:]

    def prefill(
        self,
        text: str,
        clips: Sequence[np.ndarray | EncodedAudio] = (),
        *,
        fresh: bool = False,
        audio_rows: int | None = None,
        on_stage: Callable[[str], None] = lambda stage: None,
    ) -> PrefillReport:
        """Evaluate a whole prompt (BOS added), reusing the longest cached prefix unless `fresh`.

        `clips`: 16 kHz mono PCM, or clips already encoded (EncodedAudio), one per media marker in
        `text` (needs a projector). Audio rows already in the cache are matched by their bytes, so a
        clip heard while it was spoken (listening.py) is not evaluated again.
        `audio_rows`: evaluate only up to that many rows of the last clip (listening ahead), in
        whole batches (AUDIO_BATCH): no logits, nothing after them.
        `on_stage` hears "audio_eval_start" / "audio_eval_end" around each audio chunk (a turn's timeline).
        """
        # A rendered template may begin with <bos> itself: a second one degrades the model.
        bos = not (self.bos_text and text.startswith(self.bos_text))
        with self.lifetime.use(), self._pieces(text, clips, bos=bos) as pieces:
            rows = self._media_rows(pieces, clips, on_stage, audio_rows)
            wanted = [key for piece, encoded in zip(pieces, rows) for key in cache_keys(piece, encoded)]
            self.check_room(len(wanted))
            if audio_rows is None:
                end = len(wanted)
            else:
                end = through_last_media(pieces, audio_rows // AUDIO_BATCH * AUDIO_BATCH)
            if fresh:
                self.reset()
                keep = 0
            else:
                keep = common_prefix(self.cached, wanted[:end])
                if audio_rows is None:
                    keep = min(keep, end - 1)  # the last token is evaluated again: fresh logits
                keep = outside_pictures(pieces, rows, keep)
                self.truncate(keep)
            report = self._evaluate(pieces, rows, skip=keep, end=end, logits=audio_rows is None, on_stage=on_stage)
        self.last_prefill = report
        return report

    def continue_with(self, text: str, media: Sequence[np.ndarray | Picture] = ()) -> PrefillReport:
        """Evaluate `text` (no BOS) after what the cache holds: a question after a reply, or a tool's
        results with the picture a camera took (`media`: one per marker in `text`). The report counts
        the whole context: what was there is `reused`. Generation(continues=True) is the way in."""
        before = len(self.cached)
        if not text and not media:  # nothing to add: sample from the logits the cache ends with
            added = PrefillReport(0, 0, 0, 0.0)
        elif not media:
            added = self.extend_tokens(self.tokenize(text, bos=False))
        else:
            with self.lifetime.use(), self._pieces(text, media, bos=False) as pieces:
                rows = self._media_rows(pieces, media, lambda stage: None)
                self.check_room(len(self.cached) + sum(positions_of(p) for p in pieces))
                added = self._evaluate(pieces, rows, skip=0)
        self.last_prefill = replace(added, prompt_tokens=before + added.evaluated, reused=before)
        return self.last_prefill

    def extend_tokens(self, tokens: list[int]) -> PrefillReport:
        """Evaluate token ids after what the cache holds."""
        self.check_room(len(self.cached) + len(tokens))
        with self.lifetime.use():
            report = self._evaluate([TextPiece(tokens)], skip=0)
        self.last_prefill = report
        return report

    def check_room(self, positions: int) -> None:
        if positions + 1 > self.n_ctx:
            raise ContextFullError(
                f"the prompt is {positions} tokens but the context holds {self.n_ctx}: "
                "raise --ctx or shorten the prompt"
            )

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

    def _evaluate(
        self,
        pieces: list,
        rows: list[EncodedAudio | None] | None = None,
        *,
        skip: int,
        end: int | None = None,
        logits: bool = True,
        on_stage: Callable[[str], None] = lambda stage: None,
    ) -> PrefillReport:
        """Evaluate prompt positions [skip, end) of `pieces` (the cache holds those before `skip`)."""
        t0 = time.perf_counter()
        rows = rows or [None] * len(pieces)
        end = sum(positions_of(p) for p in pieces) if end is None else end
        position, evaluated, media_tokens, media_chunks, last_reused = 0, 0, 0, 0, 0
        for piece, encoded in zip(pieces, rows):
            if position >= end:
                break
            size = positions_of(piece)
            lo, hi = max(0, skip - position), min(size, end - position)
            if isinstance(piece, MediaPiece):
                media_tokens += hi
                media_chunks += 1
                last_reused = min(lo, hi)
            if lo < hi:
                evaluated += hi - lo
                if isinstance(piece, TextPiece):
                    self._decode_tokens(piece.tokens[lo:hi], logits_last=logits and position + hi == end)
                else:
                    on_stage(f"{piece.kind}_eval_start")
                    if encoded is not None:
                        self._decode_rows(encoded, lo, hi)
                    else:  # never matched, so never partly cached: the whole chunk, by libmtmd's helper
                        self._encode_s += self._decode_media(piece)
                    on_stage(f"{piece.kind}_eval_end")
            position += size
        encode_s, self._encode_s = self._encode_s, 0.0
        return PrefillReport(
            prompt_tokens=min(position, end),
            reused=min(position, end) - evaluated,
            evaluated=evaluated,
            seconds=time.perf_counter() - t0 + encode_s,
            media_tokens=media_tokens,
            media_chunks=media_chunks,
            encode_ms=round(encode_s * 1000, 3),
            last_media_reused=last_reused,
        )

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

    def _decode_tokens(self, tokens: list[int], *, logits_last: bool) -> None:
        """Tokens into the cache in batches of n_batch (the same split for the same prompt)."""
        batch = self._batch
        for begin in range(0, len(tokens), self.n_batch):
            self.lifetime.check()  # a model closing mid-prompt stops between batches
            part = tokens[begin : begin + self.n_batch]
            base = len(self.cached)
            for i, token in enumerate(part):
                batch.token[i] = token
                batch.pos[i] = base + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = False
            batch.logits[len(part) - 1] = logits_last and begin + len(part) == len(tokens)
            batch.n_tokens = len(part)
            rc = self._lc.llama_decode(self._ctx, batch)
            if rc != 0:
                self._resync()
                raise GenerationError(
                    f"llama.cpp could not evaluate the prompt (llama_decode returned {rc}); "
                    "the context may be full: raise --ctx or start a new conversation"
                )
            self.cached.extend(part)

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

    def _resync(self) -> None:
        """After a failed decode, some ubatches may be in the cache: forget past what we know."""
        self._lc.llama_memory_seq_rm(self._memory, -1, len(self.cached), -1)

    # -- sampling ----------------------------------------------------------------------------------

    def generate(
        self,
        sampling: Sampling,
        *,
        cancelled: Callable[[], bool] = lambda: False,
        special: bool | frozenset[int] = False,
    ) -> Iterator[str]:
        """Text pieces sampled after the cache's last logits, until end of generation, a stop string,
        max_tokens or `cancelled()`. `special`: render control tokens as text (all, or these ids: a
        tool call's markup) instead of dropping them.
        The outcome is in `self.last_finish` and `self.last_generated` once the iterator ends; a
        model that starts closing ends it as "cancelled" at the next token."""
        sampler = self._token_sampler(sampling)
        stream = TextStream(sampling.stop)
        self.last_finish, self.last_generated = "length", 0
        life = self.lifetime
        try:
            while self.last_generated < sampling.max_tokens:
                if cancelled() or life.closing:
                    self.last_finish = "cancelled"
                    return
                with life.use():
                    token = sampler.sample()
                    if self.is_end_of_generation(token):
                        self.last_finish = "stop"
                        break
                    shown = special is True or (isinstance(special, frozenset) and token in special)
                    data = self.token_bytes(token, special=shown)
                self.last_generated += 1
                piece = stream.push(data)
                if piece:
                    yield piece  # outside lifetime.use(): a suspended reply holds nothing
                if stream.stopped:
                    self.last_finish = "stop"
                    return
                if self.last_generated < sampling.max_tokens and not life.closing:
                    with life.use():
                        self._decode_tokens([token], logits_last=True)
            tail = stream.flush()
            if tail:
                yield tail
        finally:
            self.last_refusals = sampler.refusals
            sampler.close()

    def _token_sampler(self, sampling: Sampling) -> TokenSampler:
        grammar, trigger = sampling.grammar, None
        if grammar is not None and grammar.lazy:
            ids = self.tokenize(grammar.trigger, bos=False)
            if len(ids) != 1:
                raise UsageError(
                    f"this model has no single token for {grammar.trigger!r}, so it cannot start a tool call: "
                    "tools need a Gemma 4 model (edge-gemma setup)"
                )
            trigger = ids[0]
        with self.lifetime.use():
            return TokenSampler(sampling, self._vocab, self._ctx, trigger_token=trigger)


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
