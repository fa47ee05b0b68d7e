"""Bench statistics, sweep expansion, output formats, and a real short run on the embedded model."""

import csv
import io
import json
import math
import re

import pytest

from edge.bench.measure import (
    BenchContext,
    BenchResult,
    BenchTest,
    SweepSpec,
    check_sweep,
    expand_sweep,
    mean,
    parse_int_list,
    run_sweep,
    sample_stdev,
)
from edge.bench.report import (
    REFERENCES,
    compare_runs,
    find_run,
    load_saved,
    reference_lines,
    render,
    save_run,
    to_records,
)
from edge.bench.run import BenchRun, DurationBlock, DurationResult, RunConditions, bench_model, run_duration
from edge.errors import EdgeError, UsageError
from edge.launch import LoadRequest, SettingsOverrides, prepare_run
from edge.model.engine import GREEDY, LoadedModel
from edge.settings import RunSettings


def spec(n_prompt=0, n_gen=0, n_depth=0, t=2, tb=2, nb=512, nub=512):
    return BenchTest(n_prompt, n_gen, n_depth, t, tb, nb, nub)


def conditions(**changes):
    values = dict(
        model_filename="/models/gemma-4-E2B-it-Q4_K_M.gguf",
        model_type="gemma4 E2B Q4_K - Medium",
        model_size=3_100_000_000,
        model_n_params=5_100_000_000,
        n_ctx=768,
        load_mode="mmap",
        lazy_mode="off",
        flash_attn=True,
        type_k="f16",
        type_v="f16",
        n_gpu_layers=0,
        device_profile="pi5-8gb",
        device_kind="pi5",
        device_board="Raspberry Pi 5 Model B Rev 1.0",
        cpu_info="Cortex-A76",
        load_s=1.5,
        load_cache="warm",
        peak_rss=1_600_000_000,
        ttft_s=0.8,
        temp_start_c=50.0,
        temp_end_c=71.5,
        power_mode=None,
        throttled_since_boot=(),
        thermal_source="thermal zones",
        tuned="tuned threads 3/4",
        use_extra_bufts=True,
        cpu_kernels="CPU_REPACK",
        cpu_kernels_reason="no extra CPU kernel here is known to be fragile",
        edge_gemma_version="0.1.0",
        llama_cpp_version="0.3.36",
        system_info="CPU : NEON = 1",
        started_at="2026-01-01T00:00:00Z",
    )
    values.update(changes)
    return RunConditions(**values)


def result(test_spec, samples_ns, throttled=None):
    n = len(samples_ns)
    return BenchResult(
        test_spec, tuple(samples_ns), tuple(throttled or [False] * n), (60.0,) * n, "2026-01-01T00:00:01Z"
    )


def pi_run(run_id="r1", pp_ns=(16e9, 16e9, 16e9), tg_ns=(20e9, 20e9, 20e9), **changes):
    results = (
        result(spec(n_prompt=512, t=3, tb=4), [int(x) for x in pp_ns]),
        result(spec(n_gen=128, t=3, tb=4), [int(x) for x in tg_ns], throttled=[False, True, False]),
    )
    return BenchRun(run_id, conditions(**changes), results)


# ---- statistics ---------------------------------------------------------------------------------


def test_mean_and_sample_stdev_by_hand():
    assert mean([1, 2, 3, 4]) == 2.5
    # Sum of squared deviations from 5 is 32; N-1 = 7.
    assert sample_stdev([2, 4, 4, 4, 5, 5, 7, 9]) == pytest.approx(math.sqrt(32 / 7))
    assert sample_stdev([3.0]) == 0.0 and sample_stdev([]) == 0.0 and mean([]) == 0.0


def test_result_rates_are_per_repetition_then_averaged():
    r = result(spec(n_prompt=512), [1_000_000_000, 2_000_000_000])
    assert r.samples_ts == (512.0, 256.0)
    assert r.avg_ts == 384.0  # the mean of the rates, not tokens / mean time (341.3)
    assert r.stddev_ts == pytest.approx(math.sqrt(2 * 128**2))  # 181.02
    assert r.avg_ns == 1_500_000_000 and r.stddev_ns == int(math.sqrt(2 * 0.5e9**2))


def test_test_names_follow_llama_bench():
    assert spec(n_prompt=512).name == "pp512"
    assert spec(n_gen=128).name == "tg128"
    assert spec(n_prompt=512, n_depth=4096).name == "pp512 @ d4096"
    assert spec(n_prompt=16, n_gen=8).name == "pp16+tg8"
    assert spec(n_gen=128, n_depth=512).n_ctx_needed == 640


