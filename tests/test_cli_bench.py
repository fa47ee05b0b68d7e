"""`edge-gemma bench` and `edge-gemma tune` as a user runs them, on the real embedded model."""

import json
import signal
import time

import pytest
from cli_helpers import assert_one_line_error, edge_gemma, spawn

SHORT = ("-p", "32", "-n", "8", "-r", "2")


def test_bench_demo_prints_a_llama_bench_table(demo_gguf, llama_cpp_available):
    result = edge_gemma("bench", "--model", "demo", *SHORT)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "| model" in lines[0] and "t/s" in lines[0]
    assert "pp32" in lines[2] and "±" in lines[2] and "tg8" in lines[3]
    assert "load " in result.stdout and "peak RSS" in result.stdout and "first token" in result.stdout
    assert "run 2/2" in result.stderr  # progress went to stderr


def test_bench_json_parses_and_carries_the_fields(demo_gguf, llama_cpp_available):
    result = edge_gemma("bench", "--model", "demo", *SHORT, "-o", "json")
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert [r["test"] for r in records] == ["pp32", "tg8"]
    for record in records:
        for key in (
            "model_filename",
            "model_type",
            "n_threads",
            "n_threads_batch",
            "n_prompt",
            "n_gen",
            "n_depth",
            "use_mmap",
            "avg_ts",
            "stddev_ts",
            "samples_ns",
            "samples_ts",
            "test_time",
            "cpu_info",
            "device_profile",
            "load_mode",
            "lazy_mode",
            "peak_rss",
            "load_s",
            "ttft_s",
            "temps_c",
            "throttled",
            "edge_gemma_version",
            "llama_cpp_version",
            "system_info",
        ):
            assert key in record, key
        assert len(record["samples_ns"]) == 2 and record["avg_ts"] > 0
        assert record["model_filename"].endswith("gemma-3-270m-q4_k_m.gguf")


def test_bench_sweep_csv_and_jsonl(demo_gguf, llama_cpp_available):
    result = edge_gemma("bench", "-m", "demo", "-t", "1,2", "--only", "tg", "-n", "4", "-r", "1", "-o", "csv")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.startswith("cpu_info,") and len(rows) == 2
    result = edge_gemma("bench", "-m", "demo", "-p", "16", "--depth", "0,16", "--only", "pp", "-r", "1", "-o", "jsonl")
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["test"] for line in result.stdout.splitlines()] == ["pp16", "pp16 @ d16"]


def test_save_list_and_compare(demo_gguf, llama_cpp_available):
    for _ in range(2):
        result = edge_gemma("bench", "-m", "demo", "--only", "tg", "-n", "4", "-r", "1", "--save")
        assert result.returncode == 0 and "saved run" in result.stderr, result.stderr
    listed = edge_gemma("bench", "--list")
    assert listed.returncode == 0 and listed.stdout.count("gemma-3-270m-q4_k_m.gguf") == 2
    compared = edge_gemma("bench", "--compare", "latest~1", "latest")
    assert compared.returncode == 0, compared.stderr
    assert "tg4" in compared.stdout and "B/A" in compared.stdout and "x |" in compared.stdout


def test_comparing_runs_of_different_models_warns(isolated_user_dirs):
    path = isolated_user_dirs / "edge-gemma" / "data" / "bench" / "results.jsonl"
    path.parent.mkdir(parents=True)
    base = {
        "test": "tg128",
        "n_threads": 2,
        "n_threads_batch": 2,
        "n_batch": 512,
        "n_ubatch": 512,
        "avg_ts": 6.0,
        "stddev_ts": 0.1,
        "cpu_info": "Cortex-A76",
        "device_profile": "pi5-8gb",
    }
    path.write_text(
        "\n".join(
            json.dumps({**base, **extra})
            for extra in (
                {"run_id": "a", "model_filename": "/m/gemma-4-E2B-it-Q4_K_M.gguf"},
                {"run_id": "b", "model_filename": "/m/gemma-4-E4B-it-Q4_0.gguf", "avg_ts": 3.0},
            )
        )
        + "\n"
    )
    result = edge_gemma("bench", "--compare", "a", "b")
    assert result.returncode == 0, result.stderr
    assert "warning: the runs are of different models" in result.stderr and "0.50x" in result.stdout


