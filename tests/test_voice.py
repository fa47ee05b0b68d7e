"""The voice pipeline end to end on the tiny Gemma 4: real speech in, reply out, spoken, as text history.

The tiny model's weights are random, so replies are noise: these tests check the plumbing (audio
tokens, prefix reuse, history, stats, speech out), never what is said.
"""

import time

import numpy as np
import pytest
from audio_support import play_into_sink, require_espeak, silence, speech, true_bounds
from cli_helpers import assert_one_line_error, edge_gemma
from conftest import FIXTURES

from edge.audio.capture import ArraySource, MicrophoneSource
from edge.audio.playback import NullSink
from edge.audio.tts import Speaker
from edge.audio.tts_backends import EspeakBackend
from edge.errors import AudioError
from edge.model.engine import GREEDY, LoadedModel
from edge.settings import RunSettings
from edge.voice.audio_conversation import AudioConversation
from edge.voice.loop import VoiceLoop

TINY = FIXTURES / "gemma4-tiny"
MODEL, MMPROJ = TINY / "tiny-gemma-4-E2B.gguf", TINY / "mmproj-tiny-gemma-4-E2B.gguf"
SETTINGS = RunSettings(n_ctx=4096, n_threads=2, n_threads_batch=2, n_batch=256, n_ubatch=256)


@pytest.fixture(scope="module")
def conversation(llama_cpp_available):
    with LoadedModel(MODEL, SETTINGS) as loaded:
        loaded.attach_projector(MMPROJ)
        yield AudioConversation(loaded, system_prompt="You are a test assistant. " * 8)


@pytest.fixture(scope="module")
def question():
    require_espeak()
    return speech("What is the capital of France?")


def test_a_spoken_turn_streams_a_reply_and_becomes_text_history(conversation, question):
    conversation.history = conversation.history[:1]
    generation = conversation.reply(question, sampling=GREEDY.with_(max_tokens=8))
    pieces = list(generation)
    heard = conversation.last_heard
    assert abs(heard.media_tokens - 25 * len(question) / 16000) <= 3  # 25 audio tokens per second
    assert heard.encode_ms > 0 and generation.stats.generated_tokens >= 1
    assert "".join(pieces) == generation.text
    transcript = conversation.remember(generation.text)
    assert [m["role"] for m in conversation.history] == ["system", "user", "assistant"]
    assert conversation.history[1]["content"] == (transcript or "(spoken message)")
    assert conversation.marker not in str(conversation.history)  # no audio left in the history


def test_the_next_turn_reuses_the_cached_system_prompt(conversation, question):
    conversation.history = conversation.history[:1]
    conversation.reply(question, sampling=GREEDY.with_(max_tokens=4)).run()
    conversation.remember("Paris.", transcribe=False)
    system_tokens = conversation.loaded.count_tokens(
        conversation.loaded.chat_prompt(
            [{"role": "system", "content": conversation.history[0]["content"]}, {"role": "user", "content": "x"}]
        ).text.split("x")[0]
    )
    generation = conversation.reply(question, sampling=GREEDY.with_(max_tokens=4))
    generation.run()
    prefill = generation.stats.prefill
    # Everything up to the end of the system prompt came from the cache, not from a new evaluation.
    assert prefill.reused >= system_tokens - 1 and prefill.evaluated == prefill.prompt_tokens - prefill.reused


def test_a_model_that_cannot_hear_is_refused(demo_gguf, llama_cpp_available):
    with LoadedModel(demo_gguf, RunSettings(n_ctx=512)) as loaded:
        with pytest.raises(AudioError, match="edge-gemma setup"):
            AudioConversation(loaded)
        with pytest.raises(AudioError, match="edge-gemma setup"):
            loaded.attach_projector(MMPROJ)


