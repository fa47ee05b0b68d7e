"""Thread tuning: the races, persistence per device and model, and prepare_run applying the result."""

import json

import pytest

from edge import tuned
from edge.bench import tune
from edge.bench.tune import Race, thread_candidates
from edge.device.info import detect
from edge.launch import LoadRequest, SettingsOverrides, prepare_run
from edge.model.engine import GREEDY, LoadedModel
from edge.settings import RunSettings
from edge.tuned import TunedSettings, apply_tuned


def tuned_for(info, model_path, **values):
    fields = dict(
        n_threads=1,
        n_threads_batch=1,
        n_ubatch=None,
        decode_tps=10.0,
        prefill_tps=100.0,
        device_key=tuned.device_key(info),
        model_key=tuned.model_key(model_path),
        tuned_at="2026-01-01T00:00:00Z",
        budget_s=60.0,
    )
    fields.update(values)
    return TunedSettings(**fields)


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 100)  # prepare_run only needs the file to exist
    return path


# ---- persistence --------------------------------------------------------------------------------


def test_store_lookup_and_reset(model_file, tmp_path):
    info = detect()
    assert tuned.lookup(info, model_file) is None
    stored = tuned.store(tuned_for(info, model_file, n_threads=2, n_ubatch=256))
    assert stored == tuned.tuned_path() and stored.is_file()
    assert json.loads(stored.read_text())["version"] == 1
    found = tuned.lookup(info, model_file)
    assert (found.n_threads, found.n_threads_batch, found.n_ubatch) == (2, 1, 256)
    # Another file (another quant, another size) has its own entry, or none.
    other = tmp_path / "other.gguf"
    other.write_bytes(b"GGUF" + b"\0" * 200)
    assert tuned.lookup(info, other) is None
    assert tuned.reset(info, model_file) == 1
    assert tuned.lookup(info, model_file) is None


def test_reset_without_a_model_forgets_the_whole_device(model_file, tmp_path):
    info = detect()
    other = tmp_path / "other.gguf"
    other.write_bytes(b"x" * 10)
    tuned.store(tuned_for(info, model_file))
    tuned.store(tuned_for(info, other))
    assert tuned.reset(info) == 2
    assert tuned.load_all() == {}


def test_unreadable_tuned_file_is_named(model_file):
    tuned.tuned_path().parent.mkdir(parents=True, exist_ok=True)
    tuned.tuned_path().write_text("{oops")
    with pytest.raises(tuned.TunedFileError, match=r"tuned.json is unreadable .*`edge-gemma tune --reset`"):
        tuned.lookup(detect(), model_file)
    assert tuned.reset(detect()) == 1 and not tuned.tuned_path().exists()


def test_explicit_values_beat_tuned_ones():
    tuned = TunedSettings(n_threads=3, n_threads_batch=4, n_ubatch=256, decode_tps=1.0, prefill_tps=1.0)
    assert apply_tuned(tuned, {"n_threads": None, "n_ctx": 512}) == (
        {"n_ctx": 512, "n_threads": 3, "n_threads_batch": 4, "n_ubatch": 256},
        "tuned threads 3/4, ubatch 256",
    )
    assert apply_tuned(tuned, {"n_threads": 2}) == (
        {"n_threads": 2, "n_threads_batch": 4, "n_ubatch": 256},
        "tuned batch threads 4, ubatch 256",
    )
    assert apply_tuned(tuned, {"n_threads": 2, "n_threads_batch": 2, "n_ubatch": 512})[1] is None
    assert apply_tuned(None, {"n_threads": 2}) == ({"n_threads": 2}, None)


# ---- prepare_run uses them ------------------------------------------------------------------------


def test_prepare_run_applies_tuned_between_profile_and_flags(demo_gguf):
    model_file = demo_gguf  # prepare_run checks the file is a loadable GGUF that fits
    info = detect()
    tuned.store(tuned_for(info, model_file, n_threads=1, n_threads_batch=1))
    plan = prepare_run(LoadRequest(model=str(model_file)))
    assert (plan.resolved.settings.n_threads, plan.resolved.settings.n_threads_batch) == (1, 1)
    assert plan.tuned_note == "tuned threads 1/1"
    explicit = prepare_run(LoadRequest(model=str(model_file), overrides=SettingsOverrides(n_threads=2)))
    assert explicit.resolved.settings.n_threads == 2 and explicit.resolved.settings.n_threads_batch == 1
    ignored = prepare_run(LoadRequest(model=str(model_file), no_tune=True))
    assert ignored.tuned_note is None
    assert ignored.resolved.settings == prepare_run(LoadRequest(model=str(model_file), no_tune=True)).resolved.settings


