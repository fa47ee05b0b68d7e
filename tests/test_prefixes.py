"""Kept prompt prefixes: a chat's system turn (with its tool declarations) is evaluated once, put back
after other requests used the cache and after a restart, and a saved state that is damaged, foreign,
truncated or half-written is never trusted."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FIXTURES

from edge.assist.ha_intents import HA_INTENTS
from edge.model.engine import GREEDY, LoadedModel
from edge.model.engine.prefixes import PrefixSnapshot, PrefixStore, read_snapshot
from edge.model.tool_turn import ToolSetup
from edge.settings import RunSettings

TINY = FIXTURES / "gemma4-tiny" / "tiny-gemma-4-E2B.gguf"
IDENTITY = {"format": 1, "model": "x.gguf", "cache": {"n_ctx": 4096}}
SNAPSHOT = PrefixSnapshot(tuple(range(200)), bytes(range(256)) * 40)


def saved(folder: Path, identity=IDENTITY, snapshot=SNAPSHOT) -> Path:
    store = PrefixStore(identity, folder)
    store.put(snapshot)
    path = store.path_for(snapshot)
    deadline = time.time() + 10
    while not path.exists() and time.time() < deadline:
        time.sleep(0.01)
    return path


def test_a_saved_prefix_is_read_back_and_found_for_a_longer_prompt(tmp_path):
    saved(tmp_path)
    notes = []
    store = PrefixStore(IDENTITY, tmp_path, on_note=notes.append)
    assert notes == []
    found = store.best(list(range(300)))
    assert found == SNAPSHOT
    assert store.best(list(range(100))) is None  # shorter than the snapshot: nothing to put back
    assert store.best([1, *range(1, 300)]) is None  # another prompt


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda b: b[:-100], "truncated"),
        (lambda b: b[:-10] + bytes(10 * [255]), "checksum"),
        (lambda b: b"GGUF" + b[4:], "not an edge-gemma"),
        (lambda b: b[:12] + b"{not json" + b[21:], "header is damaged"),
    ],
)
def test_a_damaged_file_is_ignored_with_one_note(tmp_path, damage, why):
    path = saved(tmp_path)
    path.write_bytes(damage(path.read_bytes()))
    notes = []
    store = PrefixStore(IDENTITY, tmp_path, on_note=notes.append)
    assert store.best(list(range(300))) is None
    assert len(notes) == 1 and why in notes[0] and path.name in notes[0]


def test_a_file_saved_for_other_settings_or_another_build_is_never_trusted(tmp_path):
    path = saved(tmp_path)
    other = {**IDENTITY, "cache": {"n_ctx": 8192}}
    snapshot, problem = read_snapshot(path, other)
    assert snapshot is None and "another model" in problem
    # Another identity does not even look at this file: its name carries the identity.
    assert PrefixStore(other, tmp_path).best(list(range(300))) is None


def test_a_failed_write_skips_the_save_with_a_note_and_leaves_no_file(tmp_path):
    folder = tmp_path / "prefixes"  # tmp_path itself may hold the test's home (conftest)
    folder.mkdir()
    # The process may write at most 4 KiB per file (RLIMIT_FSIZE): the 10 KiB state cannot be saved,
    # as on a full disk. The store says so and leaves nothing half-written behind.
    script = f"""
import resource, signal, sys, time
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_prefixes import IDENTITY, SNAPSHOT
from edge.model.engine.prefixes import PrefixStore
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
notes = []
store = PrefixStore(IDENTITY, __import__("pathlib").Path({str(folder)!r}), on_note=notes.append)
store._save(SNAPSHOT)
print(notes[0] if notes else "no note")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "was not saved" in done.stdout
    assert list(folder.iterdir()) == []


def test_two_processes_saving_into_one_folder_leave_one_good_file(tmp_path):
    folder = tmp_path / "prefixes"  # tmp_path itself may hold the test's home (conftest)
    folder.mkdir()
    script = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_prefixes import IDENTITY, SNAPSHOT
from edge.model.engine.prefixes import PrefixStore
for _ in range(20):
    PrefixStore(IDENTITY, __import__("pathlib").Path({str(folder)!r}))._save(SNAPSHOT)
"""
    procs = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    files = list(folder.iterdir())
    assert len(files) == 1 and read_snapshot(files[0], IDENTITY)[0] == SNAPSHOT


# --- on the tiny Gemma 4 ----------------------------------------------------------------------------

ASK = [
    {"role": "system", "content": "You run a home with many rooms and devices. " * 4},
    {"role": "user", "content": "Turn on the kitchen light."},
]
SETTINGS = RunSettings(n_ctx=4096, n_batch=256, n_ubatch=256)


def prefill(loaded: LoadedModel, messages=ASK):
    """The chat prompt with HA's intents declared, evaluated as a reply would; its report and last logits."""
    import llama_cpp
    import numpy as np

    prompt = loaded.chat_prompt(messages, tools=ToolSetup(HA_INTENTS).declarations())
    report = loaded.engine.prefill(prompt.text, pin_chars=prompt.system_end)
    n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(loaded.model_handle))
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(loaded.llama.ctx, -1), shape=(n_vocab,)).copy()
    return report, logits, prompt


