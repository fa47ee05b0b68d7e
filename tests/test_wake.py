"""The wake word, with speech made by the bundled Piper voice in the test itself: detection, the gate
(request cut after the name, follow-ups, speech not meant for the assistant), the voice loop with it,
from arrays and from files, and one-line errors."""

import time

import numpy as np
import pytest
from audio_support import silence
from cli_helpers import assert_one_line_error, edge_gemma
from conftest import FIXTURES

from edge.audio.capture import ArraySource, FilteredSource
from edge.audio.piper import PiperBackend
from edge.audio.resample import resample
from edge.audio.wake import BUNDLED, WakeWord, check_wake_word, detections
from edge.audio_format import SAMPLE_RATE
from edge.errors import AudioError
from edge.model.engine import GREEDY, LoadedModel
from edge.settings import RunSettings
from edge.voice.audio_conversation import AudioConversation
from edge.voice.loop import VoiceLoop

TINY = FIXTURES / "gemma4-tiny"


@pytest.fixture(scope="module")
def piper():
    return PiperBackend("joe")


@pytest.fixture(scope="module")
def say(piper):
    def spoken(text: str, speed: float = 1.0) -> np.ndarray:
        pcm, rate = piper.synthesize(text, speed=speed)
        return resample(pcm, rate, SAMPLE_RATE)

    return spoken


def test_hey_jarvis_is_heard_and_nothing_else_is(say):
    wake = WakeWord("hey_jarvis")
    named = np.concatenate([silence(0.5), say("Hey Jarvis. What time is it?"), silence(0.5)])
    found = detections(wake, named)
    assert len(found) == 1 and 0.5 < found[0] < 2.5  # once, right after the name
    for other in ("okay_nabu", "alexa"):
        assert detections(WakeWord(other), named) == []
    plain = np.concatenate([silence(0.5), say("What time is it? Turn on the kitchen light."), silence(0.5)])
    assert detections(WakeWord("hey_jarvis"), plain) == []


def test_one_detection_per_name_and_a_new_stream_starts_afresh(say):
    """After a detection the detector rests (REFRACTORY_S), so a name said twice in a breath is one
    wake; reset() is a new stream: a detection at the end of the last one silences nothing."""
    wake = WakeWord("hey_jarvis")
    name = np.concatenate([silence(0.3), say("Hey Jarvis."), silence(0.1)])
    assert len(detections(wake, np.concatenate([name, name]))) == 1
    wake.reset()
    for _ in range(3):  # as scripts/wake_words.py hears clip after clip
        assert len(detections(wake, name)) == 1
        wake.reset()


def test_a_name_in_the_middle_of_a_sentence_is_heard(say):
    mid = np.concatenate([say("I was thinking, hey Jarvis, set a timer."), silence(0.5)])
    assert len(detections(WakeWord("hey_jarvis"), mid)) == 1


def test_unknown_wake_words_are_one_line_listing_the_names(tmp_path):
    with pytest.raises(AudioError, match="choose " + ", ".join(BUNDLED)):
        check_wake_word("computer")
    with pytest.raises(AudioError, match="not found"):
        check_wake_word(str(tmp_path / "missing.tflite"))
    result = edge_gemma("voice", "--wake-word", "computer", "--tts", "none", "-m", "demo")
    assert_one_line_error(result, "unknown wake word 'computer'", "hey_jarvis")


# --- in the voice loop -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def conversation(llama_cpp_available):
    settings = RunSettings(n_ctx=4096, n_threads=2, n_threads_batch=2, n_batch=256, n_ubatch=256)
    with LoadedModel(TINY / "tiny-gemma-4-E2B.gguf", settings) as loaded:
        loaded.attach_projector(TINY / "mmproj-tiny-gemma-4-E2B.gguf")
        yield AudioConversation(loaded, system_prompt="You are a test assistant.")


def run_loop(conversation, stream, **kwargs):
    conversation.forget()
    loop = VoiceLoop(
        conversation, ArraySource(stream), wake=WakeWord("hey_jarvis"), sampling=GREEDY.with_(max_tokens=4), **kwargs
    )
    return loop, loop.run()


def test_requests_after_the_name_are_answered_and_the_name_is_not_heard_by_the_model(conversation, say):
    request = say("What time is it?")
    in_one_breath = np.concatenate([silence(0.5), say("Hey Jarvis, what time is it?"), silence(1.5)])
    loop, turns = run_loop(conversation, in_one_breath)
    assert loop.wakes == 1 and len(turns) == 1
    assert turns[0].speech_s < len(request) / SAMPLE_RATE + 0.6  # the clip was cut after the name
    with_pause = np.concatenate([silence(0.5), say("Hey Jarvis."), silence(1.0), request, silence(1.5)])
    loop, turns = run_loop(conversation, with_pause)
    assert loop.wakes == 1 and len(turns) == 1  # the name alone made no turn; the request did