def test_voice_loop_turns_from_a_file_backed_source_are_spoken(conversation, question):
    conversation.history = conversation.history[:1]
    stream = np.concatenate([silence(0.5), question, silence(2.0), question, silence(1.5)])
    sink = NullSink()
    loop = VoiceLoop(
        conversation,
        ArraySource(stream, realtime=True),  # at speaking pace: the timeline is the one a listener lives
        sink=sink,
        speaker_factory=lambda s: Speaker(EspeakBackend(), s),
        sampling=GREEDY.with_(max_tokens=12),
    )
    with sink:
        turns = loop.run()
    assert len(turns) == 2  # two utterances, two turns
    for turn in turns:
        assert 1.0 < turn.speech_s < 5.0 and turn.audio_tokens > 20 and turn.reply_tokens >= 1
        assert turn.decode_tps > 0 and turn.ttft_s > 0
    spoken = [t for t in turns if t.first_sound_s is not None]
    assert spoken and all(t.first_sound_s >= t.ttft_s for t in spoken)
    assert len(conversation.history) == 5  # system + two (user, assistant) pairs
    for turn in spoken:  # every stage of the wait is timed, in the order it happens
        order = [
            "reply_start",
            "audio_eval_start",
            "audio_eval_end",
            "first_token",
            "first_clause",
            "synth_done",
            "first_sample",
            "audible",
        ]
        times = [turn.timeline[stage] for stage in order]
        assert times == sorted(times) and times[0] >= 0
        assert turn.timeline["clip_closed"] == pytest.approx(turn.endpoint_delay_s, abs=0.05)
        assert turn.first_sound_s == turn.timeline["audible"]
        assert turn.pipeline_s == pytest.approx(turn.timeline["audible"] - turn.model_s, abs=0.002)


def test_a_reply_started_in_a_pause_is_dropped_when_speech_resumes(conversation, question):
    """Speculative start: a 0.45 s pause starts a reply (after 0.25 s) but is not the end of the turn
    (0.7 s): the talking goes on, the reply is thrown away unseen and unremembered, and the one
    turn that follows hears both halves."""
    conversation.forget()
    start, end = true_bounds(question)
    # espeak-ng ends the question with 0.3 s of silence: the pause between the halves is 0.45 s.
    stream = np.concatenate([silence(0.5), question, silence(0.15), question, silence(1.5)])
    shown: list[str] = []
    source = ArraySource(stream, realtime=True)  # the reply is under way while the talking goes on
    loop = VoiceLoop(conversation, source, sampling=GREEDY.with_(max_tokens=8), on_text=shown.append)
    turns = loop.run()
    assert loop.discarded_starts == 1 and len(turns) == 1
    turn = turns[0]
    assert turn.discarded_starts == 1 and turn.speculative  # the kept reply also started early
    assert turn.speech_s > 2 * (end - start)  # both halves were heard as one clip
    assert turn.timeline["reply_start"] < turn.timeline["clip_closed"]
    assert "".join(shown).strip() == turn.reply  # the dropped reply's text was never shown
    assert [m["role"] for m in conversation.history] == ["system", "user", "assistant"]


def test_without_early_replies_every_turn_waits_for_the_end_point(conversation, question):
    conversation.forget()
    stream = np.concatenate([silence(0.5), question, silence(0.15), question, silence(1.5)])
    loop = VoiceLoop(conversation, ArraySource(stream), sampling=GREEDY.with_(max_tokens=4), speculate_after_s=None)
    turns = loop.run()
    assert len(turns) == 1 and loop.discarded_starts == 0 and not turns[0].speculative
    assert turns[0].timeline["reply_start"] >= turns[0].timeline["clip_closed"]


def test_live_capture_through_portaudio_reaches_the_model(conversation, null_sink, tmp_path):
    """espeak-ng speech played into PulseAudio's null sink, captured by sounddevice, answered."""
    conversation.history = conversation.history[:1]
    utterance = speech("Hello, can you hear me?")
    with MicrophoneSource() as mic:
        loop = VoiceLoop(conversation, mic, sampling=GREEDY.with_(max_tokens=4))
        deadline = time.time() + 10
        while mic.read(timeout=0.5) is None and time.time() < deadline:
            pass  # the stream is flowing
        play_into_sink(np.concatenate([utterance, silence(0.2)]), tmp_path, null_sink)
        turns = _run_for(loop, mic, seconds=20)
    assert len(turns) == 1
    assert abs(turns[0].speech_s - len(utterance) / 16000) < 1.0


