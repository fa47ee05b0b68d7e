"""Load audio files (WAV, FLAC, MP3; any rate, any channel count) as float32 mono 16 kHz.

WAV goes through Python's `wave` (no dependency). FLAC, MP3 and the WAV variants `wave` cannot
read (float, 24-bit extensible) go through `soundfile`: its wheels bundle libsndfile >= 1.1, which
decodes FLAC and MP3 in-process on Linux (x86_64, aarch64), macOS and Windows. That beats shelling
out to ffmpeg/sox, which a Pi image may lack and which would need a temp-file or pipe protocol.
soundfile sits in the `voice` extra next to sounddevice (both are cffi wrappers).
"""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np

from edge.audio.resample import TARGET_RATE, resample, to_mono
from edge.errors import AudioError

DEFAULT_MAX_SECONDS = 600.0  # 10 minutes: longer input is almost surely a mistake for a voice model
_INSTALL_HINT = "pip install 'edge-gemma[voice]' (it brings soundfile)"


def load_audio(path: str | Path, *, max_seconds: float = DEFAULT_MAX_SECONDS) -> np.ndarray:
    """Read an audio file and return float32 mono samples at 16 kHz in [-1, 1].

    Raises AudioError when the file is missing or unreadable, is not audio, holds no samples, or is
    longer than `max_seconds`.
    """
    p = Path(path)
    if not p.exists():
        raise AudioError(f"audio file not found: {p}")
    if p.is_dir():
        raise AudioError(f"{p} is a directory, not an audio file")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise AudioError(f"cannot read {p}: {e.strerror or e}; check the path and its permissions") from e
    return decode_audio(data, name=str(p), max_seconds=max_seconds)


def decode_audio(data: bytes, *, name: str = "audio", max_seconds: float = DEFAULT_MAX_SECONDS) -> np.ndarray:
    """Decode WAV/FLAC/MP3 bytes (e.g. a TTS engine's stdout) to float32 mono 16 kHz."""
    samples, rate = decode_native(data, name=name, max_seconds=max_seconds)
    # Resampling rings past full scale on a full-scale step (found by the fuzzer: a 1 Hz WAV): the
    # model is promised samples in [-1, 1].
    return np.clip(resample(samples, rate, TARGET_RATE), -1.0, 1.0)


def decode_native(
    data: bytes, *, name: str = "audio", max_seconds: float = DEFAULT_MAX_SECONDS
) -> tuple[np.ndarray, int]:
    """Decode to float32 mono at the file's own rate: (samples, sample_rate)."""
    if max_seconds <= 0:
        raise AudioError(f"max_seconds must be positive, got {max_seconds}")
    if len(data) == 0:
        raise AudioError(f"{name} is empty (0 bytes); record or choose a file with sound in it")
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        result = _read_wave(data, name, max_seconds)
        if result is None:  # a WAV flavour `wave` cannot read: float, extensible, ...
            result = _read_soundfile(data, name, max_seconds)
    else:
        result = _read_soundfile(data, name, max_seconds)
    samples, rate = result
    if samples.size == 0:
        raise AudioError(f"{name} contains no audio samples; record or choose a non-empty file")
    _check_length(samples.size / rate, name, max_seconds)
    # Non-finite samples would poison the model's features; a damaged file is the likely cause.
    return np.clip(np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0), rate


def _check_length(seconds: float, name: str, max_seconds: float) -> None:
    if seconds > max_seconds:
        raise AudioError(
            f"{name} is {seconds:.1f} s long, over the {max_seconds:g} s limit; "
            "trim it (e.g. sox in.wav out.wav trim 0 60) or raise the limit"
        )


def _read_wave(data: bytes, name: str, max_seconds: float) -> tuple[np.ndarray, int] | None:
    try:
        with wave.open(io.BytesIO(data)) as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            # Streamed WAVs (espeak-ng --stdout) carry a placeholder length: trust the bytes present.
            frames = min(w.getnframes(), len(data) // max(1, channels * width))
            _check_length(frames / rate if rate else 0.0, name, max_seconds)
            raw = w.readframes(frames)
    except wave.Error:
        return None
    except (EOFError, ValueError) as e:
        raise AudioError(f"{name} is a damaged WAV file ({e}); re-export it") from e
    if rate <= 0 or channels <= 0:
        raise AudioError(f"{name} has an invalid WAV header (rate {rate}, channels {channels})")
    usable = len(raw) - len(raw) % (channels * width)
    pcm = _pcm_to_float(raw[:usable], width)
    if pcm is None:
        return None
    return to_mono(pcm.reshape(-1, channels)), rate


def _pcm_to_float(raw: bytes, width: int) -> np.ndarray | None:
    """Little-endian integer PCM -> float32 in [-1, 1); WAV's 8-bit is unsigned, the rest signed."""
    if width == 1:
        return (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    if width == 2:
        return np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    if width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        return v.astype(np.float32) / float(1 << 23)
    if width == 4:
        return (np.frombuffer(raw, "<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)
    return None


def _read_soundfile(data: bytes, name: str, max_seconds: float) -> tuple[np.ndarray, int]:
    try:
        import soundfile
    except ImportError as e:
        raise AudioError(f"reading {name} needs the soundfile package: {_INSTALL_HINT}") from e
    except OSError as e:  # the bundled or system libsndfile failed to load
        raise AudioError(f"soundfile cannot load libsndfile ({e}); reinstall it: {_INSTALL_HINT}") from e
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as f:
            rate = f.samplerate
            # MP3 frame counts are estimates; the check after decoding is the exact one.
            if f.frames > 0 and rate > 0:
                _check_length(f.frames / rate, name, max_seconds)
            samples = f.read(dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as e:  # libsndfile reports "format not recognised" and friends this way
        raise AudioError(f"{name} is not a readable audio file (WAV, FLAC or MP3 expected): {_short(e)}") from e
    return to_mono(samples), rate


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[-1] if text else type(e).__name__


def save_wav(path: str | Path, samples: np.ndarray, sample_rate: int = TARGET_RATE) -> Path:
    """Write float mono samples as 16-bit PCM WAV (for saving clips and making fixtures)."""
    p = Path(path)
    pcm = np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0)
    with wave.open(str(p), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes((pcm * 32767.0).round().astype("<i2").tobytes())
    return p