def test_speech_without_the_name_starts_no_turn(conversation, say):
    talk = [say(t) for t in ("The weather is nice today.", "Turn on the kitchen light.", "What time is it?")]
    stream = np.concatenate([silence(0.5)] + [np.concatenate([t, silence(1.2)]) for t in talk] * 16)
    assert len(stream) / SAMPLE_RATE > 110  # two minutes of talk in the room
    loop, turns = run_loop(conversation, stream)
    assert turns == [] and loop.wakes == 0 and loop.discarded_starts == 0


def test_a_follow_up_needs_no_name_but_later_speech_does(conversation, say):
    q = say("What time is it?")
    stream = np.concatenate(
        [silence(0.5), say("Hey Jarvis."), silence(0.6), q, silence(1.5), q, silence(12.0), q, silence(1.5)]
    )
    loop, turns = run_loop(conversation, stream, follow_up_s=6.0)
    assert loop.wakes == 1 and len(turns) == 2  # the request and its follow-up; not the one 12 s later


def test_without_a_wake_word_every_utterance_is_a_turn_as_before(conversation, say):
    conversation.forget()
    stream = np.concatenate([silence(0.5), say("What time is it?"), silence(1.5)])
    loop = VoiceLoop(conversation, ArraySource(stream), sampling=GREEDY.with_(max_tokens=4))
    assert len(loop.run()) == 1


def test_voice_from_a_file_with_the_wake_word(tmp_path, say, llama_cpp_available):
    from edge.audio.files import save_wav

    stream = np.concatenate(
        [silence(0.5), say("The news at nine."), silence(1.2), say("Hey Jarvis, what time is it?"), silence(1.5)]
    )
    wav = save_wav(tmp_path / "room.wav", stream)
    log = tmp_path / "turns.jsonl"
    args = ["-m", str(TINY / "tiny-gemma-4-E2B.gguf"), "--mmproj", str(TINY / "mmproj-tiny-gemma-4-E2B.gguf")]
    result = edge_gemma(
        "voice",
        "--file",
        str(wav),
        "--fast",
        "--tts",
        "none",
        "--wake-word",
        "hey_jarvis",
        "-n",
        "4",
        "--log",
        str(log),
        *args,
    )
    assert result.returncode == 0, result.stderr
    assert 'say "Hey Jarvis" first' in result.stderr
    assert len(log.read_text().splitlines()) == 1  # the news made no turn, and none was logged


def test_the_wake_word_through_portaudio_and_the_null_sink(conversation, say, null_sink, tmp_path):
    """Piper speech played into PulseAudio's null sink and captured by sounddevice: a request without
    the name starts nothing; with it, one turn."""
    import threading
    import time

    from audio_support import play_into_sink

    from edge.audio.capture import MicrophoneSource

    conversation.forget()
    with MicrophoneSource() as mic:
        loop = VoiceLoop(conversation, mic, wake=WakeWord("hey_jarvis"), sampling=GREEDY.with_(max_tokens=4))
        deadline = time.time() + 10
        while mic.read(timeout=0.5) is None and time.time() < deadline:
            pass  # the stream is flowing
        stop = threading.Event()
        threading.Timer(25, stop.set).start()
        player = threading.Thread(
            target=lambda: [
                play_into_sink(np.concatenate([say("What time is it?"), silence(1.5)]), tmp_path, null_sink),
                play_into_sink(
                    np.concatenate([say("Hey Jarvis, what time is it?"), silence(0.3)]), tmp_path, null_sink
                ),
            ]
        )
        player.start()
        turns = loop.run(max_turns=1, stop=stop)
        player.join()
        stop.set()
    assert loop.wakes == 1 and len(turns) == 1


# --- a loudspeaker: barge-in by name -----------------------------------------------------------------


def test_by_name_a_reply_stops_for_the_wake_word_and_not_for_other_speech(conversation, say):
    """--barge-in name: the microphone may hear the reply (a loudspeaker), so only the name stops it;
    other speech during the reply neither stops it nor becomes a turn."""
    from edge.audio.playback import NullSink
    from edge.audio.tts import Speaker
    from edge.audio.tts_backends import EspeakBackend

    long_reply = "This is a long reply that goes on and on. " * 6

    def run(stream, *, cancelled_out=False):
        class SpeakingFirst(ArraySource):
            def read(self, timeout=None):
                if not self.started:
                    self.started = True
                    loop.speaker.say(long_reply)
                time.sleep(0.02)  # about real time, so the reply is still playing when the speech comes
                return super().read(timeout)

        conversation.forget()
        sink = NullSink(realtime=True)
        source = SpeakingFirst(stream)
        source.started = False
        wake_audio = None
        if cancelled_out:  # a canceller that takes everything out, whose other stream keeps the speech
            heard = {}
            source = FilteredSource(source, lambda block: (heard.update(block=block), block * 0)[1])
            wake_audio = lambda: heard["block"]  # noqa: E731
        loop = VoiceLoop(
            conversation,
            source,
            sink=sink,
            speaker_factory=lambda s: Speaker(EspeakBackend(), s),
            wake=WakeWord("hey_jarvis"),
            barge_in="name",
            sampling=GREEDY.with_(max_tokens=4),
            wake_audio=wake_audio,
        )
        with sink:
            turns = loop.run(max_turns=1)
        return turns, sink

    named = np.concatenate([silence(1.0), say("Hey Jarvis, what time is it?"), silence(1.5)])
    turns, sink = run(named)
    assert len(turns) == 1 and turns[0].barged_in and turns[0].barge_in_by == "name"
    assert sink.played_seconds < sum(len(x) for x in sink.played) / 16000  # cut, not played out

    unnamed = np.concatenate([silence(1.0), say("What time is it?"), silence(1.5)])
    turns, sink = run(unnamed)
    assert turns == []  # heard during our own reply: not a turn, and the reply went on

    # With the echo canceller on, the wake word hears another stream than the end-pointer (the filter's
    # output before the end-pointer's gate): here the canceller leaves nothing, and the name
    # heard on the other stream still stops the reply.
    turns, sink = run(named, cancelled_out=True)
    assert sink.played_seconds < sum(len(x) for x in sink.played) / 16000