def test_a_broken_tuned_file_does_not_stop_a_run(demo_gguf):
    tuned.tuned_path().parent.mkdir(parents=True, exist_ok=True)
    tuned.tuned_path().write_text("[]")
    plan = prepare_run(LoadRequest(model=str(demo_gguf)))
    assert plan.tuned_note is None
    assert any("tuned settings file" in note for note in plan.notes)


# ---- the races ----------------------------------------------------------------------------------


def test_thread_candidates_are_the_real_cores():
    assert thread_candidates(1) == [1]
    assert thread_candidates(4) == [1, 2, 3, 4]
    assert thread_candidates(16) == [1, 2, 4, 6, 8, 10, 12, 14, 15, 16]


def test_ties_go_to_fewer_threads():
    race = Race("n_threads", {1: [5.0], 2: [9.95, 9.95], 3: [10.0], 4: [8.0]})
    assert race.best() == 2  # within 1% of 3 threads' 10.0
    assert Race("n_threads").best() is None


def test_race_stops_at_the_deadline_and_drops_slow_candidates():
    now = [0.0]
    speeds = {1: 5.0, 2: 9.0, 3: 10.0, 4: 9.9}
    measured = []

    def measure(candidate):
        now[0] += 1.0
        measured.append(candidate)
        return speeds[candidate]

    race = Race("n_threads")
    tune._race(race, [1, 2, 3, 4], deadline=11.0, clock=lambda: now[0], progress=None, measure=measure)
    assert measured[:8] == [1, 2, 3, 4, 1, 2, 3, 4]  # two full rounds
    assert 1 not in measured[8:]  # 5 t/s is out of reach after two rounds
    assert now[0] <= 11.0 + 4  # a round in progress finishes, then it stops
    assert race.best() == 3


def test_ubatch_is_kept_only_when_it_pays():
    assert tune._paying_ubatch(Race("n_ubatch", {128: [100.0], 256: [102.0], 512: [101.0]}), 512) is None
    assert tune._paying_ubatch(Race("n_ubatch", {128: [100.0], 256: [110.0], 512: [101.0]}), 512) == 256
    assert tune._paying_ubatch(Race("n_ubatch", {256: [100.0], 512: [120.0]}), 512) is None  # already best
    noisy = Race("n_ubatch", {256: [100.0, 120.0], 512: [101.0, 101.0]})  # +8.9%, but SE of the gap is 10
    assert tune._paying_ubatch(noisy, 512) is None
    assert tune._paying_ubatch(Race("n_ubatch", {256: [110.0]}), 384) == 256  # 384 was not measured


def test_real_tune_on_the_embedded_model(demo_gguf, llama_cpp_available):
    settings = RunSettings(n_ctx=1024, n_threads=2, n_threads_batch=2, n_batch=512, n_ubatch=512)
    messages = []
    with LoadedModel(demo_gguf, settings) as loaded:
        result = tune.tune_model(loaded, fast_cores=2, budget_s=8, progress=messages.append)
        # The model still works as `run` expects afterwards.
        generation = loaded.complete("Hello", GREEDY.with_(max_tokens=2))
        assert (
            generation.run().strip() and generation.stats.generated_tokens >= 1
        )  # the last token is sampled, not evaluated
    assert not result.interrupted and result.tuned is not None
    assert result.tuned.n_threads in (1, 2) and result.tuned.n_threads_batch in (1, 2)
    assert result.tuned.n_ubatch in (None, 128, 256)
    assert result.tuned.decode_tps > 0 and result.tuned.prefill_tps > 0
    assert [race.setting for race in result.races][:2] == ["n_threads", "n_threads_batch"]
    assert all(len(race.samples) >= 1 for race in result.races[:2])
    assert any(message.startswith("n_threads=") for message in messages)
