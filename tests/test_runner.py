"""The runner on the real llama.cpp build with the real embedded Gemma 3 270M."""

import pytest

from edge.model.chat_format import ChatPrompt
from edge.model.runner import LoadedModel
from edge.settings import RunSettings

SETTINGS = RunSettings(n_ctx=512, n_threads=2, n_threads_batch=2, n_batch=128, n_ubatch=128)


@pytest.fixture(scope="module")
def demo_model(demo_gguf, llama_cpp_available):
    with LoadedModel(demo_gguf, SETTINGS) as model:
        yield model


def test_completion_streams_real_text_and_reports_llama_cpp_rates(demo_model):
    generation = demo_model.complete("The capital of France is", max_tokens=12, temperature=0.0)
    pieces = list(generation)
    assert len(pieces) >= 2 and "".join(pieces) == generation.text
    assert generation.text.strip()
    stats = generation.stats
    n_prompt = len(demo_model.llama.tokenize(b"The capital of France is"))
    assert stats.prompt_tokens == n_prompt  # BOS + the prompt's tokens, all evaluated
    assert 1 <= stats.generated_tokens <= 12
    assert stats.prompt_tps > 0 and stats.generation_tps > 0
    assert 0 < stats.time_to_first_token <= stats.total_seconds


def test_greedy_completion_is_repeatable(demo_model):
    first = demo_model.complete("One, two, three,", max_tokens=8, temperature=0.0).run()
    second = demo_model.complete("One, two, three,", max_tokens=8, temperature=0.0).run()
    assert first == second and first.strip()


def test_chat_uses_the_gemma_turn_fallback_and_stops_at_end_of_turn(demo_model):
    messages = [{"role": "user", "content": "Say hello."}]
    prompt = demo_model.chat_prompt(messages)
    assert isinstance(prompt, ChatPrompt) and prompt.format_name == "gemma-turns"
    tokens = demo_model.llama.tokenize(prompt.text.encode(), special=True)
    assert tokens.count(demo_model.llama.token_bos()) == 1  # exactly one BOS, added by llama.cpp
    generation = demo_model.chat(messages, max_tokens=24, temperature=0.0)
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
        generation = model.complete("Hello", max_tokens=3, temperature=0.0)
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
        generation = model.complete("Hello", max_tokens=3, temperature=0.0)
        assert (
            generation.run().strip() and generation.stats.generated_tokens >= 2
        )  # the last token is sampled, not evaluated
