#!/usr/bin/env python3
"""How well the bundled wake words hear their names, what they cost, and how fast Piper speaks.

    python scripts/wake_words.py            # all five bundled wake words
    python scripts/wake_words.py --quick    # fewer voices and noise levels

Speech is made here: Piper's joe voice at three speeds and espeak-ng in three voices, each saying
"<name>, what time is it?" (positives) and everyday sentences without a name (negatives), with white
noise added at several signal-to-noise ratios. Detection rate: positives heard by their own model.
False accepts: any model firing on a negative, or on another model's name. CPU: seconds of
processing per second of audio, one thread (the share of one core the always-on listener takes).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from edge.audio.piper import PiperBackend
from edge.audio.resample import resample
from edge.audio.tts_backends import EspeakBackend
from edge.audio.wake import BUNDLED, NAMES, WakeWord, detections
from edge.audio_format import SAMPLE_RATE

NEGATIVES = [
    "What time is it?",
    "Turn on the kitchen light.",
    "The weather tomorrow will be sunny with a light breeze.",
    "Could you pass me the salt, please?",
    "I think we should leave at half past seven.",
    "Here is the news at nine o'clock.",
    "Did you remember to water the plants?",
    "The meeting has been moved to Thursday afternoon.",
]


def voices(quick: bool):
    """(label, text -> 16 kHz pcm) for each synthetic speaker."""
    piper, espeak_voices = PiperBackend("joe"), ["en-us", "en+f3", "en+m3"]
    out = []
    for speed in (1.0,) if quick else (0.8, 1.0, 1.25):
        out.append((f"piper joe x{speed}", lambda t, s=speed: _at16k(*piper.synthesize(t, speed=s))))
    for name in espeak_voices[:1] if quick else espeak_voices:
        backend = EspeakBackend(name)
        out.append((f"espeak {name}", lambda t, b=backend: _at16k(*b.synthesize(t))))
    return out


def _at16k(pcm: np.ndarray, rate: int) -> np.ndarray:
    return resample(pcm, rate, SAMPLE_RATE) if rate != SAMPLE_RATE else pcm


def with_noise(pcm: np.ndarray, snr_db: float | None, rng: np.random.Generator) -> np.ndarray:
    pad = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
    clip = np.concatenate([pad, pcm, pad])
    if snr_db is None:
        return clip
    speech_rms = np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) + 1e-9
    noise = rng.standard_normal(len(clip)) * speech_rms / (10 ** (snr_db / 20))
    return np.clip(clip + noise, -1, 1).astype(np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(2026)
    speakers = voices(args.quick)
    noise_levels = [None, 10.0] if args.quick else [None, 20.0, 10.0, 0.0]
    models = {name: WakeWord(name) for name in BUNDLED}

    print(
        "| wake word | "
        + " | ".join(f"heard, {'clean' if n is None else f'SNR {n:g} dB'}" for n in noise_levels)
        + " |"
    )
    print("|---|" + "---:|" * len(noise_levels))
    false_on_names = 0
    named_clips = 0
    for name in BUNDLED:
        cells = []
        for snr in noise_levels:
            heard = 0
            for _, speak in speakers:
                clip = with_noise(speak(f"{NAMES[name]}, what time is it?"), snr, rng)
                named_clips += 1
                for other, model in models.items():
                    fired = bool(detections(model, clip))
                    model.reset()
                    if other == name:
                        heard += fired
                    else:
                        false_on_names += fired
            cells.append(f"{heard}/{len(speakers)}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)

    negative_seconds, false_accepts = 0.0, {name: 0 for name in BUNDLED}
    for _, speak in speakers:
        for sentence in NEGATIVES:
            for snr in noise_levels:
                clip = with_noise(speak(sentence), snr, rng)
                negative_seconds += len(clip) / SAMPLE_RATE
                for name, model in models.items():
                    false_accepts[name] += bool(detections(model, clip))
                    model.reset()
    print(
        f"\nfalse accepts on {negative_seconds / 60:.1f} min of speech without a name (x{len(BUNDLED)} models): "
        + ", ".join(f"{n} {c}" for n, c in false_accepts.items())
        + f"; on the {named_clips} clips with another model's name: {false_on_names}"
    )

    pcm = np.concatenate([with_noise(speakers[0][1](s), 20.0, rng) for s in NEGATIVES])
    wake = models["hey_jarvis"]
    started = time.process_time()
    detections(wake, pcm)
    cpu = (time.process_time() - started) / (len(pcm) / SAMPLE_RATE)
    print(f"always-on wake word: {cpu * 100:.1f}% of one core (CPU seconds per second of audio, 1280-sample blocks)")

    piper = PiperBackend("joe")
    clauses = ["Sure,", "The kitchen light is on.", "Your pasta timer has nine minutes and thirty seconds left."]
    for clause in clauses:
        piper.synthesize(clause)  # warm
        t0 = time.perf_counter()
        audio, rate = piper.synthesize(clause)
        took = time.perf_counter() - t0
        seconds = len(audio) / rate
        print(f"piper joe: {clause!r}: {took * 1000:.0f} ms for {seconds:.2f} s of speech (RTF {took / seconds:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
