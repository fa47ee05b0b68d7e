#!/usr/bin/env python3
"""Soak the voice loop: N spoken turns from a file-backed source, and how much memory grows.

Runs the real pipeline (end-pointing, libmtmd audio encoding, reply, transcript into the text
history, TTS into a null sink) and prints RSS after the warm-up turns and at the end. History is
capped at the last few turns, as a long-running assistant would, so growth means a leak.

    python scripts/voice_soak.py                       # tiny Gemma 4 fixture, 100 turns
    python scripts/voice_soak.py --model M.gguf --mmproj P.gguf --turns 20
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge.audio.capture import ArraySource  # noqa: E402
from edge.audio.files import load_audio  # noqa: E402
from edge.audio.playback import NullSink  # noqa: E402
from edge.audio.tts import EspeakBackend, Speaker  # noqa: E402
from edge.model.mtmd import MtmdAudio  # noqa: E402
from edge.model.runner import LoadedModel  # noqa: E402
from edge.settings import RunSettings  # noqa: E402
from edge.voice.conversation import AudioConversation  # noqa: E402
from edge.voice.loop import VoiceLoop  # noqa: E402

TINY = REPO / "tests" / "fixtures" / "gemma4-tiny"


def rss_mb() -> float:
    """Current resident set size (not the peak), from /proc, after handing freed heap back to the OS.

    Without malloc_trim, glibc keeps freed arenas and RSS wanders by tens of MB from turn to turn,
    hiding (or faking) a real leak.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass  # not glibc: the figure is just noisier
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def spoken_question() -> np.ndarray:
    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "q.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), "What is the weather like today?"], check=True)
        return load_audio(wav)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=TINY / "tiny-gemma-4-E2B.gguf")
    parser.add_argument("--mmproj", type=Path, default=TINY / "mmproj-tiny-gemma-4-E2B.gguf")
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--keep-turns", type=int, default=4, help="text history kept (user+assistant pairs)")
    args = parser.parse_args()

    question = spoken_question()
    gap = np.zeros(16000 * 1, dtype=np.float32)
    settings = RunSettings(n_ctx=4096, n_threads=2, n_threads_batch=2, n_batch=256, n_ubatch=256)
    with LoadedModel(args.model, settings) as loaded, MtmdAudio(loaded.llama, args.mmproj) as audio:
        conversation = AudioConversation(loaded, audio)
        sink = NullSink(keep=False)
        marks: dict[int, float] = {}
        started = time.perf_counter()

        def on_turn(stats) -> None:
            del conversation.history[1 : -2 * args.keep_turns]  # a bounded history, like a long-running loop
            done = len(loop.turns)
            if done in (args.warmup, args.turns) or done % 10 == 0:
                marks[done] = rss_mb()
                print(
                    f"turn {done:>4}: RSS {marks[done]:8.1f} MiB  ({time.perf_counter() - started:6.1f} s)", flush=True
                )

        stream = np.concatenate([gap, question] * args.turns + [gap, gap])
        with sink:
            loop = VoiceLoop(
                conversation,
                ArraySource(stream),
                sink=sink,
                speaker_factory=lambda s: Speaker(EspeakBackend(), s),
                max_tokens=16,
                temperature=0.7,
                on_turn=on_turn,
            )
            loop.run(max_turns=args.turns)
    growth = marks[max(marks)] - marks[args.warmup]
    print(
        f"\n{len(loop.turns)} turns; RSS after turn {args.warmup}: {marks[args.warmup]:.1f} MiB, "
        f"after turn {max(marks)}: {marks[max(marks)]:.1f} MiB, growth {growth:+.1f} MiB"
    )


if __name__ == "__main__":
    main()
