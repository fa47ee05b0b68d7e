"""`edge-gemma chat` on the embedded model: replies with rates; Ctrl-C stops a reply, not the chat."""

import signal
import time

from cli_helpers import assert_one_line_error, edge_gemma, spawn


def test_chat_replies_and_reports_rates_each_turn(demo_gguf, llama_cpp_available):
    result = edge_gemma(
        "chat",
        "--model",
        "demo",
        "-n",
        "16",
        "--temperature",
        "0",
        input_text="Hello there\nWhat is two plus two?\n/exit\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("generated") == 2  # one stats line per reply
    assert "Gemma's turn format" in result.stderr  # the base model has no template: say so
    assert result.stdout.count(">>> ") >= 2


def test_ctrl_c_stops_the_reply_and_returns_to_the_prompt(demo_gguf, llama_cpp_available):
    proc = spawn("chat", "--model", "demo", "-n", "100000", "--ctx", "32768", "--temperature", "1.5")
    proc.stdin.write("Write a very long story about a robot.\n")
    proc.stdin.flush()
    seen, deadline = "", time.time() + 120
    while len(seen) < 60 and time.time() < deadline:
        seen += proc.stdout.read(1)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    stdout, stderr = proc.communicate("/exit\n", timeout=60)
    assert proc.returncode == 0, stderr
    assert "[stopped]" in stderr and "tok/s" in stderr
    assert "Traceback" not in stderr


def test_end_of_input_quits_cleanly(demo_gguf, llama_cpp_available):
    result = edge_gemma("chat", "--model", "demo", input_text="")
    assert result.returncode == 0 and "Traceback" not in result.stderr


def test_thirty_turns_in_a_small_context_all_answered(demo_gguf, llama_cpp_available):
    questions = "".join(f"Tell me a long story about the number {i} and the sea.\n" for i in range(30))
    result = edge_gemma(
        "chat",
        "--model",
        "demo",
        "-c",
        "512",
        "-n",
        "48",
        "--temperature",
        "0",
        "--verbose",
        input_text=questions + "/exit\n",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "error" not in result.stderr
    assert result.stderr.count("generated") == 30  # every turn answered
    assert "[context: dropped" in result.stderr  # old turns went, and --verbose said so


def test_a_message_longer_than_the_context_is_refused_and_the_chat_goes_on(demo_gguf, llama_cpp_available):
    huge = "word " * 2000
    result = edge_gemma(
        "chat", "--model", "demo", "-c", "512", "-n", "8", input_text=f"Hello\n{huge}\nStill there?\n/exit\n"
    )
    assert result.returncode == 0, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "this message needs" in errors[0] and "raise --ctx" in errors[0]
    assert result.stderr.count("generated") == 2  # the turns before and after it


def test_clear_save_and_resume(demo_gguf, llama_cpp_available, tmp_path):
    saved = tmp_path / "talk.json"
    result = edge_gemma(
        "chat",
        "--model",
        "demo",
        "-n",
        "8",
        "--temperature",
        "0",
        "-s",
        "Be brief.",
        input_text=f"My name is Ada.\nWhat is my name?\n/save {saved}\n/clear\nHi\n"
        f"/save {tmp_path / 'after-clear.json'}\n/exit\n",
    )
    assert result.returncode == 0, result.stderr
    assert "(saved 2 turns" in result.stderr and "(conversation cleared)" in result.stderr
    from edge.model.conversation import load_history

    kept = load_history(saved)
    assert [m["role"] for m in kept] == ["system", "user", "assistant", "user", "assistant"]
    assert kept[0]["content"] == "Be brief." and kept[1]["content"] == "My name is Ada."
    after_clear = load_history(tmp_path / "after-clear.json")
    assert [m["role"] for m in after_clear] == ["system", "user", "assistant"]  # /clear kept the system prompt
    resumed = edge_gemma(
        "chat",
        "--model",
        "demo",
        "-n",
        "8",
        "--resume",
        str(saved),
        input_text=f"And again?\n/save {tmp_path / 'resumed.json'}\n/exit\n",
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "2 turns resumed" in resumed.stderr
    assert load_history(tmp_path / "resumed.json")[:5] == kept


def test_resume_from_a_bad_file_fails_before_loading(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"messages": 3}')
    assert_one_line_error(edge_gemma("chat", "--model", "demo", "--resume", str(bad)), "not a chat saved by")
