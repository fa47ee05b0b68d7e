"""End-pointing on real espeak-ng speech fed from arrays (fast; real capture is in test_audio_capture)."""

import numpy as np
import pytest
from audio_support import RATE, frame_levels, silence, speech, true_bounds

from edge.audio.capture import ArraySource
from edge.audio.vad import (
    MAX_CLIP_SECONDS,
    EndpointConfig,
    Endpointer,
    PushToTalk,
    iter_clips,
    segment,
    trim_silence,
)
from edge.errors import AudioError

TOLERANCE_S = 0.3
LONG_TEXT = (
    "The quick brown fox jumps over the lazy dog, and then it runs across the field to the river. "
    "Along the way it meets a rabbit, a squirrel and an old owl who tells it stories about the forest. "
) * 5


@pytest.fixture(scope="module")
def hello():
    return speech("Hello there, what is the weather like today?")


def noise(seconds, level, seed=0):
    return (np.random.default_rng(seed).standard_normal(int(seconds * RATE)) * level).astype(np.float32)


def test_one_utterance_one_clip_within_tolerance_and_pre_roll_kept(hello):
    x = np.concatenate([silence(1.0), hello, silence(1.5)])
    clips = segment(x)
    true_start, true_end = (1.0 + t for t in true_bounds(hello))
    assert len(clips) == 1
    c = clips[0]
    assert abs(c.speech_start_s - true_start) <= TOLERANCE_S and abs(c.speech_end_s - true_end) <= TOLERANCE_S
    assert c.start_s == pytest.approx(c.speech_start_s - 0.3, abs=0.011)  # the default pre-roll
    assert c.end_s == pytest.approx(c.speech_end_s + 0.2, abs=0.011)  # the default tail
    assert np.array_equal(c.pcm, x[int(round(c.start_s * RATE)) : int(round(c.end_s * RATE))])
    assert c.endpoint_delay_s == pytest.approx(0.7, abs=0.05) and c.reason == "pause"
    assert c.peak == pytest.approx(np.abs(hello).max()) and not c.clipped


def test_the_model_gets_the_speech_without_the_quiet_pre_roll_and_tail(hello):
    x = np.concatenate([silence(1.0), hello, silence(1.5)])
    clip = segment(x)[0]
    trimmed = trim_silence(clip, margin_s=0.06)
    start = int(round(clip.start_s * RATE)) + int(
        np.flatnonzero(np.all(np.lib.stride_tricks.sliding_window_view(clip.pcm, len(trimmed)) == trimmed, axis=1))[0]
    )
    true_start, true_end = (1.0 + t for t in true_bounds(hello))
    # Every frame of real speech is kept (no clipped first syllable or soft ending)...
    assert start / RATE <= true_start and (start + len(trimmed)) / RATE >= true_end
    # ...and the silence around it is down to the margin (it was 0.3 s before and 0.2 s after).
    assert true_start - start / RATE <= 0.08 and (start + len(trimmed)) / RATE - true_end <= 0.08
    assert len(trimmed) < len(clip.pcm) - 0.3 * RATE


@pytest.mark.parametrize("pause_s", [0.15, 0.25])  # (0.1 s: this phrase has a pause that long inside)
def test_a_snapshot_in_a_pause_is_the_clip_that_closes_later(hello, pause_s):
    """What a speculative reply hears is what the closed clip would have given the model."""
    ep = Endpointer()
    x = np.concatenate([silence(0.5), hello, silence(1.0)])
    snapshots, clips = [], []
    for k in range(0, len(x), 480):
        clips += ep.feed(x[k : k + 480])
        if ep.in_speech and ep.silence_s >= pause_s and not snapshots:
            snapshots.append(ep.snapshot())
    assert len(clips) == 1 and len(snapshots) == 1
    snap, clip = snapshots[0], clips[0]
    assert ep.silence_s == 0.0 and ep.last_speech_s is None  # idle again
    assert (snap.start_s, snap.speech_end_s) == (clip.start_s, clip.speech_end_s)
    assert snap.endpoint_delay_s < clip.endpoint_delay_s
    # Early in the pause the snapshot has less of the quiet tail (0.2 s), none of it heard by the model.
    assert len(snap.pcm) <= len(clip.pcm) and np.array_equal(trim_silence(snap), trim_silence(clip))


