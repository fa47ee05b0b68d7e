"""The model hears a turn while it is spoken: exact windows, the same reply, and the voice loop's share.

Real components: the tiny Gemma 4 (real tokenizer and template, random weights, a 2-layer audio
encoder) and real espeak-ng speech. The encoder is exact (bit for bit) only with enough past audio,
so these tests compare bytes and greedy replies, never closeness.
"""

from __future__ import annotations

import statistics

import numpy as np
import pytest
from audio_support import require_espeak, silence, speech
from test_voice import MMPROJ, MODEL

from edge.audio.capture import ArraySource
from edge.errors import AudioError
from edge.model.engine import GREEDY, Generation, Listener, LoadedModel
from edge.model.engine.core import AUDIO_BATCH
from edge.settings import RunSettings
from edge.voice.audio_conversation import AudioConversation
from edge.voice.loop import VoiceLoop

SR = 16_000
SETTINGS = RunSettings(n_ctx=4096, n_threads=2, n_threads_batch=2, n_batch=256, n_ubatch=256)


@pytest.fixture(scope="module")
def loaded(llama_cpp_available):
    with LoadedModel(MODEL, SETTINGS) as model:
        model.attach_projector(MMPROJ)
        yield model


@pytest.fixture(scope="module")
def long_question():
    require_espeak()
    return speech(
        "Please turn on the lights in the kitchen, and then tell me what the weather will be like "
        "tomorrow morning, because I am planning a long walk by the river."
    )


def test_a_clip_heard_in_steps_has_the_whole_clips_rows_byte_for_byte(loaded, long_question):
    whole = loaded.projector.encode_audio(long_question)
    listener = Listener(loaded.projector)
    for seconds in (1.0, 1.7, 2.9, 4.4):
        early = listener.hear(long_question[: int(seconds * SR)])
        assert early is not None
        assert np.array_equal(early.embeddings, whole[: len(early.embeddings)])  # exact, not close
    final = listener.finish(long_question)
    assert np.array_equal(final.embeddings, whole)
    # Each step encoded a bounded window, not the clip so far: the work is not quadratic.
    window_s = (listener.warm_blocks + 1) * 0.48 + 1.6
    assert listener.work.steps == 5 and listener.work.encoded_seconds < 5 * window_s


def test_a_turn_heard_while_spoken_gives_the_same_greedy_reply_as_the_clip_evaluated_whole(loaded, long_question):
    prompt = loaded.chat_prompt([{"role": "user", "content": loaded.projector.marker + "Answer me."}]).text
    engine = loaded.engine

    engine.reset()
    engine.prefill(prompt, [long_question])
    whole = Generation(engine, "", GREEDY.with_(max_tokens=24), continues=True).run()

    engine.reset()
    listener = Listener(loaded.projector)
    for end in range(SR, len(long_question), SR):
        heard = listener.hear(long_question[:end])
        engine.prefill(prompt, [heard], audio_rows=len(heard.embeddings))
    final = engine.prefill(prompt, [listener.finish(long_question)])
    streamed = Generation(engine, "", GREEDY.with_(max_tokens=24), continues=True).run()

    assert streamed == whole and len(whole) > 0
    rows = len(listener.rows)
    assert final.last_media_reused >= rows - 2 * AUDIO_BATCH  # at most the last second was left
    assert final.evaluated < final.prompt_tokens / 3


def test_a_clip_that_is_dropped_leaves_the_next_turn_as_it_would_have_been(loaded, long_question):
    conversation = AudioConversation(loaded, system_prompt="You are a test assistant.")
    other = speech("What time is it?")
    conversation.listen(long_question[: 3 * SR])  # heard, then the speaker stopped: no turn
    after_drop = conversation.reply(other, sampling=GREEDY.with_(max_tokens=16)).run()
    loaded.engine.reset()
    clean = AudioConversation(loaded, system_prompt="You are a test assistant.")
    assert clean.reply(other, sampling=GREEDY.with_(max_tokens=16)).run() == after_drop
    assert conversation.history == clean.history  # nothing of the dropped clip was kept


def test_a_clip_that_does_not_continue_the_one_heard_is_refused(loaded, long_question):
    listener = Listener(loaded.projector)
    listener.hear(long_question[: 2 * SR])
    with pytest.raises(AudioError, match="does not continue"):
        listener.hear(long_question[SR : 4 * SR])


def test_the_transcript_step_gives_way_and_the_turn_stays_as_audio(loaded, long_question):
    conversation = AudioConversation(loaded, system_prompt="You are a test assistant.")
    reply = conversation.reply(long_question, sampling=GREEDY.with_(max_tokens=8)).run()
    assert conversation.remember(reply, give_way=lambda: True) is None
    kept = conversation.history[1]
    assert kept["content"] == conversation.marker and kept["audio"] is conversation.last_clip
    # The next question finds the kept audio in the cache: it is neither encoded nor evaluated again.
    generation = conversation.reply(speech("And tomorrow?"), sampling=GREEDY.with_(max_tokens=4))
    generation.run()
    assert loaded.engine.cached.index(kept["audio"].keys[-1]) < generation.prefill.reused
    assert conversation.last_listening.encoded_seconds < 2.0  # only the new question was encoded


def test_the_voice_loop_prefills_most_of_each_long_turn_while_it_is_spoken(loaded, long_question):
    """About 7 s of speech per turn at speaking pace: the median share prefilled before its end."""
    conversation = AudioConversation(loaded, system_prompt="You are a test assistant.")
    turn = np.concatenate([long_question[: 7 * SR], silence(1.5)])
    source = ArraySource(np.concatenate([silence(0.5), turn, turn, turn]), realtime=True)
    loop = VoiceLoop(conversation, source, sampling=GREEDY.with_(max_tokens=8))
    turns = loop.run(max_turns=3)
    assert len(turns) == 3 and loop.failed_turns == 0
    shares = [t.audio_tokens_early / t.audio_tokens for t in turns]
    assert statistics.median(shares) >= 0.8, shares
    assert all(t.first_token_s is not None for t in turns)


def test_a_transcription_heard_while_spoken_writes_what_the_whole_clip_gives(loaded, long_question):
    """Wyoming's path: `listen` steps under the transcription prompt, then `transcribe` at audio-stop
    reuses the rows heard early and writes the same greedy words as a clip heard only at its end."""
    import asyncio

    from edge.serve import tasks
    from edge.serve.worker import Job

    def job() -> Job:
        return Job(lambda job: None, asyncio.new_event_loop())

    whole = tasks.transcribe(loaded, long_question, job(), 24, hearing=tasks.Hearing("English"))
    loaded.engine.reset()
    hearing = tasks.Hearing("English")
    in_cache = [tasks.listen(loaded, hearing, long_question[: int(s * SR)]) for s in (1.0, 2.0, 3.0)]
    assert in_cache == sorted(in_cache) and in_cache[-1] >= 2 * AUDIO_BATCH
    early = tasks.transcribe(loaded, long_question, job(), 24, hearing=hearing)
    assert early.text == whole.text and early.tokens == whole.tokens
    assert whole.audio_tokens_early == 0 and early.audio_tokens_early == in_cache[-1]
    assert early.audio_tokens == whole.audio_tokens
