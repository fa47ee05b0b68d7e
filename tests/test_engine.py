"""The engine and loader on the real llama.cpp build with the real embedded Gemma 3 270M."""

import pytest

from edge.model.chat_format import ChatPrompt
from edge.model.engine import GEMMA_SAMPLING, GREEDY, LoadedModel
from edge.model.engine.text import TextStream
from edge.settings import RunSettings

SETTINGS = RunSettings(n_ctx=512, n_threads=2, n_threads_batch=2, n_batch=128, n_ubatch=128)


@pytest.fixture(scope="module")
def demo_model(demo_gguf, llama_cpp_available):
    with LoadedModel(demo_gguf, SETTINGS) as model:
        yield model


def test_completion_streams_real_text_and_reports_llama_cpp_rates(demo_model):
    generation = demo_model.complete("The capital of France is", GREEDY.with_(max_tokens=12))
    pieces = list(generation)
    assert len(pieces) >= 2 and "".join(pieces) == generation.text
    assert generation.text.strip()
    stats = generation.stats
    n_prompt = len(demo_model.llama.tokenize(b"The capital of France is"))
    assert stats.prompt_tokens == n_prompt  # BOS + the prompt's tokens
    assert 1 <= stats.generated_tokens <= 12
    assert stats.prompt_tps is None  # 7 tokens are too few to time: no made-up rate
    assert stats.generation_tps > 0
    assert 0 < stats.time_to_first_token <= stats.total_seconds


def test_greedy_completion_is_repeatable(demo_model):
    first = demo_model.complete("One, two, three,", GREEDY.with_(max_tokens=8)).run()
    second = demo_model.complete("One, two, three,", GREEDY.with_(max_tokens=8)).run()
    assert first == second and first.strip()


def test_chat_uses_the_gemma_turn_fallback_and_stops_at_end_of_turn(demo_model):
    messages = [{"role": "user", "content": "Say hello."}]
    prompt = demo_model.chat_prompt(messages)
    assert isinstance(prompt, ChatPrompt) and prompt.format_name == "gemma-turns"
    tokens = demo_model.llama.tokenize(prompt.text.encode(), special=True)
    assert tokens.count(demo_model.llama.token_bos()) == 1  # exactly one BOS, added by llama.cpp
    generation = demo_model.chat(messages, GREEDY.with_(max_tokens=24))
    text = generation.run()
    assert "<end_of_turn>" not in text
    assert generation.stats.generated_tokens >= 1


@pytest.mark.parametrize(
    "load_mode, lazy_mode, expected",
    [
        ("mmap", "off", 1),
        ("none", "off", 0),
        ("mmap", "on", 1),
        ("direct-io", "off", 4),
    ],
)
def test_load_modes_reach_llama_cpp(demo_gguf, llama_cpp_available, load_mode, lazy_mode, expected):
    settings = RunSettings(n_ctx=256, n_threads=1, n_threads_batch=1, load_mode=load_mode, lazy_mode=lazy_mode)
    with LoadedModel(demo_gguf, settings) as model:
        assert model.llama.model_params.load_mode == expected
        assert model.llama.model_params.lazy_mode == {"off": 0, "on": 2}[lazy_mode]
        generation = model.complete("Hello", GREEDY.with_(max_tokens=3))
        assert (
            generation.run().strip() and generation.stats.generated_tokens >= 2
        )  # the last token is sampled, not evaluated
    # The patch is undone: a plain llama_cpp.Llama is unaffected afterwards.
    import llama_cpp.llama as llama_module

    assert llama_module.internals.LlamaModel.__name__ == "LlamaModel"


def test_kv_cache_types_and_context_are_applied(demo_gguf, llama_cpp_available):
    settings = RunSettings(n_ctx=1024, n_threads=1, n_threads_batch=1, type_k="q8_0", type_v="q8_0", flash_attn=True)
    with LoadedModel(demo_gguf, settings) as model:
        assert model.llama.n_ctx() == 1024
        assert model.llama.context_params.type_k == 8 and model.llama.context_params.type_v == 8
        generation = model.complete("Hello", GREEDY.with_(max_tokens=3))
        assert (
            generation.run().strip() and generation.stats.generated_tokens >= 2
        )  # the last token is sampled, not evaluated


