"""Real capture: PortAudio records the PulseAudio null sink's monitor while espeak-ng speech plays into it."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from audio_support import RATE, Recorder, locate, play_into_sink, silence, speech, true_bounds

from edge.audio.capture import ArraySource, FileSource, MicrophoneSource
from edge.audio.devices import AudioDevice, list_input_devices, list_output_devices, resolve_device
from edge.audio.files import save_wav
from edge.audio.vad import Endpointer
from edge.errors import AudioError

TOLERANCE_S = 0.3


def capture_while_playing(played: np.ndarray, tmp_path, sink: str, **mic_kwargs):
    """Record from the default source, play `played` into the sink; return (clips, captured audio)."""
    endpointer = Endpointer()
    with MicrophoneSource(**mic_kwargs) as mic, Recorder(mic, endpointer.feed) as rec:
        rec.wait_for_audio(0.5)  # the stream is flowing and the noise floor has seen the room
        play_into_sink(played, tmp_path, sink)
        time.sleep(1.6)  # > trailing silence (0.7 s) + tail + device latency
    clips = rec.results + endpointer.flush()
    return clips, rec.audio, mic


def bounds_in_capture(captured: np.ndarray, played: np.ndarray, utterance: np.ndarray, at: float):
    """True bounds of `utterance` (placed at `at` s inside `played`) on the capture's time line."""
    offset, corr = locate(captured, played)
    assert corr > 0.9, f"captured audio does not match what was played (correlation {corr:.2f})"
    start, end = true_bounds(utterance)
    return offset + at + start, offset + at + end


def test_one_utterance_becomes_one_clip_with_true_bounds(null_sink, tmp_path):
    utterance = speech("Hello there, what is the weather like today?")
    played = np.concatenate([silence(0.3), utterance, silence(0.3)])
    clips, captured, mic = capture_while_playing(played, tmp_path, null_sink)
    assert mic.device is not None and mic.device_rate == RATE

    true_start, true_end = bounds_in_capture(captured, played, utterance, 0.3)
    assert len(clips) == 1, [(c.speech_start_s, c.speech_end_s) for c in clips]
    clip = clips[0]
    assert abs(clip.speech_start_s - true_start) <= TOLERANCE_S
    assert abs(clip.speech_end_s - true_end) <= TOLERANCE_S
    # The pre-roll keeps the first syllable: the clip's audio starts before the speech does.
    assert clip.start_s <= true_start <= clip.start_s + 0.5
    assert clip.end_s >= true_end - 0.1
    assert clip.reason == "pause" and not clip.clipped
    assert clip.pcm.dtype == np.float32 and len(clip.pcm) == pytest.approx((clip.end_s - clip.start_s) * RATE, abs=1)


def test_two_utterances_two_seconds_apart_become_two_clips(null_sink, tmp_path):
    first, second = speech("Turn on the kitchen light."), speech("And set a timer for ten minutes.")
    played = np.concatenate([silence(0.3), first, silence(2.0), second, silence(0.3)])
    clips, captured, _ = capture_while_playing(played, tmp_path, null_sink)

    assert len(clips) == 2, [(c.speech_start_s, c.speech_end_s) for c in clips]
    expected = [
        bounds_in_capture(captured, played, first, 0.3),
        bounds_in_capture(captured, played, second, 0.3 + len(first) / RATE + 2.0),
    ]
    for clip, (start, end) in zip(clips, expected):
        assert abs(clip.speech_start_s - start) <= TOLERANCE_S
        assert abs(clip.speech_end_s - end) <= TOLERANCE_S


def test_capture_at_device_rate_is_resampled_to_16k(null_sink, tmp_path):
    """A device that cannot do 16 kHz: capture at 44.1 kHz by name, resample in the worker."""
    utterance = speech("Testing the resampler.")
    played = np.concatenate([silence(0.2), utterance, silence(0.2)])
    clips, captured, mic = capture_while_playing(played, tmp_path, null_sink, device="pulse", device_rate=44_100)
    assert mic.device.name == "pulse" and mic.device_rate == 44_100
    true_start, true_end = bounds_in_capture(captured, played, utterance, 0.2)
    assert len(clips) == 1
    assert abs(clips[0].speech_start_s - true_start) <= TOLERANCE_S
    assert abs(clips[0].speech_end_s - true_end) <= TOLERANCE_S