def test_two_utterances_with_a_two_second_gap_become_two_clips(hello):
    second = speech("Set a timer for ten minutes.")
    x = np.concatenate([silence(0.5), hello, silence(2.0), second, silence(1.0)])
    clips = segment(x)
    assert len(clips) == 2
    offset2 = 0.5 + len(hello) / RATE + 2.0
    for c, (start, end) in zip(
        clips, [(0.5 + t for t in true_bounds(hello)), (offset2 + t for t in true_bounds(second))]
    ):
        assert abs(c.speech_start_s - start) <= TOLERANCE_S and abs(c.speech_end_s - end) <= TOLERANCE_S


def test_settable_trailing_silence_and_pre_roll(hello):
    x = np.concatenate([silence(0.5), hello, silence(2.0), hello, silence(3.0)])
    merged = segment(x, EndpointConfig(trailing_silence_s=2.5, pre_roll_s=0.1))
    assert len(merged) == 1
    assert merged[0].speech_start_s - merged[0].start_s == pytest.approx(0.1, abs=0.011)
    assert merged[0].endpoint_delay_s == pytest.approx(2.5, abs=0.05)


def test_45_seconds_of_speech_become_clips_of_at_most_30_seconds():
    x = speech(LONG_TEXT)
    assert len(x) / RATE > 45
    clips = segment(x)
    assert len(clips) == 2
    assert all(c.duration_s <= MAX_CLIP_SECONDS for c in clips)
    assert clips[0].reason == "max_length" and clips[1].reason == "end_of_stream"
    # Nothing lost or repeated at the cut, and the cut sits in a quiet spot near the cap.
    assert clips[1].start_s == clips[0].end_s
    assert np.array_equal(np.concatenate([c.pcm for c in clips]), x[: len(clips[0].pcm) + len(clips[1].pcm)])
    assert MAX_CLIP_SECONDS - 3.0 <= clips[0].end_s <= MAX_CLIP_SECONDS
    cut = int(clips[0].end_s * RATE)
    levels = frame_levels(x)
    assert frame_levels(x[cut - 400 : cut + 400]).mean() < np.median(levels) - 10


def test_lower_max_seconds_cuts_shorter_and_above_30_is_refused():
    x = speech(LONG_TEXT[:400])
    clips = segment(x, EndpointConfig(max_seconds=8))
    assert len(clips) >= 2 and all(c.duration_s <= 8 for c in clips)
    with pytest.raises(AudioError, match="at most 30 s"):
        EndpointConfig(max_seconds=45)
    with pytest.raises(AudioError, match="max_seconds=0"):
        EndpointConfig(max_seconds=0)
    with pytest.raises(AudioError, match="at most 30 s"):
        PushToTalk(max_seconds=31)


@pytest.mark.parametrize("level", [0.002, 0.02, 0.2])
def test_steady_noise_alone_starts_no_clip(level):
    assert segment(noise(8.0, level)) == []


def test_noise_that_switches_on_mid_stream_starts_no_clip():
    hum = 0.05 * np.sin(2 * np.pi * 120 * np.arange(6 * RATE) / RATE).astype(np.float32)
    fan = noise(6.0, 0.03) + hum
    assert segment(np.concatenate([silence(2.0), fan])) == []


def test_speech_over_steady_noise_is_found(hello):
    x = noise(6.0, 0.01)
    x[2 * RATE : 2 * RATE + len(hello)] += 0.5 * hello
    clips = segment(x)
    true_start, true_end = (2.0 + t for t in true_bounds(hello))
    assert len(clips) == 1
    assert abs(clips[0].speech_start_s - true_start) <= TOLERANCE_S
    assert abs(clips[0].speech_end_s - true_end) <= TOLERANCE_S


@pytest.mark.parametrize("word", ["yes", "no", "stop"])
def test_short_words_are_clips(word):
    clips = segment(np.concatenate([silence(1.0), speech(word), silence(1.0)]))
    assert len(clips) == 1 and clips[0].speech_start_s == pytest.approx(1.0, abs=0.1)


