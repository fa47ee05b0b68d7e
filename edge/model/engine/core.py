"""The engine: the only code that changes a llama context's state.

Everything the model reads or writes goes through `Engine`: prompts (text, and media through the
projector) are prefilled after the longest cached prefix, tokens are sampled with one sampler
chain (sampling.py), and text comes out through one incremental detokenizer (text.py).

The engine keeps its own record of what the KV cache holds (`cached`: one key per position, see
cache_record.py: token ids, audio rows' fingerprints, pictures' digests), so prefix reuse through
text, audio and pictures, continuing after a reply (`continue_with`) and rolling back (`truncate`)
are exact. Media reach the cache through media_decoding.py; long shared prefixes are kept and put
back through prefixes.py; every native call runs inside the model's lifetime (lifetime.py).

Seeds: a seeded request is evaluated from an empty cache, in the same batches every time. On some
CPUs a token's logits differ in the last bits with the batch it was evaluated in, so a prompt
served partly from the cache could draw another token at the same seed. The promise is: the same
seed, request, model and settings give the same reply in this process, whatever ran before.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from edge.errors import ContextFullError, GenerationError, UsageError
from edge.model.engine.cache_record import cache_keys, common_prefix, outside_pictures, positions_of, through_last_media
from edge.model.engine.drafting import GrammarDrafter, batches_for, punctuation_runs
from edge.model.engine.lifetime import Lifetime
from edge.model.engine.media import EncodedAudio, MediaPiece, Projector, TextPiece
from edge.model.engine.media_decoding import AUDIO_BATCH, MediaDecoding
from edge.model.engine.prefixes import PrefixKeeping, PrefixStore
from edge.model.engine.reports import GenerationStats, PrefillReport, joined
from edge.model.engine.sampling import Grammar, Sampling, TokenSampler, grammar_sampler
from edge.model.engine.text import TextStream
from edge.vision.images import Picture

__all__ = ["AUDIO_BATCH", "Engine", "GenerationStats", "PrefillReport"]

KEPT_DRAFTERS = 4


class Engine(MediaDecoding, PrefixKeeping):
    """One llama context's state: prefill, media, sampling, detokenizing. One thread at a time."""

    def __init__(self, llama, *, n_batch: int):
        import llama_cpp as lc

        self._lc = lc
        self._llama = llama
        self._ctx, self._model = llama.ctx, llama.model
        self._vocab = lc.llama_model_get_vocab(self._model)
        self._memory = lc.llama_get_memory(self._ctx)
        self._n_swa = int(lc.llama_model_n_swa(self._model))  # 0: no sliding-window layers
        self.n_ctx = llama.n_ctx()
        self.n_batch = n_batch
        self._batch = lc.llama_batch_init(n_batch, 0, 1)
        self._embd_batch = None  # rows of audio embeddings, made when the first clip is decoded
        self._encode_s = 0.0  # encoder time of the prefill in progress
        self.cached: list[int] = []
        self.projector: Projector | None = None
        self.prefixes: PrefixStore | None = None  # kept prompt prefixes (LoadedModel.keep_prefixes)
        self.last_prefill: PrefillReport | None = None
        self.last_finish, self.last_generated = "stop", 0  # how the last generate() ended
        self.last_refusals = 0  # tokens the last generate()'s grammar refused (each a full-vocabulary pass)
        self.last_drafted = self.last_draft_kept = 0  # the last generate()'s drafted tokens, those drawn
        self._drafters: dict[str, GrammarDrafter] = {}
        self._punctuation: frozenset[int] | None = None  # made for the first drafter
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

    def _window_intact(self, keep: int) -> int:
        """`keep` if the cache still holds the sliding window before it, else 0. Gemma's sliding-window
        layers keep only the last n_swa positions (swa_full off), so a cache that ran far past `keep`
        has lost what a token at `keep` must attend to; reusing it would be silently wrong (llama-server
        re-evaluates the prompt in this case too)."""
        if keep == 0 or self._n_swa <= 0 or len(self.cached) <= keep:
            return keep
        oldest = self._lc.llama_memory_seq_pos_min(self._memory, 0)
        return keep if oldest <= max(0, keep - self._n_swa) else 0

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
        pin_chars: int = 0,
    ) -> PrefillReport:
        """Evaluate a whole prompt (BOS added), reusing the longest cached prefix unless `fresh`.

        `clips`: 16 kHz mono PCM, or clips already encoded (EncodedAudio), one per media marker in
        `text` (needs a projector). Audio rows already in the cache are matched by their bytes, so a
        clip heard while it was spoken (listening.py) is not evaluated again.
        `audio_rows`: evaluate only up to that many rows of the last clip (listening ahead), in
        whole batches (AUDIO_BATCH): no logits, nothing after them.
        `on_stage` hears "audio_eval_start" / "audio_eval_end" around each audio chunk (a turn's timeline).
        `pin_chars`: the prompt's first characters are a prefix other prompts share (a chat's system
        turn with its tool declarations): with a prefix store, its state is kept after it is first
        evaluated and put back when the cache holds less of it (prefixes.py). Not for a seeded request.
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
            pin = 0
            if fresh:
                self.reset()
                keep = 0
            else:
                limit = end - 1 if audio_rows is None else end  # the last token is evaluated again: fresh logits
                keep = min(common_prefix(self.cached, wanted[:end]), limit)
                keep = self._window_intact(outside_pictures(pieces, rows, keep))
                keep = self._restored(wanted[:limit], keep)
                self.truncate(keep)
                pin = self._pin(text[:pin_chars], bos, wanted, keep, end) if pin_chars else 0
            evaluate = functools.partial(self._evaluate, pieces, rows, on_stage=on_stage)
            if pin:  # evaluate up to the shared prefix, keep its state, then the rest
                first = evaluate(skip=keep, end=pin, logits=False)
                self._snapshot(pin)
                rest = evaluate(skip=pin, end=end, logits=audio_rows is None)
                report = joined(first, rest)
            else:
                report = evaluate(skip=keep, end=end, logits=audio_rows is None)
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

    def _decode_tokens(self, tokens: list[int], *, logits_last: bool, logits_all: bool = False) -> None:
        """Tokens into the cache in batches of n_batch (the same split for the same prompt).
        `logits_all`: every token's logits (a draft checked row by row)."""
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
                batch.logits[i] = logits_all
            batch.logits[len(part) - 1] = logits_all or logits_last and begin + len(part) == len(tokens)
            batch.n_tokens = len(part)
            rc = self._lc.llama_decode(self._ctx, batch)
            if rc != 0:
                self._resync()
                raise GenerationError(
                    f"llama.cpp could not evaluate the prompt (llama_decode returned {rc}); "
                    "the context may be full: raise --ctx or start a new conversation"
                )
            self.cached.extend(part)

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
        draft: bool = True,
    ) -> Iterator[str]:
        """Text pieces sampled after the cache's last logits, until end of generation, a stop string,
        max_tokens or `cancelled()`. `special`: render control tokens as text (all, or these ids: a
        tool call's markup) instead of dropping them. While a grammar holds, the tokens it all but
        dictates ride in the batch of the token before them (drafting.py; `draft=False`: never).
        The outcome is in `self.last_finish` and `self.last_generated` once the iterator ends; a
        model that starts closing ends it as "cancelled" at the next token."""
        sampler = self._token_sampler(sampling, draft=draft)
        stream = TextStream(sampling.stop)
        self.last_finish, self.last_generated = "length", 0
        self.last_drafted = self.last_draft_kept = 0
        life = self.lifetime
        ahead: list[int] = []  # drafted tokens in the cache after the last sampled one, not yet drawn
        row = -1  # the row of the last batch whose logits the next token is drawn from
        try:
            while self.last_generated < sampling.max_tokens:
                if cancelled() or life.closing:
                    self.last_finish = "cancelled"
                    return
                with life.use():
                    token = sampler.sample(row)
                    in_cache = bool(ahead) and token == ahead[0]  # the draft agreed: its row is there
                    if in_cache:
                        ahead.pop(0)
                        row += 1
                        self.last_draft_kept += 1
                    elif ahead:
                        self.truncate(len(self.cached) - len(ahead))
                        ahead = []
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
                if in_cache or self.last_generated >= sampling.max_tokens or life.closing:
                    continue
                with life.use():
                    room = min(sampling.max_tokens - self.last_generated - 1, self.n_ctx - len(self.cached) - 2)
                    ahead = sampler.draft(token, min(room, self.n_batch - 1))
                    self.last_drafted += len(ahead)
                    self._decode_tokens([token, *ahead], logits_last=True, logits_all=bool(ahead))
                    row = 0
            tail = stream.flush()
            if tail:
                yield tail
        finally:
            if ahead and not life.closing:
                self.truncate(len(self.cached) - len(ahead))  # drafted, never drawn: not the reply's
            self.last_refusals = sampler.refusals
            sampler.close()

    def _token_sampler(self, sampling: Sampling, *, draft: bool) -> TokenSampler:
        grammar, trigger = sampling.grammar, None
        if grammar is not None:
            for markup in dict.fromkeys([*grammar.tokens, *([grammar.trigger] if grammar.lazy else [])]):
                ids = self.tokenize(markup, bos=False)
                if len(ids) != 1:
                    raise UsageError(
                        f"this model has no single token for {markup!r}, so it cannot write a tool call: "
                        "tools need a Gemma 4 model (edge-gemma setup)"
                    )
                if markup == grammar.trigger:
                    trigger = ids[0]
        drafter = self._drafter(grammar.gbnf) if grammar is not None and draft else None
        with self.lifetime.use():
            return TokenSampler(sampling, self._vocab, self._ctx, trigger_token=trigger, drafter=drafter)

    def _drafter(self, gbnf: str) -> GrammarDrafter:
        """One drafter per grammar (a server sends the same tools again and again), a few kept."""
        drafter = self._drafters.pop(gbnf, None) or GrammarDrafter(gbnf, self)
        self._drafters[gbnf] = drafter
        while len(self._drafters) > KEPT_DRAFTERS:
            del self._drafters[next(iter(self._drafters))]
        return drafter

    def draft_batches(self, grammar: Grammar, tokens: list[int]) -> list[int]:
        """The decode batches in which a model writing `tokens` under a forced `grammar` gets them
        (drafting.batches_for): what drafting does for a call as a trained model writes it."""
        with self.lifetime.use():
            sampler = grammar_sampler(grammar, self._vocab)
            try:
                return batches_for(self._drafter(grammar.gbnf), sampler, tokens)
            finally:
                self._lc.llama_sampler_free(sampler)

    def punctuation_tokens(self) -> frozenset[int]:
        """Short punctuation runs that are one token in this vocabulary (drafting.py's candidates)."""
        if self._punctuation is None:
            runs = (self.tokenize(text, bos=False) for text in punctuation_runs())
            self._punctuation = frozenset(ids[0] for ids in runs if len(ids) == 1)
        return self._punctuation

    def end_of_generation_tokens(self) -> frozenset[int]:
        with self.lifetime.use():
            ids = (self._lc.llama_vocab_eos(self._vocab), self._lc.llama_vocab_eot(self._vocab))
        return frozenset(int(t) for t in ids if t >= 0)