def test_microphone_blocks_are_fixed_size_float32(null_sink):
    with MicrophoneSource(block_size=320) as mic:
        blocks = [mic.read(timeout=10.0) for _ in range(5)]  # generous: a loaded machine starts streams slowly
    assert all(b is not None and b.shape == (320,) and b.dtype == np.float32 for b in blocks)
    leftover = list(mic.blocks(timeout=0.1))  # blocks captured before close stay readable, then it ends
    assert mic.ended and mic.read(timeout=0.1) is None and len(leftover) < 100


def test_list_input_devices_has_the_pulse_device_and_a_default(null_sink):
    inputs = list_input_devices()
    assert any(d.name == "pulse" for d in inputs)
    assert sum(d.is_default_input for d in inputs) == 1
    assert all(d.max_input_channels > 0 for d in inputs)
    assert any(d.max_output_channels > 0 for d in list_output_devices())


def test_bad_device_name_or_index_is_a_clear_error(null_sink):
    with pytest.raises(AudioError, match="no audio input device named 'no-such-microphone'.*choose one of"):
        MicrophoneSource("no-such-microphone").open()
    with pytest.raises(AudioError, match="no audio input device with index 9999"):
        with MicrophoneSource(9999):
            pass


def test_no_input_device_at_all_is_a_clear_error(null_sink, tmp_path):
    """ALSA's default pointing at a card that does not exist: PortAudio sees no device at all."""
    no_card = tmp_path / "no-card-alsa.conf"
    no_card.write_text('pcm.!default { type plug slave.pcm "hw:7,0" }\n')
    code = (
        "from edge.audio.capture import MicrophoneSource\n"
        "from edge.errors import AudioError\n"
        "try:\n"
        "    MicrophoneSource().open()\n"
        "except AudioError as e:\n"
        "    print('AudioError:', e)\n"
    )
    env = dict(os.environ, ALSA_CONFIG_PATH=str(no_card))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert "AudioError: no audio input device found" in out.stdout, out.stdout + out.stderr


def _device(index, name, inputs=1, outputs=0, default=False):
    return AudioDevice(index, name, "ALSA", inputs, outputs, 48000.0, default, False)


def test_resolve_device_by_index_name_fragment_and_default():
    devices = [
        _device(0, "HDA Intel PCH: ALC257 Analog"),
        _device(1, "USB PnP Sound Device", default=True),
        _device(2, "HDMI out", 0, 2),
    ]
    assert resolve_device(None, "input", devices).index == 1
    assert resolve_device(0, "input", devices).index == 0
    assert resolve_device("0", "input", devices).index == 0
    assert resolve_device("usb pnp", "input", devices).index == 1
    with pytest.raises(AudioError, match="no audio input device with index 2"):
        resolve_device(2, "input", devices)  # an output-only device
    with pytest.raises(AudioError, match="matches several"):
        resolve_device("d", "input", devices)
    with pytest.raises(AudioError, match="no audio input device found"):
        resolve_device(None, "input", [_device(2, "HDMI out", 0, 2)])


def test_array_source_yields_padded_fixed_blocks():
    pcm = np.arange(1000, dtype=np.float32) / 1000
    with ArraySource(pcm, block_size=480) as src:
        blocks = list(src.blocks())
    assert [len(b) for b in blocks] == [480, 480, 480]
    assert np.array_equal(np.concatenate(blocks)[:1000], pcm) and not blocks[-1][40:].any()
    assert src.ended and src.read() is None


def test_array_source_resamples_and_file_source_reads_files(tmp_path):
    tone = np.sin(2 * np.pi * 440 * np.arange(44_100) / 44_100).astype(np.float32)
    with ArraySource(tone, 44_100) as src:
        assert src.duration_s == pytest.approx(1.0, abs=1e-3)
        assert sum(len(b) for b in src.blocks()) >= RATE
    path = save_wav(tmp_path / "tone.wav", tone[:RATE])
    with FileSource(path, block_size=1600) as src:
        assert len(list(src.blocks())) == 10


def test_array_source_realtime_paces_blocks():
    with ArraySource(silence(0.3), block_size=1600, realtime=True) as src:
        t0 = time.monotonic()
        assert src.read(timeout=0.01) is None  # the next block is not "recorded" yet
        blocks = list(src.blocks())
    assert len(blocks) == 3 and time.monotonic() - t0 >= 0.25
