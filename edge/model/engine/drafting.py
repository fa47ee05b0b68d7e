"""Drafting the tokens a grammar all but dictates, so they are checked in one batch.

Inside a tool call most tokens are syntax: after `<|tool_call>` come `call`, `:`, `H`, `ass` (every Home
Assistant intent starts "Hass"), after a key its `:` and `<|"|>`, after `}` the closing marker. One at
a time each is a whole decode step; as a draft they ride in the batch of the token before them
(core.Engine.generate), like a speculative decoder's draft. The sampler still draws every position
itself, with the same chain and seed, and a draft is kept only as far as it agrees, so the reply is
the one token-by-token decoding writes; a wrong draft costs only its rows in the batch.

Where a draft comes from: a copy of the grammar's state is asked about a small set of candidate tokens:
the tokens of the grammar's own literals, the short punctuation tokens they merge into (`:[`, `]}`)
and the end-of-generation tokens. A position is drafted when the candidates the grammar allows there
are one token, or one token and longer ones that start with it (`{` beside `{}`, `:` beside `:[`): that
one is drafted, as every way on starts with it (a model writing `{}` as one token refuses it). A string's
content allows many candidates, and the draft stops. Text outside the grammar never asks.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import re

import numpy as np

from edge.errors import UsageError

DRAFT_LIMIT = 8  # tokens drafted at most after one sampled token
# Characters grammars put between literals; short runs of them are often one token (":[", "]}", "},{").
_PUNCTUATION = '{}[]:,"'
_GBNF_LITERAL = re.compile(r'"((?:[^"\\]|\\.)*)"')
_GBNF_TOKEN = re.compile(r"(?<!\S)(!?)(<[^\s<>]+>)(?!\S)")  # <|"|>: one token; !<...>: any token but it
_TOKEN_ID = re.compile(r"<\[(\d+)\]>")  # a token named by its id
_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])


def gbnf_literals(gbnf: str) -> list[str]:
    """The texts a GBNF grammar spells out: its string literals (JSON escapes) and the tokens it names
    (`<|"|>`; not the ones it excludes), in order, without duplicates."""
    tokens = [text for negated, text in _GBNF_TOKEN.findall(gbnf) if not negated]
    strings = _GBNF_LITERAL.findall(_GBNF_TOKEN.sub(" ", gbnf))
    found = dict.fromkeys([*tokens, *(json.loads(f'"{body}"') for body in strings)])
    return [text for text in found if text]


class GrammarDrafter:
    """Drafts after a grammar's current state: `draft(grammar, limit)` -> token ids (maybe none)."""

    def __init__(self, gbnf: str, engine):
        import llama_cpp as lc

        self._lc = lc
        ids: set[int] = set()
        for text in gbnf_literals(gbnf):
            by_id = _TOKEN_ID.fullmatch(text)
            ids.update([int(by_id[1])] if by_id else engine.tokenize(text, bos=False))
        ids.update(engine.punctuation_tokens())
        self._end = engine.end_of_generation_tokens()
        ids.update(self._end)
        self._ids = np.array(sorted(ids), dtype=np.int32)
        self._text = {int(t): engine.token_bytes(int(t), special=True) for t in self._ids}
        self._candidates = np.zeros(len(self._ids), dtype=_TOKEN_DATA)
        self._one = np.zeros(1, dtype=_TOKEN_DATA)
        self._array = lc.llama_token_data_array(
            self._candidates.ctypes.data_as(ctypes.POINTER(lc.llama_token_data)), len(self._ids), -1, False
        )

    def draft(self, grammar, limit: int = DRAFT_LIMIT) -> list[int]:
        """The tokens the grammar all but dictates from its state now (its copy is advanced, not it)."""
        if limit <= 0:
            return []
        lc = self._lc
        state = lc.llama_sampler_clone(grammar)
        try:
            out: list[int] = []
            while len(out) < limit:
                token = self._only_candidate(state)
                if token is None or token in self._end:
                    break
                out.append(token)
                lc.llama_sampler_accept(state, token)
            return out
        finally:
            lc.llama_sampler_free(state)

    def allows(self, grammar, token: int) -> bool:
        """The grammar allows `token` next (a check of that one token)."""
        one = self._one
        one[0]["id"], one[0]["logit"] = token, 0.0
        array = self._lc.llama_token_data_array(
            one.ctypes.data_as(ctypes.POINTER(self._lc.llama_token_data)), 1, -1, False
        )
        self._lc.llama_sampler_apply(grammar, ctypes.byref(array))
        return bool(one[0]["logit"] != -np.inf)

    def _only_candidate(self, state) -> int | None:
        candidates = self._candidates
        candidates["id"] = self._ids
        candidates["logit"] = 0.0
        self._array.size, self._array.selected, self._array.sorted = len(self._ids), -1, False
        self._lc.llama_sampler_apply(state, ctypes.byref(self._array))
        allowed = [self._text[int(t)] for t in candidates["id"][candidates["logit"] != -np.inf]]
        if not allowed:
            return None
        shortest = min(allowed, key=len)
        if not all(text.startswith(shortest) for text in allowed):
            return None  # a choice (one of several names, a string's content): the model's to make
        return next(int(t) for t in candidates["id"] if self._text[int(t)] == shortest)


def batches_for(drafter: GrammarDrafter, grammar, tokens: list[int], limit: int = DRAFT_LIMIT) -> list[int]:
    """The batches a model that writes `tokens` (from the grammar's start) decodes them in: each is a
    drawn token and the draft after it, as Engine.generate forms them. For measuring and testing the
    drafter on a call as a trained model writes it, whatever random weights would draw."""
    import llama_cpp as lc

    sizes, i = [], 0
    while i < len(tokens):
        if not drafter.allows(grammar, tokens[i]):  # llama.cpp aborts the process on a refused token
            raise UsageError(f"token {i} ({tokens[i]}) is not one this grammar allows there")
        lc.llama_sampler_accept(grammar, tokens[i])
        i += 1
        draft = drafter.draft(grammar, limit)
        sizes.append(1 + len(draft))
        for token in draft:
            if i == len(tokens) or tokens[i] != token:
                break
            lc.llama_sampler_accept(grammar, token)
            i += 1
    return sizes


def punctuation_runs(max_len: int = 3) -> list[str]:
    """Every run of grammar punctuation up to `max_len` characters: what a tokenizer may merge."""
    return ["".join(p) for n in range(2, max_len + 1) for p in itertools.product(_PUNCTUATION, repeat=n)]
