"""Drafting under a grammar (engine/drafting.py): the tokens a call's syntax dictates, checked in batches.

The batches the drafter forms for a call depend only on the tokenizer, the grammar and the drafter, so
they are checked exactly on the real Gemma 4 tokenizer; decoding with drafts on random weights checks
that what was drafted and not drawn leaves the cache, and that the call still parses.
"""

from __future__ import annotations

import llama_cpp
import pytest
from conftest import FIXTURES

from edge.assist.ha_intents import HA_INTENTS
from edge.errors import UsageError
from edge.model.engine import GEMMA_SAMPLING, LoadedModel
from edge.model.engine.drafting import gbnf_literals
from edge.model.tool_calls import MARKUP_TOKENS, split_reply
from edge.model.tool_grammar import call_grammar
from edge.settings import RunSettings

TURN_ON = '<|tool_call>call:HassTurnOn{name:<|"|>kitchen light<|"|>}<tool_call|>'


@pytest.fixture(scope="module")
def tiny(llama_cpp_available):
    settings = RunSettings(n_ctx=4096, n_threads=2, n_threads_batch=2, n_batch=512, n_ubatch=512)
    with LoadedModel(FIXTURES / "gemma4-tiny" / "tiny-gemma-4-E2B.gguf", settings) as loaded:
        yield loaded


def test_a_grammars_literals_and_named_tokens_are_found():
    gbnf = 'root ::= <|tool_call> "call:a\\"b" x !<tool_call|> [^<] | "<" [^|] <|"|>'
    assert gbnf_literals(gbnf) == ["<|tool_call>", '<|"|>', 'call:a"b', "<"]


def test_a_home_assistant_call_is_decoded_in_seven_batches_not_sixteen(tiny):
    grammar = call_grammar(HA_INTENTS, lazy=False, parallel=False)
    tokens = tiny.engine.tokenize(TURN_ON, bos=False)
    assert len(tokens) == 16
    # <|tool_call> + call : H ass | Turn | On + { | name + : <|"|> | kitchen | light | <|"|> + } <tool_call|>
    assert tiny.engine.draft_batches(grammar, tokens) == [5, 1, 2, 3, 1, 1, 3]


def test_a_token_the_grammar_refuses_is_a_clear_error_not_an_abort(tiny):
    grammar = call_grammar(HA_INTENTS, lazy=False, parallel=False)
    tokens = tiny.engine.tokenize(TURN_ON.replace("HassTurnOn", "HassExplode"), bos=False)
    with pytest.raises(UsageError, match="not one this grammar allows"):
        tiny.engine.draft_batches(grammar, tokens)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_drafts_not_drawn_leave_the_cache_and_the_call_parses(tiny, seed):
    grammar = call_grammar(HA_INTENTS, lazy=False, parallel=False)
    prompt = tiny.chat_prompt([{"role": "user", "content": "Turn on the kitchen light."}]).text
    sampling = GEMMA_SAMPLING.with_(max_tokens=120, seed=seed, grammar=grammar)
    generation = tiny.complete(prompt, sampling, special=frozenset(_markup_ids(tiny)))
    text = generation.run()
    engine = tiny.engine
    assert engine.last_drafted > engine.last_draft_kept  # random weights spell words in pieces: drafts refused
    # The cache holds the prompt and the reply's tokens (all of them when the end-of-generation token
    # came after them, all but the last when max_tokens did), and nothing drafted beyond them.
    reply = engine.cached[generation.prefill.prompt_tokens :]
    stopped = generation.stats.finish_reason == "stop"
    assert len(reply) == generation.stats.generated_tokens - (0 if stopped else 1)
    assert b"".join(engine.token_bytes(t, special=True) for t in reply).decode() in text
    memory = llama_cpp.llama_get_memory(engine._ctx)
    assert llama_cpp.llama_memory_seq_pos_max(memory, 0) + 1 == len(engine.cached)
    if stopped:  # a call random weights closed: it parses
        calls = split_reply(text).calls
        assert len(calls) == 1 and calls[0].name.startswith("Hass")
        assert engine.last_draft_kept >= 1  # <tool_call|> after the closing brace: one token allowed, drawn as drafted


def test_without_a_grammar_nothing_is_drafted(tiny):
    prompt = tiny.chat_prompt([{"role": "user", "content": "Tell me a story."}]).text
    tiny.complete(prompt, GEMMA_SAMPLING.with_(max_tokens=64, seed=4)).run()
    assert tiny.engine.last_drafted == 0


def _markup_ids(loaded) -> list[int]:
    return [loaded.engine.tokenize(m, bos=False)[0] for m in MARKUP_TOKENS]