def test_unreadable_results_file(isolated_user_dirs):
    path = isolated_user_dirs / "edge-gemma" / "data" / "bench" / "results.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("not json\n")
    assert_one_line_error(edge_gemma("bench", "--list"), "results.jsonl line 1", "fix or delete")


def test_unknown_saved_run(isolated_user_dirs):
    assert_one_line_error(edge_gemma("bench", "--compare", "latest~1", "latest"), "only 0 saved run")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("-p", "0"), "-p/--n-prompt must be positive, not 0"),
        (("-n", "-1"), "-n/--n-gen must be positive, not -1"),
        (("-p", "100000"), "the limit here is 32768"),
        (("-p", "600", "-c", "512"), "the limit here is 512"),
        (("-r", "0"), "-r/--repetitions must be from 1 to 1000"),
        (("-t", "two"), "-t/--threads: 'two' is not a number"),
        (("-c", "0"), "'--ctx': 0 is not in the range 256<=x<=131072"),
    ],
)
def test_bad_sizes_are_one_line_errors(demo_gguf, args, fragment):
    assert_one_line_error(edge_gemma("bench", "-m", "demo", *args), fragment)


def test_more_threads_than_cores_warns_and_runs(demo_gguf, llama_cpp_available):
    import os

    too_many = len(os.sched_getaffinity(0)) + 1
    result = edge_gemma("bench", "-m", "demo", "-t", str(too_many), "--only", "pp", "-p", "8", "-r", "1")
    assert result.returncode == 0, result.stderr
    assert f"warning: {too_many} threads is more than the" in result.stderr and "pp8" in result.stdout


def test_ctrl_c_during_a_sweep_prints_what_finished(demo_gguf, llama_cpp_available):
    proc = spawn("bench", "-m", "demo", "--only", "tg", "-n", "4,4096", "-r", "3", "-c", "8192")
    deadline, seen = time.time() + 240, ""
    while "tg4096" not in seen and time.time() < deadline:  # tg4 finished, tg4096 running
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "tg4" in stdout and "tg4096" not in stdout and "interrupted" in stdout
    assert "printed the 1 test(s) that finished" in stderr and "Traceback" not in stderr


def test_tune_stores_settings_that_run_then_uses(demo_gguf, llama_cpp_available):
    tuned = edge_gemma("tune", "--model", "demo", "--budget", "6", "--json")
    assert tuned.returncode == 0, tuned.stderr
    payload = json.loads(tuned.stdout)
    t = payload["tuned"]
    assert payload["stored"].endswith("tuned.json") and "n_threads" in payload["races"]
    note = f"tuned threads {t['n_threads']}/{t['n_threads_batch']}"
    shown = edge_gemma("tune", "--show")
    assert shown.returncode == 0 and f"threads {t['n_threads']}/{t['n_threads_batch']}" in shown.stdout
    run = edge_gemma("run", "--model", "demo", "-n", "2", "--temperature", "0", "Hello")
    assert run.returncode == 0, run.stderr
    assert note in run.stderr and f"threads {t['n_threads']}/{t['n_threads_batch']}" in run.stderr
    bench = edge_gemma("bench", "-m", "demo", "--only", "tg", "-n", "4", "-r", "1", "-o", "json")
    assert json.loads(bench.stdout)[0]["tuned"] == note
    untuned = edge_gemma("bench", "-m", "demo", "--only", "tg", "-n", "4", "-r", "1", "-o", "json", "--no-tune")
    assert json.loads(untuned.stdout)[0]["tuned"] is None
    reset = edge_gemma("tune", "--reset")
    assert reset.returncode == 0 and "removed 1" in reset.stdout
    again = edge_gemma("run", "--model", "demo", "-n", "2", "--temperature", "0", "Hello")
    assert "tuned threads" not in again.stderr


def test_tune_show_with_nothing_stored():
    result = edge_gemma("tune", "--show")
    assert result.returncode == 0 and "nothing tuned for this device yet" in result.stdout
