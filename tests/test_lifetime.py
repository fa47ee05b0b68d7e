"""A model is freed only after every job on it has stopped: closing waits (no timeout) for a decode on
another thread, however slow, and later calls are refused in one line instead of touching freed memory."""

import threading
import time

import pytest
from conftest import FIXTURES

from edge.model.engine import GEMMA_SAMPLING, LoadedModel
from edge.model.engine.lifetime import Lifetime, ModelClosedError
from edge.settings import RunSettings

TINY = FIXTURES / "gemma4-tiny" / "tiny-gemma-4-E2B.gguf"


def test_close_waits_for_a_use_on_another_thread_then_frees_once():
    life, inside, release, freed = Lifetime(), threading.Event(), threading.Event(), []

    def job():
        with life.use():
            inside.set()
            release.wait()

    worker = threading.Thread(target=job)
    worker.start()
    inside.wait()
    closer = threading.Thread(target=lambda: life.close(lambda: freed.append(time.perf_counter())))
    closer.start()
    time.sleep(0.3)
    assert life.closing and not freed  # the job is still inside: nothing freed
    released_at = time.perf_counter()
    release.set()
    closer.join()
    worker.join()
    assert len(freed) == 1 and freed[0] >= released_at
    life.close(lambda: freed.append(0))  # a second close frees nothing
    assert len(freed) == 1
    with pytest.raises(ModelClosedError, match="closed"):
        with life.use():
            pass


def test_uses_nest_and_a_close_from_inside_one_is_refused():
    life = Lifetime()
    with life.use(), life.use():
        with pytest.raises(RuntimeError, match="inside"):
            life.close(lambda: None)
    assert not life.closed


@pytest.fixture
def tiny(llama_cpp_available):
    loaded = LoadedModel(TINY, RunSettings(n_ctx=2048, n_batch=64, n_ubatch=64))
    yield loaded
    loaded.close()


def test_closing_a_model_stops_a_slow_decode_on_another_thread_and_waits_for_it(tiny):
    # Each token waits 50 ms (a busy board): the close from the main thread must not free under it.
    tokens_seen, done = [], threading.Event()
    generation = tiny.complete(
        "Once upon a time",
        GEMMA_SAMPLING.with_(max_tokens=1000, seed=1),
        cancelled=lambda: bool(tokens_seen.append(time.perf_counter()) or time.sleep(0.05)),
    )

    def decode():
        try:
            generation.run()
        finally:
            done.set()

    worker = threading.Thread(target=decode)
    worker.start()
    while len(tokens_seen) < 5:
        time.sleep(0.01)
    tiny.close()
    assert done.is_set()  # close() returned only once the decode had stopped
    worker.join()
    assert generation.stats.finish_reason == "cancelled" and generation.stats.generated_tokens < 1000
    with pytest.raises(ModelClosedError, match="closed"):
        tiny.complete("Again", GEMMA_SAMPLING.with_(max_tokens=4)).run()


def test_closing_mid_prompt_stops_between_batches(tiny):
    # A long prompt in batches of 64 on another thread; closing lets the batch in flight finish.
    outcome = []

    def prefill():
        try:
            tiny.engine.prefill("word " * 1500)
            outcome.append("done")
        except ModelClosedError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=prefill)
    worker.start()
    while not tiny.engine.cached:
        time.sleep(0.001)
    tiny.close()
    worker.join()
    assert len(outcome) == 1
    if outcome[0] != "done":  # stopped part way: a clean error, not a crash
        assert "closed" in str(outcome[0])