def _run_for(loop, mic, seconds):
    """Run the loop until one turn is done or time is up (a microphone never ends by itself)."""
    import threading

    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    try:
        return loop.run(max_turns=1, stop=stop)
    finally:
        timer.cancel()


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory):
    """The same question as WAV 16 kHz mono, WAV 44.1 kHz stereo, FLAC and MP3 (made with sox)."""
    import shutil
    import subprocess

    require_espeak()
    from audio_support import require_sox

    require_sox()
    folder = tmp_path_factory.mktemp("audio")
    source = folder / "source.wav"
    subprocess.run(["espeak-ng", "-w", str(source), "What is the capital of France?"], check=True)
    out = {}
    for name, args in {
        "16k.wav": ["-r", "16000", "-c", "1"],
        "44k-stereo.wav": ["-r", "44100", "-c", "2"],
        "q.flac": ["-r", "22050"],
        "q.mp3": ["-r", "44100"],
    }.items():
        subprocess.run(["sox", str(source), *args, str(folder / name)], check=True)
        out[name] = folder / name
    assert shutil.which("sox")
    return out


@pytest.mark.parametrize("name", ["16k.wav", "44k-stereo.wav", "q.flac", "q.mp3"])
def test_transcribe_and_ask_take_wav_flac_and_mp3(audio_files, name, llama_cpp_available):
    args = ["-m", str(MODEL), "--mmproj", str(MMPROJ), "-c", "2048"]
    transcribed = edge_gemma("transcribe", str(audio_files[name]), *args)
    assert transcribed.returncode == 0, transcribed.stderr
    asked = edge_gemma("ask", "--audio", str(audio_files[name]), *args, "-n", "6", "What did I ask?")
    assert asked.returncode == 0, asked.stderr
    assert "tok/s" in asked.stderr


def test_voice_from_a_file_logs_each_turn(audio_files, tmp_path, llama_cpp_available):
    import json

    from edge.paths import user_profiles_dir
    from edge.profiles import builtin_profiles_dir

    # A shelf speaker's profile turns the echo canceller on: it holds where it applies, not for a file.
    user_profiles_dir().mkdir(parents=True, exist_ok=True)
    generic = (builtin_profiles_dir() / "generic.toml").read_text()
    shelf = generic.replace('family = "generic"', 'family = "shelf"') + 'echo_cancel = "on"\n'
    (user_profiles_dir() / "shelf.toml").write_text(shelf)
    log = tmp_path / "turns.jsonl"
    result = edge_gemma(
        "voice",
        "--device",
        "shelf",
        "--file",
        str(audio_files["16k.wav"]),
        "--tts",
        "none",
        "--verbose",
        "--log",
        str(log),
        "-m",
        str(MODEL),
        "--mmproj",
        str(MMPROJ),
        "-c",
        "2048",
        "--max-tokens",
        "5",
    )
    assert result.returncode == 0, result.stderr
    assert "encode" in result.stderr and "first token" in result.stderr
    record = json.loads(log.read_text().splitlines()[0])
    assert record["audio_tokens"] > 20 and record["speech_s"] > 1
    assert 0 < record["reply_tokens"] <= 5
    asked_on = edge_gemma("voice", "--file", str(audio_files["16k.wav"]), "--echo-cancel", "on", "-m", str(MODEL))
    assert_one_line_error(asked_on, "live microphone")


def test_audio_commands_refuse_bad_input(tmp_path, demo_gguf, audio_files):
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all")
    args = ["-m", str(MODEL), "--mmproj", str(MMPROJ)]
    assert_one_line_error(edge_gemma("transcribe", str(text), *args), "notes.wav")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert_one_line_error(edge_gemma("ask", "--audio", str(empty), *args))
    assert_one_line_error(edge_gemma("ask", "--audio", str(audio_files["16k.wav"]), "-m", "demo"), "mmproj")
    assert_one_line_error(
        edge_gemma("ask", "--audio", str(audio_files["16k.wav"]), "-m", "demo", "--mmproj", str(MMPROJ)), "Gemma 4"
    )
    silent = tmp_path / "silence.wav"
    from edge.audio.files import save_wav

    save_wav(silent, np.zeros(16000 * 2, dtype=np.float32))
    assert_one_line_error(edge_gemma("transcribe", str(silent), *args), "no speech")


