"""Loading audio files (made here with espeak-ng and sox) and the resampler behind them."""

import os
import subprocess

import numpy as np
import pytest
from audio_support import RATE, locate, require_espeak, require_sox

from edge.audio.files import decode_audio, load_audio, save_wav
from edge.audio.resample import StreamResampler, resample, to_mono
from edge.errors import AudioError

TEXT = "Please transcribe this short sentence."


def sox(*args):
    subprocess.run(["sox", *map(str, args)], check=True, capture_output=True)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """espeak-ng speech, converted by sox to the formats users bring; plus the 16 kHz reference."""
    require_espeak()
    require_sox()
    d = tmp_path_factory.mktemp("audio-files")
    subprocess.run(["espeak-ng", "-w", str(d / "espeak.wav"), TEXT], check=True)
    sox(d / "espeak.wav", "-r", 16000, "-c", 1, "-b", 16, d / "mono16k.wav")
    sox(d / "espeak.wav", "-r", 44100, "-c", 2, "-b", 16, d / "stereo44k.wav")
    sox(d / "espeak.wav", "-r", 48000, "-c", 1, "-b", 24, d / "mono48k-24bit.wav")
    sox(d / "espeak.wav", "-r", 22050, "-e", "floating-point", "-b", 32, d / "float.wav")
    sox(d / "espeak.wav", "-r", 8000, "-b", 8, "-e", "unsigned-integer", d / "u8-8k.wav")
    sox(d / "espeak.wav", "-r", 44100, "-c", 2, d / "speech.flac")
    sox(d / "espeak.wav", "-r", 44100, "-c", 2, d / "speech.mp3")
    reference = load_audio(d / "mono16k.wav")
    return d, reference


def matches(audio, reference, min_corr):
    _, corr = locate(audio, reference)
    return corr >= min_corr


@pytest.mark.parametrize(
    "name,min_corr",
    [
        ("mono16k.wav", 0.999),
        ("stereo44k.wav", 0.98),
        ("mono48k-24bit.wav", 0.98),
        ("float.wav", 0.98),  # not something `wave` reads: soundfile takes over
        ("u8-8k.wav", 0.9),  # 8 kHz, 8-bit: band-limited and coarse, still the same speech
        ("speech.flac", 0.98),
        ("speech.mp3", 0.9),  # lossy, and the encoder adds a little delay
    ],
)
def test_every_format_loads_as_16k_mono_float32(made, name, min_corr):
    d, reference = made
    audio = load_audio(d / name)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert np.abs(audio).max() <= 1.0 and np.isfinite(audio).all()
    assert len(audio) / RATE == pytest.approx(len(reference) / RATE, abs=0.1)
    assert matches(audio, reference, min_corr)


def test_stereo_is_mixed_to_mono(tmp_path):
    require_sox()
    sox("-n", "-r", 16000, "-c", 1, tmp_path / "tone.wav", "synth", 1, "sine", 440, "vol", 0.5)
    sox("-n", "-r", 16000, "-c", 2, tmp_path / "left.wav", "synth", 1, "sine", 440, "vol", 0.5, "remix", "1", "0")
    tone, left_only = load_audio(tmp_path / "tone.wav"), load_audio(tmp_path / "left.wav")
    assert np.allclose(left_only, tone / 2, atol=1e-4)  # channels are averaged


def test_streamed_wav_bytes_from_espeak_stdout_decode():
    """espeak-ng --stdout writes a placeholder length in the header; the real data length wins."""
    require_espeak()
    wav = subprocess.run(["espeak-ng", "--stdout"], input=TEXT.encode(), capture_output=True, check=True).stdout
    audio = decode_audio(wav)
    assert 1.0 < len(audio) / RATE < 5.0


def test_not_audio_is_a_clear_error(tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio at all\n" * 20)
    with pytest.raises(AudioError, match="not a readable audio file"):
        load_audio(text)
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(AudioError, match="not a readable audio file"):
        load_audio(junk)


def test_empty_inputs_are_clear_errors(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty \(0 bytes\)"):
        load_audio(empty)
    header_only = save_wav(tmp_path / "header-only.wav", np.zeros(0, dtype=np.float32))
    with pytest.raises(AudioError, match="contains no audio samples"):
        load_audio(header_only)


def test_too_long_is_a_clear_error(made, tmp_path):
    d, _ = made
    with pytest.raises(AudioError, match=r"over the 1 s limit"):
        load_audio(d / "mono16k.wav", max_seconds=1)
    with pytest.raises(AudioError, match=r"over the 1 s limit"):
        load_audio(d / "speech.flac", max_seconds=1)
    # The default limit is 10 minutes; the header is checked before anything is decoded.
    long_flac = tmp_path / "long.flac"
    sox("-n", "-r", 8000, "-c", 1, long_flac, "trim", 0, 601)
    with pytest.raises(AudioError, match=r"601\.0 s long, over the 600 s limit"):
        load_audio(long_flac)


def test_missing_and_unreadable_files_are_clear_errors(tmp_path):
    with pytest.raises(AudioError, match="audio file not found"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(AudioError, match="is a directory"):
        load_audio(tmp_path)
    if os.geteuid() != 0:  # root reads everything
        locked = save_wav(tmp_path / "locked.wav", np.zeros(RATE, dtype=np.float32))
        locked.chmod(0)
        with pytest.raises(AudioError, match="cannot read"):
            load_audio(locked)


def test_save_wav_round_trips(tmp_path):
    x = (0.5 * np.sin(2 * np.pi * 300 * np.arange(RATE) / RATE)).astype(np.float32)
    y = load_audio(save_wav(tmp_path / "x.wav", x))
    assert np.max(np.abs(x - y)) < 1e-4


@pytest.mark.parametrize("src", [8000, 11025, 22050, 44100, 48000, 96000])
def test_resampler_keeps_a_tone_and_removes_aliases(src):
    t = np.arange(2 * src) / src
    y = resample(np.sin(2 * np.pi * 1000 * t).astype(np.float32), src)
    assert len(y) == 2 * RATE
    ref = np.sin(2 * np.pi * 1000 * np.arange(len(y)) / RATE)
    assert np.max(np.abs(y[400:-400] - ref[400:-400])) < 1e-3
    if src > 2 * 9000:  # a 9 kHz tone cannot exist at 16 kHz: it must vanish, not fold to 7 kHz
        alias = resample(np.sin(2 * np.pi * 9000 * t).astype(np.float32), src)
        assert np.max(np.abs(alias[400:-400])) < 1e-3


def test_stream_resampler_matches_whole_buffer_resampling():
    x = np.random.default_rng(0).standard_normal(44_100).astype(np.float32)
    r = StreamResampler(44_100)
    sizes = np.random.default_rng(1).integers(1, 3000, 100)
    pieces, pos = [], 0
    for n in sizes:
        pieces.append(r.process(x[pos : pos + n]))
        pos += n
    pieces.append(r.process(x[pos:]))
    pieces.append(r.flush())
    assert np.allclose(np.concatenate(pieces), resample(x, 44_100), atol=1e-6)


def test_to_mono_and_identity_rate():
    stereo = np.stack([np.ones(10), -np.ones(10)], axis=1).astype(np.int16)
    assert np.array_equal(to_mono(stereo), np.zeros(10, dtype=np.float32))
    x = np.arange(5, dtype=np.float32)
    assert np.array_equal(resample(x, RATE, RATE), x)
