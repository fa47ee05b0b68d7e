"""Drafting the tokens a grammar all but dictates, so they are checked in one batch.

Inside a tool call most tokens are syntax: after `<|tool_call>` come `call`, `:`, `H`, `ass` (every Home
Assistant intent starts "Hass"), after a key its `:` and `<|"|>`, after `}` the closing marker. One at
a time each is a whole decode step; as a draft they ride in the batch of the token before them
(core.Engine.generate), like a speculative decoder's draft. The sampler still draws every position
itself, with the same chain and seed, and a draft is kept only as far as it agrees: drafting changes
which tokens are evaluated together, never how one is chosen (as core.py's seeds note says, a row's
logits can differ in the last bits with its batch). A wrong draft costs only its rows in the batch.

Where a draft comes from: a copy of the grammar's state is asked about a small set of candidate tokens:
the tokens of the grammar's own literals, the short punctuation tokens they merge into (`:[`, `]}`)
and the end-of-generation tokens. A position is drafted when the candidates the grammar allows there
are one token, or one token and longer ones that start with it (`{` beside `{}`, `:` beside `:[`): that
one is drafted, as every way on starts with it (a model writing `{}` as one token refuses it). A string's
content allows many candidates, and the draft stops; the drafter is asked again only after a token that
may end the content (`Drafting`). Text outside the grammar never asks.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import re

import numpy as np

from edge.errors import UsageError

DRAFT_LIMIT = 8  # tokens drafted at most after one sampled token
MAX_PREFIXED = 4  # more allowed candidates than this are a choice, whatever their texts
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


class TokenCheck:
    """A grammar's verdict on one token (a pass over that token alone, not the vocabulary): the sampler's
    check of each drawn token, and the drafter's of a call's given tokens."""

    def __init__(self) -> None:
        import llama_cpp as lc

        self._lc = lc
        self._one = (lc.llama_token_data * 1)()
        self._array = lc.llama_token_data_array(self._one, 1, -1, False)

    def allows(self, grammar, token: int) -> bool:
        one = self._one[0]
        one.id, one.logit, one.p = token, 0.0, 0.0
        self._array.size, self._array.selected = 1, -1
        self._lc.llama_sampler_apply(grammar, ctypes.byref(self._array))
        return one.logit != float("-inf")


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
        self._array = lc.llama_token_data_array(
            self._candidates.ctypes.data_as(ctypes.POINTER(lc.llama_token_data)), len(self._ids), -1, False
        )

    def draft(self, grammar, limit: int) -> tuple[list[int], bool]:
        """The tokens the grammar all but dictates from its state now (a copy is advanced, never it),
        and whether the next position is open: many candidates allowed (a string's content, a number)."""
        first, open_ended = self._only_candidate(grammar) if limit > 0 else (None, False)
        if first is None:
            return [], open_ended  # asking changed nothing: no copy made
        lc = self._lc
        state = lc.llama_sampler_clone(grammar)
        try:
            out = [first]
            while len(out) < limit:
                lc.llama_sampler_accept(state, out[-1])
                token, _ = self._only_candidate(state)
                if token is None:
                    break
                out.append(token)
            return out, False
        finally:
            lc.llama_sampler_free(state)

    def is_candidate(self, token: int) -> bool:
        return token in self._text

    def _only_candidate(self, state) -> tuple[int | None, bool]:
        """The candidate every way on from this state starts with, or None (a choice, or the end); and
        whether many candidates are allowed here."""
        candidates = self._candidates
        candidates["id"] = self._ids
        candidates["logit"] = 0.0
        self._array.size, self._array.selected, self._array.sorted = len(self._ids), -1, False
        self._lc.llama_sampler_apply(state, ctypes.byref(self._array))
        allowed = candidates["id"][candidates["logit"] != -np.inf]
        if len(allowed) > MAX_PREFIXED:
            return None, True  # many: a string's content, a number, a choice of keys
        if not len(allowed):
            return None, False
        texts = {self._text[int(t)]: int(t) for t in allowed}
        shortest = min(texts, key=len)
        if not all(text.startswith(shortest) for text in texts) or texts[shortest] in self._end:
            return None, False  # a choice (one of several names), or the end: the model's to make
        return texts[shortest], False


class Drafting:
    """One reply's drafting: `after(grammar, token)` drafts after each token drawn under the grammar.

    Inside free text (a string's content) every token would find many candidates allowed and draft
    nothing, yet asking costs a pass over the candidates: so once a position is open, the drafter is
    asked again only after a candidate token (a quote, a comma, a brace: what can end the text)."""

    def __init__(self, drafter: GrammarDrafter, limit: int = DRAFT_LIMIT):
        self.drafter, self.limit = drafter, limit
        self._open = False

    def after(self, grammar, token: int, room: int) -> list[int]:
        if self._open and not self.drafter.is_candidate(token):
            return []
        draft, self._open = self.drafter.draft(grammar, min(self.limit, room))
        return draft


def batches_for(drafter: GrammarDrafter, grammar, tokens: list[int], limit: int = DRAFT_LIMIT) -> list[int]:
    """The batches a model that writes `tokens` (from the grammar's start) decodes them in: each is a
    drawn token and the draft after it, as Engine.generate forms them. For measuring and testing the
    drafter on a call as a trained model writes it, whatever random weights would draw."""
    import llama_cpp as lc

    sizes, i, drafting, check = [], 0, Drafting(drafter, limit), TokenCheck()
    while i < len(tokens):
        if not check.allows(grammar, tokens[i]):  # llama.cpp aborts the process on a refused token
            raise UsageError(f"token {i} ({tokens[i]}) is not one this grammar allows there")
        lc.llama_sampler_accept(grammar, tokens[i])
        i += 1
        draft = drafting.after(grammar, tokens[i - 1], room=limit)
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