def test_silence_and_steady_noise_make_no_turn_and_no_model_call(conversation):
    rng = np.random.default_rng(3)
    stream = np.concatenate([silence(2.0), (0.02 * rng.standard_normal(16000 * 4)).astype(np.float32)])
    loop = VoiceLoop(conversation, ArraySource(stream))
    assert loop.run() == []
    # The cache holds only what the loop evaluated before anyone spoke (prime): priming again finds
    # nothing to drop or add, so no audio was heard and no reply was made.
    after_loop = list(conversation.loaded.engine.cached)
    assert conversation.prime().evaluated == 0
    assert conversation.loaded.engine.cached == after_loop


def test_talking_over_a_reply_stops_the_speech(conversation, question):
    """Barge-in: the user speaks while the assistant is still talking; it stops and listens."""
    conversation.history = conversation.history[:1]
    sink = NullSink(realtime=True)  # playback takes as long as the speech would
    long_reply = "This is a long reply that goes on and on. " * 6

    class TalkingWhileListening(ArraySource):
        """Starts the assistant talking, then delivers the user's speech at about real time."""

        def read(self, timeout=None):
            if not self.started:
                self.started = True
                loop.speaker.say(long_reply)
            time.sleep(0.02)
            return super().read(timeout)

    source = TalkingWhileListening(np.concatenate([silence(1.0), question, silence(1.5)]))
    source.started = False
    loop = VoiceLoop(
        conversation,
        source,
        sink=sink,
        speaker_factory=lambda s: Speaker(EspeakBackend(), s),
        sampling=GREEDY.with_(max_tokens=4),
    )
    with sink:
        turns = loop.run(max_turns=1)
    assert len(turns) == 1 and turns[0].barged_in
    full = sum(len(x) for x in sink.played) / 16000
    assert sink.played_seconds < full  # the long reply was cut, not played out


@pytest.fixture(scope="module")
def small_context(llama_cpp_available):
    """The tiny Gemma 4 at n_ctx 1024: a long session must keep fitting its history into it."""
    settings = RunSettings(n_ctx=1024, n_threads=2, n_threads_batch=2, n_batch=256, n_ubatch=256)
    with LoadedModel(MODEL, settings) as loaded:
        loaded.attach_projector(MMPROJ)
        yield AudioConversation(loaded, system_prompt="You are a test assistant. " * 8)


def test_thirty_spoken_turns_in_a_small_context_are_all_answered(small_context, question):
    small_context.forget()
    stream = np.concatenate([silence(0.5)] + [np.concatenate([question, silence(1.0)]) for _ in range(30)])
    notes = []
    loop = VoiceLoop(small_context, ArraySource(stream), sampling=GREEDY.with_(max_tokens=24), on_note=notes.append)
    turns = loop.run()
    assert len(turns) == 30 and loop.failed_turns == 0 and notes == []
    assert all(t.reply_tokens >= 1 for t in turns)
    assert sum(t.dropped_turns for t in turns) > 0  # the history outgrew 1024 tokens and was trimmed
    assert small_context.history[0]["role"] == "system"  # pinned through every drop
    assert len(small_context.loaded.engine.cached) <= 1024


def test_a_quiet_period_starts_a_fresh_conversation(small_context, question):
    small_context.forget()
    stream = np.concatenate([question, silence(1.5), question, silence(8.0), question, silence(1.0)])
    notes = []
    loop = VoiceLoop(
        small_context,
        ArraySource(stream),
        sampling=GREEDY.with_(max_tokens=4),
        on_note=notes.append,
        forget_after_s=5.0,
    )
    assert len(loop.run()) == 3
    assert len(notes) == 1 and notes[0].startswith("new conversation after")
    assert [m["role"] for m in small_context.history] == ["system", "user", "assistant"]  # the third turn only


