"""How the next token is chosen: Gemma's recommended sampling, seeds, and an optional grammar.

`Sampling` is the one description of a request's sampling; `sampler_chain` turns it into
llama.cpp's sampler chain (the only place one is built), and `TokenSampler` draws each token with it,
checking a grammar's verdict on the drawn token only.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, replace

import numpy as np

from edge.errors import GenerationError, UsageError
from edge.model.engine.drafting import Drafting, TokenCheck


@dataclass(frozen=True)
class Grammar:
    """A GBNF grammar that constrains decoding (built by the tool-call code).

    Lazy when it has a `trigger`: text is free until the model writes that control token (one token
    in the vocabulary, e.g. Gemma 4's `<|tool_call>`), and the grammar holds from that token on.
    `tokens`: control tokens the grammar names as tokens (GBNF's `<...>`), each one token in the
    vocabulary of a model that can follow it (the trigger is checked too).
    """

    gbnf: str
    root: str = "root"
    trigger: str | None = None
    tokens: tuple[str, ...] = ()

    @property
    def lazy(self) -> bool:
        return self.trigger is not None


@dataclass(frozen=True)
class Sampling:
    """A request's sampling. The defaults are Gemma's recommended settings (model card:
    temperature 1.0, top_k 64, top_p 0.95); temperature 0 is greedy.

    `seed`: None draws a fresh random seed. With a seed, the engine evaluates the prompt the same
    way every time (from an empty cache), so the same seed and request give the same reply.
    """

    temperature: float = 1.0
    top_k: int = 64
    top_p: float = 0.95
    min_p: float = 0.0
    seed: int | None = None
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    grammar: Grammar | None = None

    def with_(self, **changes) -> Sampling:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


GEMMA_SAMPLING = Sampling()
GREEDY = Sampling(temperature=0.0)
RANDOM_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: llama.cpp draws one


def sampler_chain(sampling: Sampling):
    """A new llama.cpp sampler chain for `sampling` (no grammar); the caller frees it (llama_sampler_free)."""
    import llama_cpp as lc

    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    if sampling.greedy:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
        return chain
    if sampling.top_k > 0:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_k(sampling.top_k))
    if sampling.top_p < 1.0:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(sampling.top_p, 1))
    if sampling.min_p > 0.0:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_min_p(sampling.min_p, 1))
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(sampling.temperature))
    seed = RANDOM_SEED if sampling.seed is None else sampling.seed & 0xFFFFFFFF
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed))
    return chain


# llama_token_data, as numpy lays it out: the whole vocabulary as candidates in one array.
_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])


class TokenSampler:
    """Chooses each next token: the chain (top-k, top-p, temperature, seeded draw) over the logits,
    then the grammar, if any, checks that one token. Only when it refuses is the whole vocabulary
    filtered by the grammar and drawn from again (llama.cpp's common sampler works this way); a
    grammar first in the chain would check every token of the vocabulary at every step.

    A lazy grammar costs nothing until its trigger token is drawn: a reply that calls no tool decodes
    at the speed of one with no tools offered. `refusals` counts the full-vocabulary passes.
    """

    def __init__(self, sampling: Sampling, vocab, ctx, *, trigger_token: int | None = None, drafter=None):
        import llama_cpp as lc

        self._lc, self._ctx = lc, ctx
        if sampling.grammar is not None and sampling.grammar.lazy and trigger_token is None:
            raise UsageError("a lazy grammar needs its trigger's token id")
        # The grammar first: a grammar llama.cpp refuses then leaves no chain behind to free.
        self._grammar = grammar_sampler(sampling.grammar, vocab) if sampling.grammar is not None else None
        self._chain = sampler_chain(sampling)
        self._trigger = trigger_token
        self._waiting = self._grammar is not None and sampling.grammar.lazy
        self._n_vocab = lc.llama_vocab_n_tokens(vocab)
        self._check = TokenCheck()
        self._candidates: np.ndarray | None = None  # the whole vocabulary, made at the first refusal
        self._drafting = Drafting(drafter) if drafter is not None else None  # drafting.py, for this reply
        self.refusals = 0

    @property
    def constrained(self) -> bool:
        """The grammar holds now (a forced call, or a lazy one after its trigger)."""
        return self._grammar is not None and not self._waiting

    def sample(self, row: int = -1) -> int:
        """The next token after the logits of the last batch's `row` (-1: its last)."""
        lc = self._lc
        token = lc.llama_sampler_sample(self._chain, self._ctx, row)  # draws and accepts into the chain
        if self._grammar is None:
            return token
        if self._waiting:
            if token != self._trigger:
                return token
            self._waiting = False
        elif not self._check.allows(self._grammar, token):
            token = self._resample(row)
        lc.llama_sampler_accept(self._grammar, token)
        return token

    def draft(self, after: int, limit: int) -> list[int]:
        """Tokens the grammar all but dictates after `after`, the token just drawn (drafting.py): none
        outside the grammar."""
        if self._drafting is None or not self.constrained:
            return []
        return self._drafting.after(self._grammar, after, room=limit)

    def _resample(self, row: int) -> int:
        """Draw again from the whole vocabulary, the grammar first (every later stage sees only tokens it allows)."""
        lc = self._lc
        self.refusals += 1
        if self._candidates is None:
            self._candidates = np.zeros(self._n_vocab, dtype=_TOKEN_DATA)
        candidates = self._candidates
        logits = lc.llama_get_logits_ith(self._ctx, row)
        candidates["id"] = np.arange(self._n_vocab, dtype=np.int32)
        candidates["logit"] = np.ctypeslib.as_array(logits, shape=(self._n_vocab,))
        candidates["p"] = 0.0
        array = lc.llama_token_data_array(
            candidates.ctypes.data_as(ctypes.POINTER(lc.llama_token_data)), self._n_vocab, -1, False
        )
        lc.llama_sampler_apply(self._grammar, ctypes.byref(array))
        lc.llama_sampler_apply(self._chain, ctypes.byref(array))
        if not 0 <= array.selected < array.size:
            raise GenerationError("the grammar allows no token here (the reply cannot go on)")
        return int(candidates["id"][array.selected])

    def close(self) -> None:
        for sampler in (self._chain, self._grammar):
            if sampler is not None:
                self._lc.llama_sampler_free(sampler)
        self._chain = self._grammar = None


def grammar_sampler(grammar: Grammar, vocab):
    import llama_cpp as lc

    # Never llama.cpp's lazy grammar: its trigger check runs inside the grammar every token, and once
    # triggered it filters the whole vocabulary every token. TokenSampler triggers and checks instead.
    sampler = lc.llama_sampler_init_grammar(vocab, grammar.gbnf.encode(), grammar.root.encode())
    if not sampler:
        raise UsageError("llama.cpp rejected the grammar built for this request (see --llama-log for where)")
    return sampler
