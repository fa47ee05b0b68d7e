"""A Wyoming wake program: satellites that stream their microphone to a server for the wake word
(detect, audio-start, audio-chunk*, audio-stop -> detection or not-detected), with openWakeWord's
bundled models, as wyoming-openwakeword does. Cheap here: the wake words are loaded anyway."""

from __future__ import annotations

import numpy as np
from wyoming.info import Attribution, WakeModel, WakeProgram

from edge import __version__
from edge.audio.wake import BUNDLED, NAMES, WakeWord
from edge.audio_format import SAMPLE_RATE

ATTRIBUTION = Attribution(
    name="openWakeWord (David Scripka), pyopen-wakeword", url="https://github.com/dscripka/openWakeWord"
)


def wake_program() -> WakeProgram | None:
    """The `info` entry, or None when pyopen-wakeword is not installed."""
    try:
        import pyopen_wakeword  # noqa: F401
    except ImportError:
        return None
    models = [
        WakeModel(
            name=name,
            description=f'openWakeWord "{NAMES[name]}"',
            attribution=ATTRIBUTION,
            installed=True,
            version=__version__,
            languages=["en"],
            phrase=NAMES[name],
        )
        for name in BUNDLED
    ]
    return WakeProgram(
        name="edge-gemma-wake",
        description="Wake word detection with openWakeWord",
        attribution=ATTRIBUTION,
        installed=True,
        version=__version__,
        models=models,
    )


class WakeListener:
    """The wake words one `detect` asked for, fed the satellite's audio (16 kHz mono int16 bytes)."""

    def __init__(self, names: list[str] | None):
        wanted = [n for n in (names or BUNDLED) if n in BUNDLED] or ["okay_nabu"]
        self.detectors = {name: WakeWord(name) for name in wanted}
        self.samples = 0
        self.detected: list[str] = []

    def feed(self, audio: bytes) -> list[tuple[str, int]]:
        """(name, milliseconds into the stream) for each wake word heard in this chunk."""
        pcm = np.frombuffer(audio, dtype="<i2").astype(np.float32) / 32768.0
        self.samples += len(pcm)
        heard = [(name, 1000 * self.samples // SAMPLE_RATE) for name, d in self.detectors.items() if d.feed(pcm)]
        self.detected += [name for name, _ in heard]
        return heard

    def close(self) -> None:
        for detector in self.detectors.values():
            detector.close()