def test_a_turn_that_cannot_fit_is_reported_and_the_loop_goes_on(small_context, question):
    small_context.forget()
    # About 25 s of speech without a pause long enough to end the turn: 650 audio tokens, too many
    # for a 1024 context once the reply and the transcript step have their room.
    long_turn = np.concatenate([np.concatenate([question, silence(0.15)]) for _ in range(13)])
    stream = np.concatenate([long_turn, silence(1.5), question, silence(1.0)])
    notes = []
    loop = VoiceLoop(small_context, ArraySource(stream), sampling=GREEDY.with_(max_tokens=200), on_note=notes.append)
    turns = loop.run()
    assert loop.failed_turns == 1 and len(turns) == 1  # the next utterance was still answered
    assert "that turn failed" in notes[0] and "raise --ctx or speak in shorter turns" in notes[0]
    assert len(small_context.history) == 3  # the failed turn left the conversation as it was


def test_the_microphone_going_away_and_coming_back_does_not_end_the_session(conversation, null_sink, tmp_path):
    """The PulseAudio null sink (whose monitor is the microphone) is unloaded under a running loop, then
    loaded again: the loop says so, waits, resumes, and answers the next utterance."""
    import subprocess
    import threading

    from audio_support import START_AUDIO

    from edge.audio.reconnect import ReconnectingMicrophone

    conversation.forget()
    utterance = np.concatenate([speech("Hello, can you hear me?"), silence(0.3)])
    events: list[str] = []
    mic = ReconnectingMicrophone(MicrophoneSource(), wait_s=60, poll_s=0.3, on_event=events.append)
    loop = VoiceLoop(conversation, mic, sampling=GREEDY.with_(max_tokens=4))
    stop = threading.Event()
    with mic:
        runner = threading.Thread(target=lambda: loop.run(max_turns=2, stop=stop), daemon=True)
        runner.start()
        time.sleep(1.0)
        play_into_sink(utterance, tmp_path, null_sink)
        _wait_until(lambda: len(loop.turns) == 1, 30)
        module = next(
            line.split()[0]
            for line in subprocess.run(
                ["pactl", "list", "short", "modules"], capture_output=True, text=True
            ).stdout.splitlines()
            if "module-null-sink" in line and null_sink in line
        )
        subprocess.run(["pactl", "unload-module", module], check=True)
        _wait_until(lambda: any("is gone" in e for e in events), 15)
        subprocess.run(["bash", str(START_AUDIO)], check=True, capture_output=True, timeout=60)
        _wait_until(lambda: any("back" in e for e in events), 15)
        time.sleep(1.0)
        play_into_sink(utterance, tmp_path, null_sink)
        _wait_until(lambda: len(loop.turns) == 2, 30)
        stop.set()
        runner.join(timeout=10)
    assert len(loop.turns) == 2 and mic.reconnects == 1 and loop.failed_turns == 0
    assert len(conversation.history) == 5  # the turn before the loss is still remembered


def _wait_until(condition, seconds: float) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


def test_a_file_ending_mid_reply_finishes_the_turn_before_the_model_is_freed(
    audio_files, tmp_path, llama_cpp_available
):
    # The reply (tools offered, as by default) is still decoding when the file ends: the command
    # waits for it, logs it and exits 0; the model is never freed under the decode.
    import json

    log = tmp_path / "turns.jsonl"
    args = ["--file", str(audio_files["16k.wav"]), "--tts", "none", "--log", str(log), "--max-tokens", "700"]
    result = edge_gemma("voice", *args, "-m", str(MODEL), "--mmproj", str(MMPROJ), "-c", "2048")
    assert result.returncode == 0 and "crashed" not in result.stderr, result.stderr
    [record] = [json.loads(line) for line in log.read_text().splitlines()]
    assert record["reply_tokens"] > 0 and record["reply"]


def test_ctrl_c_mid_reply_in_voice_exits_130_without_a_crash(audio_files, tmp_path, llama_cpp_available):
    import signal
    import subprocess
    import sys

    args = ["--file", str(audio_files["16k.wav"]), "--tts", "none", "--max-tokens", "3000", "--verbose"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "voice", *args, "-m", str(MODEL), "--mmproj", str(MMPROJ), "-c", "4096"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen, deadline = "", time.time() + 120
    while len(seen.strip()) < 40 and time.time() < deadline:  # the reply is streaming to stdout
        seen += proc.stdout.read(1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, seen + err
    assert "Traceback" not in err and "crashed" not in err and "Segmentation" not in err, err