# ---- sweeps -------------------------------------------------------------------------------------


def test_sweep_runs_every_combination_in_llama_bench_order():
    tests = expand_sweep(SweepSpec(n_prompt=(128, 512), n_gen=(64,), n_threads=(1, 2)))
    assert [(t.name, t.n_threads, t.n_threads_batch) for t in tests] == [
        ("pp128", 1, 1),
        ("pp512", 1, 1),
        ("tg64", 1, 1),
        ("pp128", 2, 2),
        ("pp512", 2, 2),
        ("tg64", 2, 2),
    ]


def test_sweep_with_batch_threads_depths_and_ubatches():
    tests = expand_sweep(
        SweepSpec(
            n_prompt=(512,), n_gen=(), n_depth=(0, 256), n_threads=(2,), n_threads_batch=(1, 2), n_ubatch=(256, 512)
        )
    )
    assert len(tests) == 2 * 2 * 2  # ubatch x batch threads x depth
    assert tests[0] == spec(n_prompt=512, t=2, tb=1, nub=256)
    assert {t.name for t in tests} == {"pp512", "pp512 @ d256"}
    # ubatch is clamped to n_batch, and a combination that becomes a repeat runs once.
    clamped = expand_sweep(SweepSpec(n_prompt=(64,), n_gen=(), n_batch=(128,), n_ubatch=(256, 512)))
    assert [(t.n_batch, t.n_ubatch) for t in clamped] == [(128, 128)]


