#!/usr/bin/env python3
"""Wake words, microWakeWord against openWakeWord: recall on spoken requests in noise, false accepts
per hour on speech and television-like audio without the name, and the share of one core each takes.

    python scripts/wake_words.py            # the full measurement (about 40 minutes on 2 cores)
    python scripts/wake_words.py --quick    # fewer requests and conditions
    python scripts/fullsize_report.py --sections wake   # the same, into docs/performance.md

Speech is made here: Piper's joe voice at three speeds and espeak-ng in three voices. Positives:
"<name>, <request>" for 17 everyday requests (102 clips per condition). Noise is mixed at a
signal-to-noise ratio over the speech: fan (pink noise), babble (four other sentences at once) and
music (chords with a beat); then the assistant's own reply playing through a loudspeaker in a room
(echo_bench's), as loud as the user, heard as the voice loop's wake word hears it (the echo canceller's
linear filter, edge/audio/echo.py). Names: okay_nabu, hey_jarvis, alexa and hey_mycroft on both engines.
Negatives: 150 sentences without a name, and 90 more opened as people talk ("Okay then, ...", "Hey
look, ..."; the words that begin the names, which a detector is likeliest to take for one), in every
voice, alone and over music (television-like). A detection is the model's probability crossing the threshold a
voice loop uses (edge/audio/wake.py THRESHOLDS, chosen by scripts/wake_thresholds.py on other speech).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import echo_bench
import numpy as np
import onnxruntime

from edge.audio.piper import PiperBackend
from edge.audio.resample import resample
from edge.audio.tts_backends import EspeakBackend
from edge.audio.wake import NAMES, WakeWord, detections
from edge.audio_format import SAMPLE_RATE

REQUESTS = [
    "what time is it?",
    "turn on the kitchen light.",
    "set a timer for ten minutes.",
    "what's the weather tomorrow?",
    "turn off the lights in the living room.",
    "play some music.",
    "how many teaspoons are in a tablespoon?",
    "add milk to the shopping list.",
    "set the thermostat to twenty degrees.",
    "is the front door locked?",
    "stop.",
    "what's on my calendar today?",
    "open the blinds in the bedroom.",
    "turn the volume down.",
    "how long until the pasta is done?",
    "remind me to call mum at six.",
    "good night.",
]
SUBJECTS = ["The kitchen", "My brother", "The old bridge", "Our neighbour", "The evening news", "That film"]
VERBS = ["was closed for repairs", "looked much better than before", "started an hour late", "made everyone laugh",
         "needs a fresh coat of paint"]  # fmt: skip
ENDINGS = ["last week.", "this morning.", "after the storm.", "on Sunday.", "again, apparently."]
# Openers that share a word with the names; scripts/wake_thresholds.py tunes on others of the same kind.
OPENERS = ["Okay then,", "OK,", "Hey look,", "Hey you,", "Alright so", "Oh dear,"]
OPENED_PER_OPENER = 15  # sentences drawn for each opener
NAMES_MEASURED = ("okay_nabu", "hey_jarvis", "alexa", "hey_mycroft")
SPECS = tuple(f"{engine}:{name}" for name in NAMES_MEASURED for engine in ("micro", "open"))
# Noise at three SNRs; then the assistant's own reply playing through a loudspeaker in a simulated room,
# as loud as the user at the microphone (what `--barge-in name` must hear the name through).
CONDITIONS = [(None, None)] + [(kind, snr) for kind in ("fan", "babble", "music") for snr in (20.0, 10.0, 5.0)]
CONDITIONS += [("reply", 0.0)]
REPLY_LEAD_S = 4.0  # the reply plays this long before the name: the canceller has learnt the room


def voices(quick: bool):
    """(label, text -> 16 kHz pcm) for each synthetic speaker."""
    piper = PiperBackend("joe")
    out = []
    for speed in (1.0,) if quick else (0.8, 1.0, 1.25):
        out.append((f"piper joe x{speed}", lambda t, s=speed: _at16k(*piper.synthesize(t, speed=s))))
    for name in ["en-us"] if quick else ["en-us", "en+f3", "en+m3"]:
        backend = EspeakBackend(name)
        out.append((f"espeak {name}", lambda t, b=backend: _at16k(*b.synthesize(t))))
    return out


def _at16k(pcm: np.ndarray, rate: int) -> np.ndarray:
    return (resample(pcm, rate, SAMPLE_RATE) if rate != SAMPLE_RATE else pcm).astype(np.float32)


def opened(sentences: list[str], openers: list[str], per_opener: int, rng: np.random.Generator) -> list[str]:
    """`per_opener` of `sentences` begun with each opener ("Okay then, the kitchen was closed ...")."""
    out = []
    for opener in openers:
        for i in rng.choice(len(sentences), per_opener, replace=False):
            out.append(f"{opener} {sentences[i][0].lower()}{sentences[i][1:]}")
    return out


def pink(n: int, rng: np.random.Generator) -> np.ndarray:
    """A fan: noise whose power falls as 1/f."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
    return np.fft.irfft(spectrum, n).astype(np.float32)