# --- the engine: prefix reuse, seeds, stops, cancellation ---------------------------------------

LONG_PROMPT = "A list of the planets of the solar system, from the sun outwards, with one fact about each: " * 3


def test_a_repeated_prompt_reuses_all_but_its_last_token(demo_model):
    first = demo_model.complete(LONG_PROMPT, GREEDY.with_(max_tokens=4))
    first.run()
    again = demo_model.complete(LONG_PROMPT + " Mercury", GREEDY.with_(max_tokens=4))
    again.run()
    p = again.stats.prefill
    a, b = (demo_model.engine.tokenize(t, bos=True) for t in (LONG_PROMPT, LONG_PROMPT + " Mercury"))
    shared = next(i for i, (x, y) in enumerate(zip(a + [-2], b)) if x != y)
    assert p.reused == shared >= first.stats.prompt_tokens - 1  # the earlier prompt came from the cache
    assert p.evaluated == p.prompt_tokens - p.reused >= 1
    assert p.tps is None  # a handful of new tokens: no rate is claimed


def test_the_same_seed_repeats_after_other_requests_and_other_seeds_differ(demo_model):
    warm = GEMMA_SAMPLING.with_(max_tokens=24, temperature=1.5)
    one = demo_model.complete(LONG_PROMPT, warm.with_(seed=11)).run()
    demo_model.complete(LONG_PROMPT + " Venus is", warm).run()  # fills the cache with something else
    demo_model.complete("Hello there", warm.with_(seed=5)).run()
    again = demo_model.complete(LONG_PROMPT, warm.with_(seed=11))
    assert again.run() == one
    assert again.stats.prefill.reused == 0  # a seeded request is evaluated from an empty cache
    others = {demo_model.complete(LONG_PROMPT, warm.with_(seed=seed)).run() for seed in (1, 2, 3)}
    assert len(others | {one}) > 1


def test_stop_strings_end_the_reply_and_never_reach_the_text(demo_model):
    free = demo_model.complete("1, 2, 3, 4, 5,", GREEDY.with_(max_tokens=16)).run()
    assert " 8" in free  # the model counts on, greedily
    stopped = demo_model.complete("1, 2, 3, 4, 5,", GREEDY.with_(max_tokens=16, stop=(" 8",)))
    text = stopped.run()
    assert text == free[: free.index(" 8")] and stopped.stats.finish_reason == "stop"


def test_max_tokens_and_cancellation_end_a_reply(demo_model):
    capped = demo_model.complete("Once upon a time", GREEDY.with_(max_tokens=5))
    capped.run()
    assert capped.stats.generated_tokens == 5 and capped.stats.finish_reason == "length"
    count = iter(range(100))
    cancelled = demo_model.complete("Once upon a time", GREEDY.with_(max_tokens=50), cancelled=lambda: next(count) >= 3)
    cancelled.run()
    assert cancelled.stats.generated_tokens == 3 and cancelled.stats.finish_reason == "cancelled"


def test_truncate_rolls_the_cache_back_exactly(demo_model):
    engine = demo_model.engine
    report = engine.prefill(LONG_PROMPT)
    engine.truncate(10)
    assert len(engine.cached) == 10
    again = engine.prefill(LONG_PROMPT)
    assert again.reused == 10 and again.evaluated == report.prompt_tokens - 10


@pytest.mark.parametrize(
    "pieces, stops, shown",
    [
        ([b"Hel", b"lo wor", b"ld"], (), "Hello world"),
        ([b"one <e", b"nd> two"], ("<end>",), "one "),  # a stop split across tokens never leaks
        ([b"a <", b"b"], ("<end>",), "a <b"),  # a held-back prefix that was not a stop is released
        ([b"caf\xc3", b"\xa9 ok"], (), "caf\u00e9 ok"),  # UTF-8 split across tokens
    ],
)
def test_text_stream_releases_text_and_cuts_stops(pieces, stops, shown):
    stream = TextStream(stops)
    out = "".join(stream.push(p) for p in pieces) + stream.flush()
    assert out == shown == stream.text
