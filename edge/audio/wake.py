"""The wake word: microWakeWord or openWakeWord (Home Assistant's pymicro-wakeword and
pyopen-wakeword) listening to the 16 kHz stream.

Left on a shelf, an assistant must answer its name only, not a television. `WakeWord.feed()` takes
the same blocks the end-pointer hears and says when the name was spoken; the voice loop decides what
that opens (wake_gate.py). A name is `micro:NAME`, `open:NAME`, or a bare NAME, which takes the engine
that heard it better in scripts/wake_words.py's measurement (docs/performance.md, "Wake words").
microWakeWord bundles okay_nabu, hey_jarvis, alexa and hey_mycroft; openWakeWord those and
hey_rhasspy; any other openWakeWord .tflite model works by path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edge.audio_format import SAMPLE_RATE
from edge.errors import AudioError

OPEN_BUNDLED = ("okay_nabu", "hey_jarvis", "alexa", "hey_mycroft", "hey_rhasspy")
MICRO_BUNDLED = ("okay_nabu", "hey_jarvis", "alexa", "hey_mycroft")
BUNDLED = OPEN_BUNDLED  # every bundled name, whichever engine has it
# The engine a bare name takes: the one with the higher recall in noise at no more false accepts
# (docs/performance.md, "Wake words"; a test holds the two to each other). hey_rhasspy is openWakeWord's only.
DEFAULT_ENGINES = {"alexa": "micro", "hey_jarvis": "open", "hey_mycroft": "micro", "okay_nabu": "open"}
OPEN_THRESHOLD = 0.5  # openWakeWord's own default probability
# microWakeWord's thresholds, chosen by scripts/wake_thresholds.py on a tuning set of its own (requests
# and three hours of speech without a name, other than wake_words.py's): the lowest that leaves every
# clip without the name 0.1 below it, never above the model's cutoff (its config's) nor under 0.5.
# Sentences opened as people talk ("Okay, the morning train ...") took okay_nabu to 0.93 and alexa to
# 0.94, over their makers' cutoffs: those two keep them, and even so a few such sentences wake them
# (an hour without openers had allowed 0.62 and 0.5, and 0.62 false-accepted twice an hour).
# hey_mycroft keeps its 0.95 (speech over music reached 0.952). hey_jarvis at 0.59: "Hey there, ..."
# reached 0.49. openWakeWord keeps its 0.5.
# What they buy and cost: docs/performance.md, "Wake words".
THRESHOLDS = {"micro:hey_jarvis": 0.591}
# After a detection the model starts afresh, and micro:okay_nabu at 0.62 (a threshold since dropped) fired
# again 1.3 s later on the request after its name: one name is one detection, however it ends.
REFRACTORY_S = 2.0
NAMES = {name: name.replace("_", " ").title() for name in BUNDLED}  # what to tell the user to say


def parse_wake_word(spec: str) -> tuple[str, str]:
    """(engine, name) for `micro:NAME`, `open:NAME`, a bare bundled NAME or a .tflite path; else the
    one line that lists the choices."""
    engine, colon, name = spec.partition(":")
    if not colon:
        engine, name = DEFAULT_ENGINES.get(spec, "open"), spec
    if engine == "micro" and name in MICRO_BUNDLED:
        return engine, name
    if engine == "open" and (name in OPEN_BUNDLED or (name.endswith(".tflite") and Path(name).is_file())):
        return engine, name
    if name.endswith(".tflite"):
        raise AudioError(f"wake word model not found: {name}")
    choices = ", ".join(OPEN_BUNDLED)
    raise AudioError(
        f"unknown wake word {spec!r}: choose {choices} (micro:NAME or open:NAME picks the engine; "
        "hey_rhasspy is openWakeWord's only), none, or a path to an openWakeWord .tflite model"
    )


def check_wake_word(spec: str) -> str:
    """`spec` if it names a wake word, else the one line that lists the choices."""
    parse_wake_word(spec)
    return spec


class WakeWord:
    """One wake word's detector. Feed it 16 kHz float32 blocks; `feed` is True on the block that
    completes a detection. Not thread-safe: one listener thread."""

    def __init__(self, spec: str, threshold: float | None = None):
        self.engine, self.name = parse_wake_word(spec)
        self._detector = _MicroDetector(self.name) if self.engine == "micro" else _OpenDetector(self.name)
        self.threshold = threshold if threshold is not None else THRESHOLDS.get(self.label, self.model_threshold)
        self.best = 0.0  # the highest probability seen since the last reset (for tuning and tests)
        self._resting_s = 0.0  # a detection this recent was the same name: no second one

    @property
    def phrase(self) -> str:
        return NAMES.get(self.name, Path(self.name).stem.replace("_", " "))

    @property
    def model_threshold(self) -> float:
        """The threshold the model's makers give (what THRESHOLDS lowers)."""
        return self._detector.threshold

    @property
    def label(self) -> str:
        """`engine:name`, as the turn log and the scripts write it."""
        return f"{self.engine}:{self.name}"

    def feed(self, block: np.ndarray) -> bool:
        pcm16 = (np.clip(block, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        heard = False
        for probability in self._detector.probabilities(pcm16):
            self.best = max(self.best, probability)
            heard = heard or probability > self.threshold
        resting, self._resting_s = self._resting_s > 0, max(0.0, self._resting_s - len(block) / SAMPLE_RATE)
        if heard and not resting:
            self._detector.reset()  # one detection per utterance of the name
            self._resting_s = REFRACTORY_S
            return True
        return False

    def reset(self) -> None:
        """Start afresh, as on a new stream: a detection just before does not silence the next one."""
        self._detector.reset()
        self._resting_s = 0.0

    def close(self) -> None:
        self._detector.close()


class _OpenDetector:
    """openWakeWord: mel features, a shared embedding model, then the name's classifier."""

    threshold = OPEN_THRESHOLD

    def __init__(self, name: str):
        try:
            from pyopen_wakeword import Model, OpenWakeWord, OpenWakeWordFeatures
        except ImportError as exc:
            raise AudioError(
                "wake words need pyopen-wakeword: pip install 'edge-gemma[voice]', or use --wake-word none"
            ) from exc
        self._model = OpenWakeWord.from_builtin(Model(name)) if name in OPEN_BUNDLED else OpenWakeWord.from_model(name)
        self._features = OpenWakeWordFeatures.from_builtin()

    def probabilities(self, pcm16: bytes) -> Iterator[float]:
        for features in self._features.process_streaming(pcm16):
            for probability in self._model.process_streaming(features):
                yield float(probability)

    def reset(self) -> None:
        self._model.reset()
        self._features.reset()

    def close(self) -> None:
        self._model.close()
        self._features.close()


class _MicroDetector:
    """microWakeWord (what Home Assistant's voice satellites run): 10 ms micro-frontend features,
    a streaming model, its probabilities averaged over the model's window against its own cutoff."""

    def __init__(self, name: str):
        try:
            from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures, Model
        except ImportError as exc:
            raise AudioError(
                "microWakeWord needs pymicro-wakeword: pip install 'edge-gemma[voice]', or use open:NAME"
            ) from exc
        self._model = MicroWakeWord.from_builtin(Model(name))
        self._features = MicroWakeWordFeatures()
        self.threshold = float(self._model.probability_cutoff)

    def probabilities(self, pcm16: bytes) -> Iterator[float]:
        for features in self._features.process_streaming(pcm16):
            probability = self._model.process_streaming_prob(features)
            if probability is not None:
                yield float(probability)

    def reset(self) -> None:
        self._model.reset()
        self._features = type(self._features)()

    def close(self) -> None:
        self._model.close()


def detections(wake: WakeWord, pcm: np.ndarray, block: int = 1280) -> list[float]:
    """Seconds into `pcm` at which the wake word was heard (for tests and scripts/wake_words.py)."""
    found = []
    for start in range(0, len(pcm), block):
        if wake.feed(pcm[start : start + block]):
            found.append((start + block) / SAMPLE_RATE)
    return found