def music(n: int, rng: np.random.Generator) -> np.ndarray:
    """Chords changing every half second over a beat: a stand-in for a television's soundtrack."""
    t = np.arange(n) / SAMPLE_RATE
    out = np.zeros(n, np.float32)
    for start in range(0, n, SAMPLE_RATE // 2):
        root = 110 * 2 ** (rng.integers(0, 12) / 12)
        seg = slice(start, min(n, start + SAMPLE_RATE // 2))
        for ratio in (1, 1.26, 1.5, 2):
            out[seg] += np.sin(2 * np.pi * root * ratio * t[seg]) * np.exp(-3 * (t[seg] - t[seg][0]))
    beat = (np.sin(2 * np.pi * 2 * t) > 0.95).astype(np.float32) * rng.standard_normal(n).astype(np.float32)
    return out + 0.5 * beat


def noise(kind: str, n: int, rng: np.random.Generator, babble: list[np.ndarray]) -> np.ndarray:
    if kind == "fan":
        return pink(n, rng)
    if kind == "music":
        return music(n, rng)
    mix = np.zeros(n, np.float32)
    for clip in rng.choice(len(babble), 4, replace=False):
        voice = np.resize(babble[clip], n)
        mix += np.roll(voice, int(rng.integers(0, n)))
    return mix


def mixed(pcm: np.ndarray, kind: str | None, snr_db: float | None, rng, babble, replies=()) -> np.ndarray:
    pad = np.zeros(SAMPLE_RATE // 2, np.float32)
    clip = np.concatenate([pad, pcm, pad])
    if kind is None:
        return clip
    speech_rms = np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) + 1e-9
    if kind == "reply":
        return during_reply(clip, speech_rms, snr_db, replies[int(rng.integers(len(replies)))], rng)
    n = noise(kind, len(clip), rng, babble)
    n *= speech_rms / (10 ** (snr_db / 20)) / (np.sqrt(np.mean(n.astype(np.float64) ** 2)) + 1e-9)
    return np.clip(clip + n, -1, 1).astype(np.float32)


def during_reply(clip: np.ndarray, speech_rms: float, snr_db: float, reply: np.ndarray, rng) -> np.ndarray:
    """`clip` said while a reply plays through a loudspeaker in a room, REPLY_LEAD_S into it: what the
    voice loop's wake word hears of it (echo.py's linear canceller, the reply as its reference)."""
    lead = int(REPLY_LEAD_S * SAMPLE_RATE)
    played = np.resize(reply, lead + len(clip)).astype(np.float64)
    echo = echo_bench.room(played, rng)
    echo *= speech_rms * 10 ** (-snr_db / 20) / (np.sqrt(np.mean(echo**2)) + 1e-9)
    mic = echo
    mic[lead:] += clip
    mic *= 0.9 / np.max(np.abs(mic))  # the microphone's gain: a real one stops at full scale
    _, heard, _, _ = echo_bench.cancelled(mic.astype(np.float32), played.astype(np.float32))
    return heard[lead:]


def heard(wake: WakeWord, clip: np.ndarray) -> bool:
    fired = bool(detections(wake, clip))
    wake.reset()
    return fired


def measure(quick: bool = False) -> dict:
    rng = np.random.default_rng(2026)
    onnxruntime.set_seed(2026)  # Piper draws noise in its graph: the same speech on every run
    speakers = voices(quick)
    requests = REQUESTS[:6] if quick else REQUESTS
    conditions = [(None, None), ("fan", 10.0), ("music", 10.0), ("reply", 0.0)] if quick else CONDITIONS
    sentences = [" ".join(p) for p in itertools.product(SUBJECTS, VERBS, ENDINGS)][: 20 if quick else 150]
    detectors = {spec: WakeWord(spec) for spec in SPECS}
    out: dict = {"voices": [label for label, _ in speakers], "requests_per_condition": 0, "recall": {}}
    out["thresholds"] = {spec: [wake.threshold, wake.model_threshold] for spec, wake in detectors.items()}

    negatives = [speak(s) for s in sentences for _, speak in speakers]
    babble = negatives[: 4 * len(speakers)]
    # Drawn apart from `rng`, so the requests' noise is what it was before openers were added. Their speech
    # is not: Piper's seeded noise is drawn in speaking order, and these are spoken first.
    openers, per_opener = (OPENERS[:2], 5) if quick else (OPENERS, OPENED_PER_OPENER)
    talk = opened(sentences, openers, per_opener, np.random.default_rng(1))
    negatives += [speak(s) for s in talk for _, speak in speakers]
    replies = [_at16k(*EspeakBackend().synthesize(text)) for text in echo_bench.REPLIES]
    for name in sorted({spec.split(":")[1] for spec in SPECS}):
        named = [speak(f"{NAMES[name]}, {r}") for r in requests for _, speak in speakers]
        out["requests_per_condition"] = len(named)
        for kind, snr in conditions:
            label = "clean" if kind is None else "reply playing" if kind == "reply" else f"{kind} {snr:g} dB"
            clips = [mixed(c, kind, snr, rng, babble, replies) for c in named]
            for spec in (s for s in SPECS if s.endswith(name)):
                hits = sum(heard(detectors[spec], c) for c in clips)
                out["recall"].setdefault(spec, {})[label] = hits / len(clips)
            print(
                f"{name} {label}: "
                + ", ".join(f"{s} {out['recall'][s][label]:.2f}" for s in SPECS if s.endswith(name)),
                flush=True,
            )

    tv = [mixed(c, "music", 5.0, rng, babble) for c in negatives[::3]]  # speech over a soundtrack
    background = negatives + tv
    hours = sum(len(c) for c in background) / SAMPLE_RATE / 3600
    out["negative_minutes"] = round(hours * 60, 1)
    out["false_accepts"], out["cpu_share"] = {}, {}
    for spec, wake in detectors.items():
        started = time.process_time()
        fired = sum(len(detections(wake, c)) for c in background)
        wake.reset()
        out["cpu_share"][spec] = (time.process_time() - started) / (hours * 3600)
        out["false_accepts"][spec] = {"count": fired, "per_hour": fired / hours}
        print(f"{spec}: {fired} false accepts in {hours * 60:.1f} min", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    results = measure(args.quick)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
