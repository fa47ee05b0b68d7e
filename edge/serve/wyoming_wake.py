"""A Wyoming wake program: satellites that stream their microphone to a server for the wake word
(detect, audio-start, audio-chunk*, audio-stop -> detection or not-detected), as wyoming-microwakeword
and wyoming-openwakeword do, with both engines: a bare name takes the default engine (wake.py), and
`micro:NAME` / `open:NAME` choose one. Cheap here: the detectors are small."""

from __future__ import annotations

import numpy as np
from wyoming.info import Attribution, WakeModel, WakeProgram

from edge import __version__
from edge.audio.wake import MICRO_BUNDLED, NAMES, OPEN_BUNDLED, WakeWord, parse_wake_word
from edge.audio_format import SAMPLE_RATE
from edge.errors import AudioError

ATTRIBUTION = Attribution(
    name="microWakeWord (Kevin Ahrendt), openWakeWord (David Scripka)", url="https://github.com/kahrendt/microWakeWord"
)
ENGINE_NAMES = {"micro": "microWakeWord", "open": "openWakeWord"}


def offered() -> list[str]:
    """Every name `detect` may ask for: the bare names, then each engine's."""
    bare = list(OPEN_BUNDLED)
    return bare + [f"micro:{n}" for n in MICRO_BUNDLED] + [f"open:{n}" for n in OPEN_BUNDLED]


def wake_program() -> WakeProgram | None:
    """The `info` entry, or None when neither engine is installed."""
    try:
        import pymicro_wakeword  # noqa: F401
        import pyopen_wakeword  # noqa: F401
    except ImportError:
        return None
    models = []
    for spec in offered():
        engine, name = parse_wake_word(spec)
        models.append(
            WakeModel(
                name=spec,
                description=f'{ENGINE_NAMES[engine]} "{NAMES[name]}"',
                attribution=ATTRIBUTION,
                installed=True,
                version=__version__,
                languages=["en"],
                phrase=NAMES[name],
            )
        )
    return WakeProgram(
        name="edge-gemma-wake",
        description="Wake word detection with microWakeWord and openWakeWord",
        attribution=ATTRIBUTION,
        installed=True,
        version=__version__,
        models=models,
    )


class WakeListener:
    """The wake words one `detect` asked for, fed the satellite's audio (16 kHz mono int16 bytes)."""

    def __init__(self, names: list[str] | None):
        wanted = [n for n in (names or ["okay_nabu"]) if _known(n)] or ["okay_nabu"]
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


def _known(spec: str) -> bool:
    try:
        parse_wake_word(spec)
    except AudioError:
        return False
    return True
