#!/usr/bin/env python3
"""soxr against edge-gemma's own numpy Kaiser-sinc resampler (edge/audio/resample.py): speed, quality.

    python scripts/resampler_compare.py

Speed: milliseconds to convert 60 s of noise, whole and as a stream of 20 ms blocks. Quality: a
1 kHz tone's level after conversion (passband) and a tone at 90% of the input Nyquist, far above
the output's (aliasing: how far below its input level what folds back lands).
"""

from __future__ import annotations

import time

import numpy as np
import soxr

from edge.audio.resample import StreamResampler, resample

RATES = [(48_000, 16_000), (44_100, 16_000), (22_050, 16_000)]


def level_db(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(x[len(x) // 10 : -len(x) // 10].astype(np.float64) ** 2)) + 1e-12)


def tone(hz: float, rate: int, seconds: float = 2.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def ours_whole(x, src, dst):
    return resample(x, src, dst)


def soxr_whole(x, src, dst):
    return soxr.resample(x, src, dst, quality="HQ")


def ours_stream(x, src, dst, block):
    r = StreamResampler(src, dst)
    return [r.process(x[i : i + block]) for i in range(0, len(x), block)] + [r.flush()]


def soxr_stream(x, src, dst, block):
    s = soxr.ResampleStream(src, dst, 1, dtype="float32", quality="HQ")
    n = len(x)
    return [s.resample_chunk(x[i : i + block], last=i + block >= n) for i in range(0, n, block)]


def main() -> int:
    print("| rates | resampler | 60 s whole (ms) | 60 s in 20 ms blocks (ms) | 1 kHz level (dB) | alias (dB) |")
    print("|---|---|---:|---:|---:|---:|")
    rng = np.random.default_rng(1)
    for src, dst in RATES:
        noise = (0.1 * rng.standard_normal(60 * src)).astype(np.float32)
        for name, whole, stream in (("soxr HQ", soxr_whole, soxr_stream), ("numpy sinc", ours_whole, ours_stream)):
            t0 = time.perf_counter()
            whole(noise, src, dst)
            whole_ms = (time.perf_counter() - t0) * 1000
            t0 = time.perf_counter()
            stream(noise, src, dst, src // 50)
            stream_ms = (time.perf_counter() - t0) * 1000
            passband = level_db(whole(tone(1000, src), src, dst)) - level_db(tone(1000, src))
            alias = level_db(whole(tone(0.45 * src, src), src, dst)) - level_db(tone(0.45 * src, src))
            print(f"| {src} -> {dst} | {name} | {whole_ms:.0f} | {stream_ms:.0f} | {passband:+.2f} | {alias:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
