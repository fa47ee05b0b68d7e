#!/usr/bin/env python3
"""How much past audio the audio encoder needs for exact output: the number behind engine/listening.py.

    python scripts/listening_exactness.py                      # the tiny fixture
    python scripts/listening_exactness.py --fullsize --warm 8,13,14,15,16,20

A ~18 s espeak-ng clip is encoded whole; then windows that start `warm` blocks (12 rows, 0.48 s)
before block 30 are encoded, and their rows from block 30 on are compared with the whole clip's.
Printed per warm-up: the largest difference relative to the largest value, and how many rows differ
(0 and 0.0: bit for bit the same). `--fullsize` uses scripts/make_fullsize_gemma4.py's E2B files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from edge.audio.tts_backends import espeak_pcm
from edge.model.engine import LoadedModel
from edge.model.engine.listening import BLOCK_ROWS, BLOCK_SAMPLES
from edge.model.synthetic import FULLSIZE_DIR, REPO
from edge.settings import RunSettings

TINY = REPO / "tests" / "fixtures" / "gemma4-tiny"
COMPARED_FROM_BLOCK = 30


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fullsize", action="store_true", help="the full-size E2B shapes (Q4_0 text, F16 projector)")
    ap.add_argument("--warm", default="0,1,2,3,4,8,16", help="warm-up blocks to try, comma-separated")
    args = ap.parse_args()
    if args.fullsize:
        model, mmproj = (
            FULLSIZE_DIR / "gemma-4-E2B-shaped-Q4_0.gguf",
            FULLSIZE_DIR / "mmproj-gemma-4-E2B-shaped-F16.gguf",
        )
    else:
        model, mmproj = TINY / "tiny-gemma-4-E2B.gguf", TINY / "mmproj-tiny-gemma-4-E2B.gguf"
    sentence = (
        "Could you please turn on the lights in the kitchen and then tell me what the weather will be like "
        "tomorrow morning, because I am planning a long walk along the river with my dog and two friends."
    )
    once = espeak_pcm(sentence)
    pcm = np.concatenate([once, once])[: 16_000 * 20]
    settings = RunSettings(n_ctx=2048, n_batch=512, n_ubatch=512, n_threads=2, n_threads_batch=2)
    with LoadedModel(Path(model), settings) as loaded:
        projector = loaded.attach_projector(Path(mmproj))
        whole = projector.encode_audio(pcm)
        print(f"{pcm.size / 16_000:.1f} s clip, {len(whole)} rows, {projector.audio_layers} encoder layers")
        for warm in [int(w) for w in args.warm.split(",")]:
            start = COMPARED_FROM_BLOCK - warm
            rows = projector.encode_audio(pcm[start * BLOCK_SAMPLES :])[warm * BLOCK_ROWS :]
            reference = whole[COMPARED_FROM_BLOCK * BLOCK_ROWS :][: len(rows)]
            n = min(len(rows), len(reference)) - 1  # the last row hears what comes after it
            diff = np.abs(rows[:n] - reference[:n]).max(axis=1) / np.abs(reference[:n]).max()
            differing = int((diff > 0).sum())
            print(f"warm-up {warm:2d} blocks: max relative difference {diff.max():.2e}, {differing} of {n} rows differ")


if __name__ == "__main__":
    main()
