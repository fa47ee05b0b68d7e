"""`edge-gemma chat` on the embedded model: replies with rates; Ctrl-C stops a reply, not the chat."""

import signal
import time

from cli_helpers import edge_gemma, spawn


def test_chat_replies_and_reports_rates_each_turn(demo_gguf, llama_cpp_available):
    result = edge_gemma("chat", "--model", "demo", "-n", "16", "--temperature", "0",
                        input_text="Hello there\nWhat is two plus two?\n/exit\n")
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
