"""The pure-Python GGUF check that runs before llama.cpp can abort on a bad file."""

import pytest
from gguf_writer import write_minimal_gguf

from edge.errors import ModelFileError
from edge.model.gguf import check_loadable_model, inspect_gguf


def test_the_real_demo_model_parses_completely(demo_gguf):
    info = check_loadable_model(demo_gguf)
    assert info.architecture == "gemma3"
    assert info.is_gemma and not info.is_projector
    assert info.arch_value("block_count") == 18
    assert info.arch_value("attention.sliding_window") == 512
    assert len(info.tensors) > 100
    # Every byte the tensor table promises is in the file, and little else is.
    end = max(info.data_offset + t.offset + t.n_bytes for t in info.tensors)
    assert 0 <= info.file_size - end < 64
    assert "tokenizer.ggml.tokens" in info.skipped_keys


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    with pytest.raises(ModelFileError, match="is empty"):
        inspect_gguf(path)


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(ModelFileError, match="model file not found: .*edge-gemma setup"):
        inspect_gguf(tmp_path / "nope.gguf")


def test_not_a_gguf(tmp_path):
    path = tmp_path / "notes.gguf"
    path.write_text("hello, I am a text file\n" * 10)
    with pytest.raises(ModelFileError, match="is not a GGUF file"):
        inspect_gguf(path)


@pytest.mark.parametrize("keep_bytes", [10, 5_000, 4_000_000, -1_000_000])
def test_truncated_demo_model_is_refused_before_llama_cpp(demo_gguf, tmp_path, keep_bytes):
    data = demo_gguf.read_bytes()
    path = tmp_path / "truncated.gguf"
    path.write_bytes(data[:keep_bytes])
    with pytest.raises(ModelFileError, match="truncated|cut short"):
        check_loadable_model(path)


def test_unsupported_architecture(tmp_path):
    path = write_minimal_gguf(tmp_path / "alien.gguf", "alien9000")
    with pytest.raises(ModelFileError, match="architecture 'alien9000' is not supported"):
        check_loadable_model(path)


def test_projector_is_not_a_model(tmp_path):
    path = write_minimal_gguf(tmp_path / "mmproj.gguf", "clip")
    with pytest.raises(ModelFileError, match="mmproj.*--mmproj"):
        check_loadable_model(path)


def test_a_minimal_valid_file_parses(tmp_path):
    info = inspect_gguf(write_minimal_gguf(tmp_path / "ok.gguf", "llama"))
    assert info.architecture == "llama" and info.tensors[0].shape == (8,)
    assert info.tensors[0].n_bytes == 32