def test_int_lists():
    assert parse_int_list("1,2,4", "-t") == (1, 2, 4)
    assert parse_int_list("1-3,8", "-t") == (1, 2, 3, 8)
    assert parse_int_list("-1", "-n") == (-1,)  # negative: rejected by check_sweep with a clear message
    with pytest.raises(UsageError, match="-t: 'x' is not a number"):
        parse_int_list("x", "-t")


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(n_prompt=(0,)), "-p/--n-prompt must be positive, not 0"),
        (dict(n_gen=(-1,)), "-n/--n-gen must be positive, not -1"),
        (dict(n_depth=(-5,)), "--depth must be 0 or more"),
        (dict(n_threads=(0,)), "-t/--threads must be positive"),
        (dict(repetitions=0), "-r/--repetitions must be from 1 to 1000"),
        (
            dict(n_prompt=(40000,)),
            "needs 40000 tokens of context (prompt + generation + depth) but the limit here is 32768",
        ),
        (dict(n_prompt=(), n_gen=()), "nothing to measure"),
        (dict(n_threads=(100000,)), "at most 512 threads"),
    ],
)
def test_bad_sweeps_are_rejected_with_the_limit(changes, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        check_sweep(SweepSpec(**changes), n_ctx_limit=32768, logical_cores=4)


def test_more_threads_than_cores_is_a_warning():
    warnings = check_sweep(SweepSpec(n_threads=(2, 8)), n_ctx_limit=4096, logical_cores=4)
    assert len(warnings) == 1 and "8 threads is more than the 4 cores" in warnings[0]


# ---- output formats -----------------------------------------------------------------------------

LLAMA_BENCH_FIELDS = (
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
)
OUR_FIELDS = (
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
)


def test_json_records_carry_llama_bench_and_our_fields():
    records = json.loads(render(pi_run(), "json"))
    assert len(records) == 2
    pp, tg = records
    for key in LLAMA_BENCH_FIELDS + OUR_FIELDS:
        assert key in pp, key
    assert (pp["test"], pp["n_prompt"], pp["n_gen"], pp["n_threads"], pp["n_threads_batch"]) == ("pp512", 512, 0, 3, 4)
    assert pp["avg_ts"] == 32.0 and pp["stddev_ts"] == 0.0 and pp["samples_ts"] == [32.0] * 3
    assert pp["use_mmap"] is True and pp["flash_attn"] == 1
    assert tg["avg_ts"] == pytest.approx(6.4) and tg["throttled"] == [False, True, False] and tg["throttled_any"]


def test_jsonl_and_csv_have_one_row_per_test():
    lines = render(pi_run(), "jsonl").splitlines()
    assert [json.loads(line)["test"] for line in lines] == ["pp512", "tg128"]
    rows = list(csv.DictReader(io.StringIO(render(pi_run(), "csv"))))
    assert [r["test"] for r in rows] == ["pp512", "tg128"]
    assert float(rows[1]["avg_ts"]) == pytest.approx(6.4) and json.loads(rows[0]["samples_ns"]) == [16_000_000_000] * 3


def test_markdown_is_a_short_llama_bench_table_with_conditions():
    text = render(pi_run(), "md")
    lines = text.splitlines()
    assert [cell.strip() for cell in lines[0].split("|")[1:-1]] == [
        "model",
        "size",
        "params",
        "backend",
        "threads",
        "test",
        "t/s",
    ]
    assert lines[1].startswith("| ---") and lines[1].endswith(": |") and "2.89 GiB" in lines[2]
    assert " 3/4 |" in lines[2] and "pp512" in lines[2] and "32.00 ± 0.00" in lines[2]
    assert "6.40 ± 0.00 *" in lines[3]  # a throttled repetition is marked
    assert "throttling during at least one repetition" in text
    assert "load 1.50 s (warm page cache)" in text and "first token 0.80 s" in text
    assert "CPU 50.0 -> 71.5 C" in text and "tuned threads 3/4" in text


def test_reference_numbers_for_a_matching_model_and_device():
    lines = reference_lines(pi_run())
    assert len(lines) == 2  # LiteRT-LM (any quant) and llama-bench (Q4_K_M) on a Pi 5, E2B
    bench_line = next(line for line in lines if "llama-bench" in line)
    assert "prefill 32 t/s, ours pp512 32.00 (1.00x)" in bench_line
    assert "decode 6.44 t/s, ours tg128 6.40 (0.99x)" in bench_line
    assert reference_lines(pi_run(device_kind="desktop")) == []
    assert (
        reference_lines(pi_run(model_filename="/m/gemma-3-270m-q4_k_m.gguf", model_type="gemma3 270M Q4_K - Medium"))
        == []
    )
    e4b = reference_lines(pi_run(model_filename="/m/gemma-4-E4B-it-Q4_0.gguf"))
    assert len(e4b) == 1 and "18.9" in e4b[0] and "2.79" in e4b[0]
    assert len(REFERENCES) >= 5


def test_saved_runs_round_trip_and_compare(tmp_path):
    path = tmp_path / "results.jsonl"
    save_run(pi_run("20260101-a"), path)
    save_run(pi_run("20260102-b", tg_ns=(10e9,) * 3), path)
    runs = load_saved(path)
    assert list(runs) == ["20260101-a", "20260102-b"]
    assert find_run(runs, "latest")[0] == "20260102-b" and find_run(runs, "latest~1")[0] == "20260101-a"
    assert find_run(runs, "20260101")[0] == "20260101-a"
    table, warnings = compare_runs(find_run(runs, "latest~1"), find_run(runs, "latest"))
    assert warnings == []
    assert "| tg128 |" in table and "2.00x" in table and "1.00x" in table
    with pytest.raises(UsageError, match="2 saved runs matches '2026'"):
        find_run(runs, "2026")
    with pytest.raises(UsageError, match="only 2 saved run"):
        find_run(runs, "latest~5")


def test_comparing_different_models_is_allowed_with_a_warning(tmp_path):
    path = tmp_path / "results.jsonl"
    save_run(pi_run("a"), path)
    save_run(pi_run("b", model_filename="/m/gemma-4-E4B-it-Q4_0.gguf"), path)
    runs = load_saved(path)
    table, warnings = compare_runs(find_run(runs, "a"), find_run(runs, "b"))
    assert "different models" in warnings[0] and "pp512" in table


def test_unreadable_results_file_names_the_line(tmp_path):
    path = tmp_path / "results.jsonl"
    save_run(pi_run("a"), path)
    with path.open("a") as fh:
        fh.write("{not json\n")
    with pytest.raises(EdgeError, match=r"results.jsonl line 3 is not a saved result"):
        load_saved(path)
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(EdgeError, match="is unreadable"):
        load_saved(path)


def test_sustained_speed_compares_the_first_and_last_window():
    blocks = tuple(
        DurationBlock(end, tps, 60.0 + end / 10, end > 150)
        for end, tps in [(20, 8.0), (40, 8.0), (60, 7.9), (120, 7.0), (160, 6.0), (180, 6.2)]
    )
    d = DurationResult(n_threads=3, block_tokens=32, seconds=180, blocks=blocks)
    assert d.window_s == 60 and d.first_tps == pytest.approx(7.9667, abs=1e-3)
    assert d.last_tps == pytest.approx(6.1)  # blocks ending after 120 s
    assert d.max_temp_c == 78.0
    short = DurationResult(3, 32, 10, (DurationBlock(4, 9.0, None, False), DurationBlock(9, 8.0, None, False)))
    assert short.window_s == 5 and short.first_tps == 9.0 and short.last_tps == 8.0 and short.max_temp_c is None
    text = render(BenchRun("r", conditions(), pi_run().results, duration=d), "md")
    assert "sustained tg32 over 180 s at 3 threads: first 60 s 7.97 t/s, last 60 s 6.10 t/s (0.77x)" in text


# ---- the real thing -----------------------------------------------------------------------------

SETTINGS = RunSettings(n_ctx=512, n_threads=2, n_threads_batch=2, n_batch=128, n_ubatch=128)


@pytest.fixture(scope="module")
def demo_model(demo_gguf, llama_cpp_available):
    with LoadedModel(demo_gguf, SETTINGS) as model:
        yield model


def test_real_short_sweep_on_the_embedded_model(demo_model):
    tests = expand_sweep(
        SweepSpec(n_prompt=(32,), n_gen=(8,), n_depth=(0, 16), n_threads=(1, 2), n_batch=(128,), n_ubatch=(128,))
    )
    outcome = run_sweep(demo_model, tests, 2)
    assert not outcome.interrupted
    assert [r.spec for r in outcome.results] == tests
    for r in outcome.results:
        assert len(r.samples_ns) == 2 and all(ns > 0 for ns in r.samples_ns)
        assert r.avg_ts > 0 and r.stddev_ts >= 0
    # The model is left as `run` expects it: its own threads, an empty cache, generating text.
    assert demo_model.complete("One, two,", GREEDY.with_(max_tokens=4)).run().strip()


def test_other_batch_sizes_and_depth_tests_get_their_own_context(demo_model):
    with BenchContext(demo_model, n_batch=128, n_ubatch=128) as own:
        assert own.ctx == demo_model.llama.ctx  # the model's context, lent by its engine
    # Depth tests need llama-bench's small sliding-window cache: a full-size one means another context.
    full_swa = bool(demo_model.llama.context_params.swa_full)
    with BenchContext(demo_model, n_batch=128, n_ubatch=128, sliding_window_cache=True) as deep:
        assert (deep.ctx != demo_model.llama.ctx) == full_swa
    with BenchContext(demo_model, n_batch=128, n_ubatch=64) as other:
        assert other.ctx != demo_model.llama.ctx
        other.set_threads(2, 2)
        assert other.prompt(70, 128) > 0 and other.generate(2) > 0
    generation = demo_model.complete("Hello", GREEDY.with_(max_tokens=2))
    assert (
        generation.run().strip() and generation.stats.generated_tokens >= 1
    )  # the last token is sampled, not evaluated


def test_real_sustained_run(demo_model):
    d = run_duration(demo_model, 1.0, n_threads=2, block_tokens=8)
    assert d.blocks and all(b.tokens_per_s > 0 for b in d.blocks)
    assert d.first_tps > 0 and d.last_tps > 0


def test_whole_run_reports_load_rss_ttft_and_conditions(demo_gguf, llama_cpp_available):
    overrides = SettingsOverrides(n_ctx=512, n_threads=2, n_threads_batch=2)
    plan = prepare_run(LoadRequest(model=str(demo_gguf), overrides=overrides, no_tune=True))
    run = bench_model(plan, [spec(n_prompt=32), spec(n_gen=8)], 2)
    c = run.conditions
    assert [r.spec.name for r in run.results] == ["pp32", "tg8"] and not run.interrupted
    assert c.model_type.startswith("gemma3") and c.model_size > 100_000_000 and c.model_n_params > 200_000_000
    assert c.load_s > 0 and c.peak_rss > c.model_size / 4 and c.ttft_s > 0
    assert c.load_cache in ("cold", "warm", "unknown") or c.load_cache.startswith("partial")
    assert c.llama_cpp_version == "0.3.36" and "CPU" in c.system_info and c.cpu_info
    records = to_records(run)
    assert records[0]["model_filename"] == str(demo_gguf) and records[0]["n_prompt"] == 32

    assert records[0]["cpu_kernels"] and records[0]["repack"] in (0, 1) and c.cpu_kernels_reason
