#!/usr/bin/env python3
"""The end-pointer's two speech detectors, side by side: energy over the noise floor, and Home
Assistant's trained micro VAD (pymicro-vad). Same end-pointing rules around both.

    python scripts/vad_compare.py

Material made here: sentences by Piper (joe) and espeak-ng, clean and in fan noise (SNR 10 dB);
synthetic music (chords with a beat and a bass line); television-like speech (another voice,
quieter, reverberant, in noise); steady noise (white, fan-like) and a ticking clock.
Per detector: utterances found, first syllables clipped (speech began before the clip's audio),
end-point delay (true end of speech -> clip closed: the 0.7 s rule plus what the detector adds),
and clips started on non-speech material (false starts per minute).
"""

from __future__ import annotations

import statistics

import numpy as np

from edge.audio.piper import PiperBackend
from edge.audio.resample import resample
from edge.audio.tts_backends import EspeakBackend
from edge.audio.vad import EndpointConfig, Endpointer
from edge.audio_format import SAMPLE_RATE

SENTENCES = [
    "What time is it?",
    "Turn on the kitchen light, please.",
    "How far away is the moon?",
    "Set a timer for ten minutes.",
    "Could you tell me a short joke?",
    "Why is the sky blue?",
]
RNG = np.random.default_rng(2026)


def quiet(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)


def fan(n: int, level: float) -> np.ndarray:
    return (level * np.convolve(RNG.standard_normal(n), np.ones(8) / 8, mode="same")).astype(np.float32)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-12)


def speech_stream(noise_snr: float | None):
    """(stream, [(onset s, end s)]) of every sentence by both voices, 1.5 s apart."""
    piper, espeak = PiperBackend("joe"), EspeakBackend()
    parts, bounds, t = [quiet(1.0)], [], 1.0
    for speak in (piper, espeak):
        for sentence in SENTENCES:
            pcm, rate = speak.synthesize(sentence)
            pcm = 0.5 * resample(pcm, rate, SAMPLE_RATE) / max(np.abs(pcm).max(), 1e-6)
            loud = np.nonzero(np.abs(pcm) > 0.01 * np.abs(pcm).max())[0]
            bounds.append((t + loud[0] / SAMPLE_RATE, t + loud[-1] / SAMPLE_RATE))
            parts += [pcm, quiet(1.5)]
            t += (len(pcm) + 1.5 * SAMPLE_RATE) / SAMPLE_RATE
    stream = np.concatenate(parts)
    if noise_snr is not None:
        speech_rms = rms(np.concatenate([p for p in parts if rms(p) > 1e-6]))
        stream = stream + fan(len(stream), speech_rms / 10 ** (noise_snr / 20) / rms(fan(SAMPLE_RATE, 1.0)))
    return np.clip(stream, -1, 1).astype(np.float32), bounds


def music(seconds: float = 30.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    chords = [(261.6, 329.6, 392.0), (220.0, 261.6, 329.6), (174.6, 220.0, 261.6), (196.0, 246.9, 293.7)]
    out = np.zeros_like(t)
    for k, chord in enumerate(chords * int(seconds / 8 + 1)):
        start, end = k * 2.0, (k + 1) * 2.0
        span = (t >= start) & (t < end)
        beat = 0.6 + 0.4 * (np.sin(2 * np.pi * 2 * t[span]) > 0)  # a pulse on the beat
        for hz in chord:
            out[span] += 0.08 * np.sin(2 * np.pi * hz * t[span]) * beat
        out[span] += 0.12 * np.sin(2 * np.pi * chord[0] / 2 * t[span])  # bass
    return out.astype(np.float32)


def television(seconds: float = 30.0) -> np.ndarray:
    voice = EspeakBackend("en+f3")
    parts = []
    while sum(len(p) for p in parts) < seconds * SAMPLE_RATE:
        for sentence in SENTENCES:
            pcm, rate = voice.synthesize("And now, the news. " + sentence)
            parts += [resample(pcm, rate, SAMPLE_RATE), quiet(0.3)]
    x = np.concatenate(parts)[: int(seconds * SAMPLE_RATE)]
    room = np.exp(-np.arange(int(0.25 * SAMPLE_RATE)) / (0.05 * SAMPLE_RATE)) * RNG.standard_normal(
        int(0.25 * SAMPLE_RATE)
    )
    x = np.convolve(x, room / np.sqrt(np.sum(room**2)), mode="same")
    x = 0.1 * x / np.abs(x).max()
    return (x + fan(len(x), 0.01)).astype(np.float32)


def clock(seconds: float = 30.0) -> np.ndarray:
    x = fan(int(seconds * SAMPLE_RATE), 0.002)
    for k in range(int(seconds)):
        i = k * SAMPLE_RATE
        x[i : i + 80] += (0.3 * np.hanning(80) * np.sin(np.arange(80))).astype(np.float32)
    return x


def clips_of(stream: np.ndarray, detector: str):
    ep = Endpointer(EndpointConfig(detector=detector))
    clips = []
    for i in range(0, len(stream), 512):
        clips += ep.feed(stream[i : i + 512])
    return clips + ep.flush()


def speech_row(detector: str, noise_snr: float | None) -> str:
    stream, bounds = speech_stream(noise_snr)
    clips = clips_of(stream, detector)
    found = clipped = 0
    delays = []
    for onset, end in bounds:
        mine = [c for c in clips if c.start_s - 0.5 <= onset <= c.end_s]
        if not mine:
            continue
        found += 1
        clip = mine[0]
        clipped += onset < clip.start_s - 0.01
        delays.append(clip.speech_end_s + clip.endpoint_delay_s - end)
    extra = len(clips) - found
    label = "clean" if noise_snr is None else f"fan noise, SNR {noise_snr:g} dB"
    return (
        f"| {detector} | speech, {label} | {found}/{len(bounds)} found, {extra} extra | {clipped} | "
        f"{statistics.median(delays):.2f} s |"
    )


def main() -> int:
    print("| detector | material | utterances | first syllable clipped | end-point delay (median) |")
    print("|---|---|---|---:|---:|")
    for detector in ("energy", "micro"):
        for snr in (None, 10.0):
            print(speech_row(detector, snr), flush=True)
    print("\n| detector | " + " | ".join(("music", "television-like speech", "white noise", "fan", "clock")) + " |")
    print("|---|" + "---:|" * 5)
    materials = [
        music(),
        television(),
        (0.05 * RNG.standard_normal(30 * SAMPLE_RATE)).astype(np.float32),
        fan(30 * SAMPLE_RATE, 0.05),
        clock(),
    ]
    for detector in ("energy", "micro"):
        cells = [f"{len(clips_of(m, detector)) * 60 / (len(m) / SAMPLE_RATE):.0f}/min" for m in materials]
        print(f"| {detector} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
