"""`edge-gemma run`: real text and tokens/s from the embedded model; bad input fails cleanly."""

import signal
import time
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, edge_gemma, spawn
from gguf_writer import write_minimal_gguf


def test_run_demo_streams_text_and_prints_rates(demo_gguf, llama_cpp_available):
    result = edge_gemma(
        "run", "--model", "demo", "-n", "16", "--temperature", "0", "--seed", "1", "The capital of France is"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("The capital of France is")
    assert len(result.stdout.strip()) > len("The capital of France is")
    assert "tok/s" in result.stderr and "generated" in result.stderr and "prompt" in result.stderr


def test_run_without_model_uses_the_demo_model(demo_gguf, llama_cpp_available):
    result = edge_gemma("run", "-n", "4", "--temperature", "0", "Hello")
    assert result.returncode == 0, result.stderr
    assert "tok/s" in result.stderr


def test_ctrl_c_stops_generation_with_exit_130(demo_gguf, llama_cpp_available):
    proc = spawn("run", "--model", "demo", "-n", "100000", "--ctx", "32768", "Once upon a time")
    deadline = time.time() + 120
    seen = ""
    while len(seen) < 40 and time.time() < deadline:  # wait until text is streaming
        seen += proc.stdout.read(1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "tok/s" in stderr
    assert "Traceback" not in stderr


def test_missing_model_path(tmp_path):
    assert_one_line_error(
        edge_gemma("run", "--model", str(tmp_path / "none.gguf"), "hi"), "not found", "edge-gemma setup"
    )


def test_zero_byte_model(tmp_path):
    path = tmp_path / "zero.gguf"
    path.write_bytes(b"")
    assert_one_line_error(edge_gemma("run", "--model", str(path), "hi"), "is empty")


def test_truncated_model_never_reaches_llama_cpp(demo_gguf, tmp_path):
    path = tmp_path / "cut.gguf"
    with demo_gguf.open("rb") as src:
        path.write_bytes(src.read(150_000_000))
    assert_one_line_error(edge_gemma("run", "--model", str(path), "hi"), "truncated", "download it again")


def test_non_gguf_file(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 this is a zip, not a model" * 100)
    assert_one_line_error(edge_gemma("run", "--model", str(path), "hi"), "not a GGUF file")


def test_unsupported_architecture(tmp_path):
    path = write_minimal_gguf(tmp_path / "alien.gguf", "alien9000")
    assert_one_line_error(edge_gemma("run", "--model", str(path), "hi"), "architecture 'alien9000'")


def test_unknown_device_lists_valid_ones(demo_gguf):
    assert_one_line_error(edge_gemma("run", "--device", "pi9", "hi"), "unknown device 'pi9'", "pi5")


def test_malformed_user_profile_is_named(tmp_path, isolated_user_dirs):
    profiles = isolated_user_dirs / "edge-gemma" / "config" / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "mine.toml").write_text("model = 'e9b'\n")
    assert_one_line_error(edge_gemma("run", "--device", "mine", "hi"), "mine.toml")


def test_too_many_threads_warns_and_clamps(demo_gguf, llama_cpp_available):
    result = edge_gemma("run", "--model", "demo", "-t", "64", "-n", "2", "Hi")
    assert result.returncode == 0, result.stderr
    assert "n_threads=64 is more than" in result.stderr


@pytest.mark.parametrize("args", [["-n", "0", "hi"], ["--ctx", "0", "hi"], ["-t", "-1", "hi"]])
def test_bad_numbers_are_usage_errors(args):
    result = edge_gemma("run", *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_settings_that_cannot_fit_say_the_numbers(demo_gguf, isolated_user_dirs):
    profiles = isolated_user_dirs / "edge-gemma" / "config" / "profiles"
    profiles.mkdir(parents=True)
    greedy = (Path(__file__).parent.parent / "profiles" / "generic.toml").read_text()
    (profiles / "tiny-board.toml").write_text(greedy.replace("os_headroom_mb = 1024", "os_headroom_mb = 65536"))
    result = edge_gemma("run", "--model", "demo", "--device", "tiny-board", "hi")
    assert_one_line_error(result, "needs", "GB", "over")


def test_a_prompt_longer_than_the_context_is_refused_before_any_work(demo_gguf, llama_cpp_available):
    result = edge_gemma("run", "-m", "demo", "-c", "256", "word " * 1000)
    assert_one_line_error(result, "the prompt is 1002 tokens but the context holds 256", "raise --ctx")
    assert result.stdout == ""  # nothing was generated