def test_barge_in_by_name_needs_a_wake_word():
    result = edge_gemma("voice", "--barge-in", "name", "--wake-word", "none", "--tts", "none", "-m", "demo")
    assert_one_line_error(result, "--barge-in name", "--wake-word")


@pytest.mark.parametrize("spec", ["micro:okay_nabu", "open:okay_nabu", "micro:hey_jarvis", "open:hey_jarvis"])
def test_both_engines_hear_their_names(say, spec):
    wake = WakeWord(spec)
    assert wake.label == spec
    named = np.concatenate([silence(0.5), say(f"{wake.phrase}, what time is it?"), silence(0.5)])
    assert len(detections(wake, named)) == 1
    plain = np.concatenate([silence(0.5), say("What time is it? Turn on the kitchen light."), silence(0.5)])
    assert detections(WakeWord(spec), plain) == []


def test_engine_choice_is_checked():
    assert WakeWord("okay_nabu").engine == "open" and WakeWord("hey_jarvis").engine == "open"
    assert WakeWord("alexa").engine == "micro" and WakeWord("hey_mycroft").engine == "micro"
    assert WakeWord("hey_rhasspy").engine == "open"
    with pytest.raises(AudioError, match="hey_rhasspy is openWakeWord's only"):
        check_wake_word("micro:hey_rhasspy")


def test_a_bare_name_takes_the_engine_the_measurement_picked():
    """docs/performance.md ("Wake words") names each name's winner; DEFAULT_ENGINES must agree with it."""
    import re
    from pathlib import Path

    from edge.audio.wake import DEFAULT_ENGINES

    doc = (Path(__file__).parent.parent / "docs" / "performance.md").read_text()
    picked = dict(re.findall(r"(\w+): (micro|open) \(micro:", doc.split("DEFAULT_ENGINES): ", 1)[1].split("\n", 1)[0]))
    assert picked and picked == DEFAULT_ENGINES


def test_each_model_listens_at_the_threshold_the_report_measured():
    """docs/performance.md ("Wake words") gives the threshold each model was measured at, and its makers'
    in brackets where scripts/wake_thresholds.py lowered it; a voice loop listens at the same one."""
    import re
    from pathlib import Path

    doc = (Path(__file__).parent.parent / "docs" / "performance.md").read_text()
    section = doc.split("## Wake words", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| ((?:micro|open):\w+) \| ([\d.]+)(?: \(([\d.]+)\))? \|", section, re.M)
    assert len(rows) == 8, rows
    for spec, used, own in rows:
        wake = WakeWord(spec)
        assert wake.threshold == pytest.approx(float(used), abs=0.005), spec
        assert wake.model_threshold == pytest.approx(float(own or used), abs=0.005), spec
        assert wake.threshold <= wake.model_threshold
        wake.close()


def test_thresholds_are_tuned_on_speech_the_report_does_not_hear(monkeypatch):
    """scripts/wake_thresholds.py chooses THRESHOLDS; scripts/wake_words.py reports recall and false
    accepts at them: no request and no name-free sentence is in both."""
    import itertools
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).parent.parent / "scripts"))
    import wake_thresholds
    import wake_words

    assert set(wake_thresholds.REQUESTS).isdisjoint(wake_words.REQUESTS)
    sentences = [set(itertools.product(m.SUBJECTS, m.VERBS, m.ENDINGS)) for m in (wake_thresholds, wake_words)]
    assert sentences[0].isdisjoint(sentences[1])
    assert set(wake_thresholds.OPENERS).isdisjoint(wake_words.OPENERS)  # "Okay," there, "Okay then," here
    assert wake_thresholds.choose([0.519, 0.3], own=0.85) == pytest.approx(0.619)  # 0.1 over the loudest
    assert wake_thresholds.choose([0.966], own=0.95) == 0.95  # never above the makers'
    assert wake_thresholds.choose([0.026], own=0.97) == wake_thresholds.FLOOR