def put_back_exactly(loaded: LoadedModel) -> bool:
    """The kept snapshot, put into an emptied cache, reads back as the same bytes."""
    import ctypes

    import llama_cpp

    engine = loaded.engine
    snapshot = next(iter(engine.prefixes._memory.values()))  # the one kept: the system turn
    engine.reset()
    with engine.lifetime.use():
        assert engine._restored(list(snapshot.keys) + [0], 0) == len(snapshot.keys)
        size = llama_cpp.llama_state_seq_get_size(loaded.llama.ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(loaded.llama.ctx, buf, size, 0)
    return bytes(buf)[:written] == snapshot.state


def evict(loaded: LoadedModel) -> None:
    loaded.complete("Another request uses the cache.", GREEDY.with_(max_tokens=4)).run()


def test_the_system_turn_is_put_back_after_other_requests_and_after_a_restart(tmp_path, llama_cpp_available):
    import numpy as np

    with LoadedModel(TINY, SETTINGS) as loaded:
        loaded.keep_prefixes(tmp_path)
        first, first_logits, prompt = prefill(loaded)
        system_turn = prompt.text[: prompt.system_end]
        declarations = len(loaded.engine.tokenize(system_turn, bos=not system_turn.startswith("<bos>")))
        assert declarations > 1000 and first.reused == 0  # the 14 intents: evaluated once, here
        evict(loaded)
        again, again_logits, _ = prefill(loaded)
        assert loaded.engine.prefixes.restored == 1 and again.reused == declarations
        assert again.evaluated == first.prompt_tokens - declarations
        # What is put back is the kept state, byte for byte; what it answers differs from the evaluated
        # prompt only as much as evaluating in other batches does (random weights amplify rounding).
        assert put_back_exactly(loaded)
        assert np.abs(again_logits - first_logits).max() < 0.5
        evict(loaded)
        other_question = ASK[:1] + [{"role": "user", "content": "And the hall light."}]
        assert prefill(loaded, other_question)[0].reused == declarations
        generation = loaded.chat(ASK, GREEDY.with_(max_tokens=6), tools=ToolSetup(HA_INTENTS).declarations())
        assert generation.run() is not None and generation.prefill.reused >= declarations
    deadline = time.time() + 10
    while not list(tmp_path.glob("*.kv")) and time.time() < deadline:
        time.sleep(0.05)
    with LoadedModel(TINY, SETTINGS) as restarted:
        restarted.keep_prefixes(tmp_path)
        after_restart, logits, _ = prefill(restarted)
        assert after_restart.reused == declarations  # the first request after a restart starts warm
        assert np.abs(logits - first_logits).max() < 0.5 and put_back_exactly(restarted)
    with LoadedModel(TINY, RunSettings(n_ctx=2048, n_batch=256, n_ubatch=256)) as other:
        other.keep_prefixes(tmp_path)  # another context size: another identity, nothing put back
        assert prefill(other)[0].reused == 0


def test_a_seeded_request_neither_keeps_nor_uses_a_prefix(tmp_path, llama_cpp_available):
    with LoadedModel(TINY, SETTINGS) as loaded:
        loaded.keep_prefixes(tmp_path)
        tools = ToolSetup(HA_INTENTS, "auto").declarations()
        seeded = loaded.chat(ASK, GREEDY.with_(max_tokens=4, seed=3), tools=tools)
        seeded.run()
        assert seeded.prefill.reused == 0 and not loaded.engine.prefixes.best(loaded.engine.cached)
    assert not list(tmp_path.glob("*.kv"))


def test_a_cache_that_ran_past_the_sliding_window_is_evaluated_again(llama_cpp_available):
    # Gemma's sliding-window layers keep only the last 512 positions: after a long reply, the window
    # before an earlier prompt's end is gone, and reusing that prefix would attend to nothing.
    with LoadedModel(TINY, SETTINGS) as loaded:
        prompt = "The story of the lighthouse keeper begins on a grey morning."
        short = loaded.complete(prompt, GREEDY.with_(max_tokens=8))
        short.run()
        assert loaded.complete(prompt + " More.", GREEDY.with_(max_tokens=1)).run() is not None
        assert loaded.engine.last_prefill.reused > 5  # a short reply: the prefix is reused
        long = loaded.complete(prompt, GREEDY.with_(max_tokens=900))
        long.run()
        assert long.stats.generated_tokens > 600
        loaded.complete(prompt + " More.", GREEDY.with_(max_tokens=1)).run()
        assert loaded.engine.last_prefill.reused == 0


def test_the_folder_keeps_only_the_newest_states(tmp_path):
    from edge.model.engine.prefixes import MAX_ON_DISK

    store = PrefixStore(IDENTITY, tmp_path)
    for n in range(MAX_ON_DISK + 3):
        store._save(PrefixSnapshot(tuple(range(n, n + 200)), bytes(1000)))
        time.sleep(0.01)
    kept = sorted(tmp_path.glob("*.kv"))
    assert len(kept) == MAX_ON_DISK
    assert store.path_for(PrefixSnapshot(tuple(range(MAX_ON_DISK + 2, MAX_ON_DISK + 202)), b"")) in kept
