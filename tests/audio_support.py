"""Helpers for the audio tests: real speech from espeak-ng, the PulseAudio null sink, measurements."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import require

from edge.audio.files import decode_audio, save_wav

RATE = 16_000
REPO = Path(__file__).resolve().parent.parent
START_AUDIO = REPO / "scripts" / "start_test_audio.sh"


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def require_espeak() -> None:
    require(have("espeak-ng"), "espeak-ng (apt-get install espeak-ng)")


def require_sox() -> None:
    require(have("sox"), "sox (apt-get install sox libsox-fmt-mp3)")


def speech(text: str, words_per_minute: int = 175) -> np.ndarray:
    """Real speech: espeak-ng's WAV on stdout, decoded to float32 mono 16 kHz."""
    require_espeak()
    out = subprocess.run(
        ["espeak-ng", "--stdout", "-s", str(words_per_minute)], input=text.encode(), capture_output=True, check=True
    ).stdout
    return decode_audio(out, name="espeak-ng output")


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * RATE)), dtype=np.float32)


def frame_levels(x: np.ndarray, frame: int = 160) -> np.ndarray:
    n = len(x) // frame
    return 10.0 * np.log10(np.mean(x[: n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1) + 1e-12)


def true_bounds(x: np.ndarray, below_peak_db: float = 40.0) -> tuple[float, float]:
    """Seconds where the signal's 10 ms level first and last comes within `below_peak_db` of its peak."""
    levels = frame_levels(x)
    active = np.nonzero(levels > levels.max() - below_peak_db)[0]
    return active[0] * 160 / RATE, (active[-1] + 1) * 160 / RATE


def locate(haystack: np.ndarray, needle: np.ndarray) -> tuple[float, float]:
    """(offset in seconds, normalised correlation) of `needle` inside `haystack`, by FFT cross-correlation."""
    n = len(haystack) + len(needle)
    size = 1 << (n - 1).bit_length()
    c = np.fft.irfft(np.fft.rfft(haystack, size) * np.conj(np.fft.rfft(needle, size)), size)
    k = int(np.argmax(c))
    lag = k if k < len(haystack) else k - size  # negative: the needle started before the recording
    hay = haystack[max(lag, 0) : max(lag, 0) + len(needle)]
    ndl = needle[max(-lag, 0) : max(-lag, 0) + len(hay)]
    energy = np.sqrt(np.sum(ndl[: len(hay)] ** 2) * np.sum(hay[: len(ndl)] ** 2)) + 1e-12
    return lag / RATE, float(c[k] / energy)


def pulse_running() -> bool:
    return have("pactl") and subprocess.run(["pactl", "info"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def null_sink() -> str:
    """A PulseAudio null sink whose monitor is the default source (starts one if it can)."""
    if not pulse_running() and have("pulseaudio"):
        subprocess.run(["bash", str(START_AUDIO)], capture_output=True, timeout=60)
    require(pulse_running(), "PulseAudio with a null sink (run scripts/start_test_audio.sh)")
    info = subprocess.run(["pactl", "info"], capture_output=True, text=True).stdout
    source = next(
        (line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("Default Source")), ""
    )
    require(source.endswith(".monitor"), "a null sink monitor as default source (run scripts/start_test_audio.sh)")
    try:
        import sounddevice  # noqa: F401  (PortAudio reads ALSA's config, with PulseAudio running, on import)
    except (ImportError, OSError):
        require(False, "sounddevice with libportaudio2 (pip install sounddevice; apt-get install libportaudio2)")
    return source.removesuffix(".monitor")


def play_into_sink(pcm: np.ndarray, tmp: Path, sink: str) -> None:
    """Play 16 kHz float audio into the null sink with paplay (blocks until played)."""
    wav = save_wav(tmp / f"play-{time.monotonic_ns()}.wav", pcm)
    subprocess.run(["paplay", f"--device={sink}", str(wav)], check=True, timeout=120)


class Recorder:
    """Reads an open AudioSource on a thread, keeping every block and feeding an optional consumer."""

    def __init__(self, source, consume=None):
        self.source, self.consume = source, consume
        self.blocks: list[np.ndarray] = []
        self.results: list = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for block in self.source.blocks(0.2):
            self.blocks.append(block)
            if self.consume is not None:
                self.results.extend(self.consume(block))

    def __enter__(self) -> Recorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.source.close()
        self._thread.join(timeout=10)

    def wait_for_audio(self, seconds: float, timeout: float = 30.0) -> None:
        """Until the source has delivered `seconds` of audio: a stream's first blocks can come late."""
        deadline = time.monotonic() + timeout
        while sum(len(b) for b in self.blocks) < seconds * RATE:
            assert time.monotonic() < deadline, f"no audio from {self.source!r} within {timeout} s"
            time.sleep(0.02)

    @property
    def audio(self) -> np.ndarray:
        return np.concatenate(self.blocks) if self.blocks else np.zeros(0, dtype=np.float32)