def test_loud_and_clipped_input_is_flagged_not_fatal(hello):
    too_loud = np.concatenate([silence(0.5), hello * 8, silence(1.0)])
    over_range = segment(too_loud)  # float input beyond [-1, 1]
    limited = segment(np.clip(too_loud, -1, 1))  # what an int16 ADC delivers
    for clips in (over_range, limited):
        assert len(clips) == 1 and clips[0].clipped
        assert np.abs(clips[0].pcm).max() <= 1.0
    assert over_range[0].peak > 1.0
    broken = np.concatenate([silence(0.5), hello, silence(1.0)])
    broken[RATE : RATE + 100] = np.nan
    broken[RATE + 200] = np.inf
    clips = segment(broken)
    assert len(clips) == 1 and np.isfinite(clips[0].pcm).all()


def test_block_size_does_not_change_the_result(hello):
    x = np.concatenate([silence(0.7), hello, silence(1.2)])
    reference = segment(x, block=480)[0]
    for block in (1, 97, 160, 4000, len(x)):
        c = segment(x, block=block)[0]
        assert (c.start_s, c.end_s, c.speech_start_s, c.speech_end_s) == (
            reference.start_s,
            reference.end_s,
            reference.speech_start_s,
            reference.speech_end_s,
        )


def test_stream_that_ends_mid_speech_is_flushed(hello):
    ep = Endpointer()
    assert ep.feed(np.concatenate([silence(0.5), hello])) == []
    assert ep.in_speech
    (c,) = ep.flush()
    assert c.reason == "end_of_stream" and not ep.in_speech


def test_iter_clips_reads_an_audio_source(hello):
    x = np.concatenate([silence(0.5), hello, silence(1.0), hello, silence(1.0)])
    with ArraySource(x) as source:
        clips = list(iter_clips(source))
    assert len(clips) == 2


def test_push_to_talk_keeps_pre_roll_and_obeys_the_cap(hello):
    ptt = PushToTalk(pre_roll_s=0.3, max_seconds=5)
    x = np.concatenate([silence(1.0), hello, hello, hello])
    clips = []
    for k in range(0, len(x), 480):
        if k >= RATE and not ptt.recording:
            ptt.start()
        clips += ptt.feed(x[k : k + 480])
    clips.append(ptt.stop())
    assert clips[0].start_s == pytest.approx(1.0 - 0.3, abs=0.031)
    assert all(c.duration_s <= 5 for c in clips) and clips[-1].reason == "push_to_talk"
    assert [c.reason for c in clips[:-1]] == ["max_length"] * (len(clips) - 1)
    assert sum(c.duration_s for c in clips) == pytest.approx(len(x) / RATE - 0.7, abs=0.05)
    assert ptt.stop() is None  # stop without start: nothing


def test_the_micro_vad_ignores_music_and_keeps_a_sentence_whole():
    """Home Assistant's trained VAD with the level test: synthetic music (chords on a beat) starts no
    clip; a Piper sentence is one clip that reaches back before its first syllable."""
    from edge.audio.piper import PiperBackend
    from edge.audio.resample import resample

    t = np.arange(10 * RATE) / RATE
    beat = 0.6 + 0.4 * (np.sin(2 * np.pi * 2 * t) > 0)
    music = sum(0.08 * np.sin(2 * np.pi * hz * t) for hz in (261.6, 329.6, 392.0)) * beat
    micro = EndpointConfig(detector="micro")
    assert segment(music.astype(np.float32), micro) == []
    pcm, rate = PiperBackend("joe").synthesize("Turn on the kitchen light, please.")
    speech = 0.5 * resample(pcm, rate, RATE)
    stream = np.concatenate([np.zeros(RATE, np.float32), speech, np.zeros(RATE, np.float32)])
    [clip] = segment(stream, micro)
    onset = 1.0 + np.nonzero(np.abs(speech) > 0.01 * np.abs(speech).max())[0][0] / RATE
    assert clip.start_s < onset < clip.speech_end_s
    with pytest.raises(AudioError, match="energy or micro"):
        EndpointConfig(detector="silero")
