"""The wake word: openWakeWord (Home Assistant's pyopen-wakeword) listening to the 16 kHz stream.

Left on a shelf, an assistant must answer its name only, not a television. `WakeWord.feed()` takes
the same blocks the end-pointer hears and says when the name was spoken; the voice loop decides what
that opens (wake_gate.py). Bundled models: okay_nabu, hey_jarvis, alexa, hey_mycroft, hey_rhasspy;
any other openWakeWord .tflite model works by path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.audio_format import SAMPLE_RATE
from edge.errors import AudioError

BUNDLED = ("okay_nabu", "hey_jarvis", "alexa", "hey_mycroft", "hey_rhasspy")
THRESHOLD = 0.5  # openWakeWord's own default probability
NAMES = {name: name.replace("_", " ").title() for name in BUNDLED}  # what to tell the user to say


def check_wake_word(name: str) -> str:
    """A bundled name or an existing .tflite path, else the one line that lists the choices."""
    if name in BUNDLED or (name.endswith(".tflite") and Path(name).is_file()):
        return name
    if name.endswith(".tflite"):
        raise AudioError(f"wake word model not found: {name}")
    raise AudioError(f"unknown wake word {name!r}: choose {', '.join(BUNDLED)}, none, or a path to a .tflite model")


class WakeWord:
    """One wake word's detector. Feed it 16 kHz float32 blocks; `feed` is True on the block that
    completes a detection. Not thread-safe: one listener thread."""

    def __init__(self, name: str, threshold: float = THRESHOLD):
        self.name = check_wake_word(name)
        try:
            from pyopen_wakeword import Model, OpenWakeWord, OpenWakeWordFeatures
        except ImportError as exc:
            raise AudioError(
                "wake words need pyopen-wakeword: pip install 'edge-gemma[voice]', or use --wake-word none"
            ) from exc
        if name in BUNDLED:
            self._model = OpenWakeWord.from_builtin(Model(name))
        else:
            self._model = OpenWakeWord.from_model(name)
        self._features = OpenWakeWordFeatures.from_builtin()
        self.threshold = threshold
        self.best = 0.0  # the highest probability seen since the last reset (for tuning and tests)

    @property
    def phrase(self) -> str:
        return NAMES.get(self.name, Path(self.name).stem.replace("_", " "))

    def feed(self, block: np.ndarray) -> bool:
        pcm16 = (np.clip(block, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        heard = False
        for features in self._features.process_streaming(pcm16):
            for probability in self._model.process_streaming(features):
                self.best = max(self.best, float(probability))
                heard = heard or probability > self.threshold
        if heard:
            self.reset()  # one detection per utterance of the name
        return heard

    def reset(self) -> None:
        self._model.reset()
        self._features.reset()

    def close(self) -> None:
        self._model.close()
        self._features.close()


def detections(wake: WakeWord, pcm: np.ndarray, block: int = 1280) -> list[float]:
    """Seconds into `pcm` at which the wake word was heard (for tests and scripts/wake_words.py)."""
    found = []
    for start in range(0, len(pcm), block):
        if wake.feed(pcm[start : start + block]):
            found.append((start + block) / SAMPLE_RATE)
    return found
