"""Chat prompt formats: GGUF template, Gemma turns for template-less Gemma models, raw otherwise."""

from dataclasses import replace

import pytest
from gguf_writer import write_minimal_gguf

from edge.model.chat_format import build_chat_prompt
from edge.model.gguf import inspect_gguf

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Capital of France?"},
]


def test_embedded_gemma3_without_template_gets_gemma_turns(demo_gguf):
    info = inspect_gguf(demo_gguf)
    assert info.chat_template is None  # a base model: the reason this fallback exists
    prompt = build_chat_prompt(info, CONVERSATION)
    assert prompt.format_name == "gemma-turns"
    assert prompt.text == (
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nCapital of France?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    assert prompt.stop == ["<end_of_turn>"] and "no chat template" in prompt.notice
    assert not prompt.text.startswith("<bos>")  # llama.cpp adds the BOS when tokenizing


def test_gemma4_without_template_gets_gemma4_turns(tmp_path):
    info = inspect_gguf(write_minimal_gguf(tmp_path / "g4.gguf", "gemma4"))
    prompt = build_chat_prompt(info, CONVERSATION)
    assert prompt.text.startswith("<|turn>system\nBe brief.<turn|>\n<|turn>user\nHi<turn|>\n")
    assert prompt.text.endswith("<|turn>user\nCapital of France?<turn|>\n<|turn>model\n")
    assert prompt.stop == ["<turn|>"]


def test_non_gemma_without_template_is_raw_completion_with_notice(tmp_path):
    info = inspect_gguf(write_minimal_gguf(tmp_path / "l.gguf", "llama"))
    prompt = build_chat_prompt(info, CONVERSATION)
    assert prompt.format_name == "raw" and prompt.text == "Capital of France?"
    assert "plain completion" in prompt.notice


def test_gguf_template_is_rendered_without_a_second_bos(tmp_path):
    info = inspect_gguf(write_minimal_gguf(tmp_path / "t.gguf", "gemma3"))
    template = (
        "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n"
        "{{ m['content'] }}<end_of_turn>\n{% endfor %}"
        "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
    )
    info = replace(info, metadata={**info.metadata, "tokenizer.chat_template": template})
    prompt = build_chat_prompt(info, CONVERSATION[1:2])
    assert prompt.format_name == "gguf-template"
    assert prompt.text == "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    assert "<end_of_turn>" in prompt.stop


def test_a_chat_must_end_with_the_user(tmp_path):
    info = inspect_gguf(write_minimal_gguf(tmp_path / "g.gguf", "gemma3"))
    with pytest.raises(ValueError):
        build_chat_prompt(info, CONVERSATION[:3])
