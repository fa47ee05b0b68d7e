"""The engines that turn text into speech: the TTSBackend interface, espeak-ng and no speech at all.

Piper (piper.py) is the other backend; tts.py picks one (`make_tts_backend`) and speaks with it.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from abc import ABC, abstractmethod

import numpy as np

from edge.audio.files import decode_native
from edge.audio_format import SAMPLE_RATE
from edge.errors import AudioError


class TTSBackend(ABC):
    """Text -> (float32 mono samples, sample rate). `cancel()` aborts a synthesis in progress."""

    name: str = ""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._cancelled = False

    @abstractmethod
    def synthesize(self, text: str, *, speed: float = 1.0) -> tuple[np.ndarray, int]:
        """`speed`: 1.0 is the voice's own pace, 2.0 twice as fast (OpenAI's speech `speed`)."""

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()

    def _run(self, cmd: list[str], text: str, timeout: float = 120.0) -> bytes | None:
        """Run a synthesiser with `text` on stdin; None if cancelled meanwhile."""
        with self._lock:
            self._cancelled = False
            try:
                self._proc = subprocess.Popen(
                    cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
                )
            except OSError as e:
                raise AudioError(f"cannot run {cmd[0]}: {e}") from e
            proc = self._proc
        try:
            out, err = proc.communicate(text.encode("utf-8"), timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            proc.communicate()
            raise AudioError(f"{cmd[0]} took over {timeout:g} s to speak {len(text)} characters; is it stuck?") from exc
        finally:
            with self._lock:
                self._proc = None
        if self._cancelled:
            return None
        if proc.returncode != 0:
            detail = err.decode("utf-8", "replace").strip().splitlines()
            raise AudioError(f"{cmd[0]} failed (exit {proc.returncode}): {detail[-1] if detail else 'no message'}")
        return out


class NoneBackend(TTSBackend):
    """Speaks nothing: text-only replies (`--tts none`)."""

    name = "none"

    def synthesize(self, text: str, *, speed: float = 1.0) -> tuple[np.ndarray, int]:
        return np.zeros(0, dtype=np.float32), SAMPLE_RATE


class EspeakBackend(TTSBackend):
    """espeak-ng: small, offline, many languages; robotic but instant even on a Pi."""

    name = "espeak"

    def __init__(self, voice: str | None = None, words_per_minute: int | None = None, executable: str = "espeak-ng"):
        super().__init__()
        path = shutil.which(executable)
        if path is None:
            raise AudioError(
                f"{executable} is not installed; install it (Debian/Raspberry Pi OS: sudo apt-get install "
                "espeak-ng; macOS: brew install espeak-ng) or turn speech off with --tts none"
            )
        self.cmd = [path, "--stdout"]
        self.voice_name = voice or "espeak-ng"
        if voice:
            self.cmd += ["-v", voice]
        self.words_per_minute = words_per_minute or 175  # espeak-ng's own default

    def synthesize(self, text: str, *, speed: float = 1.0) -> tuple[np.ndarray, int]:
        out = self._run(self.cmd + ["-s", str(int(self.words_per_minute * speed))], text)
        if out is None:
            return np.zeros(0, dtype=np.float32), SAMPLE_RATE
        return decode_native(out, name="espeak-ng output")


def espeak_pcm(text: str) -> np.ndarray:
    """`text` spoken by espeak-ng as 16 kHz mono float32: test speech for scripts and measurements."""
    from edge.audio.resample import resample

    pcm, rate = EspeakBackend().synthesize(text)
    if pcm.size == 0:
        raise AudioError("espeak-ng made no sound; install it (apt-get install espeak-ng)")
    return resample(pcm, rate, SAMPLE_RATE)
