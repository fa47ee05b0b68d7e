"""How the next token is chosen: Gemma's recommended sampling, seeds, and an optional grammar.

`Sampling` is the one description of a request's sampling; `sampler_chain` turns it into
llama.cpp's sampler chain (the only place one is built).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, replace

from edge.errors import UsageError


@dataclass(frozen=True)
class Grammar:
    """A GBNF grammar that constrains decoding (built by the tool-call code).

    Lazy when it has triggers: the grammar starts only once the output matches a trigger pattern
    (a regex over the text so far, as llama-server's tool calls use) or a trigger token appears.
    """

    gbnf: str
    root: str = "root"
    trigger_patterns: tuple[str, ...] = ()
    trigger_tokens: tuple[int, ...] = ()

    @property
    def lazy(self) -> bool:
        return bool(self.trigger_patterns or self.trigger_tokens)


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


def sampler_chain(sampling: Sampling, vocab):
    """A new llama.cpp sampler chain for `sampling`; the caller frees it (llama_sampler_free)."""
    import llama_cpp as lc

    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    if sampling.grammar is not None:
        # First in the chain: every later stage only ever sees tokens the grammar allows.
        lc.llama_sampler_chain_add(chain, _grammar_sampler(sampling.grammar, vocab))
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


def _grammar_sampler(grammar: Grammar, vocab):
    import llama_cpp as lc

    if grammar.lazy:
        patterns = (ctypes.c_char_p * max(1, len(grammar.trigger_patterns)))(
            *[p.encode() for p in grammar.trigger_patterns]
        )
        tokens = (lc.llama_token * max(1, len(grammar.trigger_tokens)))(*grammar.trigger_tokens)
        sampler = lc.llama_sampler_init_grammar_lazy_patterns(
            vocab,
            grammar.gbnf.encode(),
            grammar.root.encode(),
            patterns,
            len(grammar.trigger_patterns),
            tokens,
            len(grammar.trigger_tokens),
        )
    else:
        sampler = lc.llama_sampler_init_grammar(vocab, grammar.gbnf.encode(), grammar.root.encode())
    if not sampler:
        raise UsageError("llama.cpp rejected the grammar built for this request (see --llama-log for where)")
    return sampler
