#!/usr/bin/env python3
"""Soak a conversation for many turns: every turn answered, memory flat, history kept in the budget.

voice: N spoken turns from a file-backed source through the real pipeline (end-pointing, libmtmd
audio encoding, reply, transcript into the text history, TTS into a null sink), at a small context
so the history outgrows it again and again. chat: N typed turns through ChatSession on the demo
model. Prints RSS (mean of the first vs the last 100 turns, after the warm-up), failed turns, and
how many turns had to drop old history (each such drop means one re-prefill of the kept history).

    python scripts/soak.py voice --turns 1000 --ctx 1024      # tiny Gemma 4 fixture
    python scripts/soak.py chat --turns 200 --ctx 512          # the embedded demo model
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from edge.audio.capture import ArraySource
from edge.audio.files import load_audio
from edge.audio.playback import NullSink
from edge.audio.tts import Speaker
from edge.audio.tts_backends import EspeakBackend
from edge.model.engine import GEMMA_SAMPLING, LoadedModel
from edge.model.synthetic import TINY_DIR as TINY
from edge.settings import RunSettings
from edge.voice.audio_conversation import AudioConversation
from edge.voice.loop import VoiceLoop


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


def report(kind: str, rss: list[float], failed: int, drops: int, seconds: float, warmup: int) -> None:
    body = rss[warmup:]
    window = min(100, max(1, len(body) // 2))
    first, last = body[:window], body[-window:]
    print(
        f"\n{kind}: {len(rss)} turns in {seconds:.0f} s, {failed} failed, {drops} turns dropped old history "
        f"(re-prefills); RSS first {window} {np.mean(first):.1f} MiB, last {window} {np.mean(last):.1f} MiB, "
        f"growth {np.mean(last) - np.mean(first):+.1f} MiB"
    )


def soak_voice(args) -> None:
    question = spoken_question()
    gap = np.zeros(16000 * 1, dtype=np.float32)
    settings = RunSettings(n_ctx=args.ctx, n_threads=2, n_threads_batch=2, n_batch=256, n_ubatch=256)
    rss: list[float] = []
    with LoadedModel(args.model, settings) as loaded:
        loaded.attach_projector(args.mmproj)
        conversation = AudioConversation(loaded)
        sink = NullSink(keep=False)
        started = time.perf_counter()

        def on_turn(stats) -> None:
            rss.append(rss_mb())
            if len(rss) % 100 == 0:
                print(
                    f"turn {len(rss):>5}: RSS {rss[-1]:8.1f} MiB  ({time.perf_counter() - started:6.1f} s)", flush=True
                )

        stream = np.concatenate([gap, question] * args.turns + [gap, gap])
        with sink:
            loop = VoiceLoop(
                conversation,
                ArraySource(stream),
                sink=sink,
                speaker_factory=lambda s: Speaker(EspeakBackend(), s),
                sampling=GEMMA_SAMPLING.with_(max_tokens=32, temperature=0.7),
                on_turn=on_turn,
                forget_after_s=None,
            )
            loop.run(max_turns=args.turns)
    drops = sum(1 for t in loop.turns if t.dropped_turns)
    report("voice", rss, loop.failed_turns, drops, time.perf_counter() - started, args.warmup)


def soak_chat(args) -> None:
    from edge.errors import EdgeError
    from edge.model.conversation import Conversation
    from edge.model.files import ensure_demo_model

    model = ensure_demo_model() if args.model is None else args.model
    settings = RunSettings(n_ctx=args.ctx, n_threads=2, n_threads_batch=2)
    rss: list[float] = []
    failed = drops = 0
    started = time.perf_counter()
    with LoadedModel(model, settings) as loaded:
        session = Conversation(loaded, system="Answer in a few sentences.")
        for turn in range(args.turns):
            try:
                generation = session.reply(
                    f"Tell me a long story about the number {turn} and the sea.",
                    GEMMA_SAMPLING.with_(max_tokens=64, temperature=0.7),
                )
                session.remember(generation.run())
                drops += int(bool(session.last_fit and session.last_fit.dropped_turns))
            except EdgeError as exc:
                failed += 1
                print(f"turn {turn}: {exc}")
            rss.append(rss_mb())
            if len(rss) % 50 == 0:
                print(
                    f"turn {len(rss):>5}: RSS {rss[-1]:8.1f} MiB  ({time.perf_counter() - started:6.1f} s)", flush=True
                )
    report("chat", rss, failed, drops, time.perf_counter() - started, args.warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["voice", "chat"])
    parser.add_argument("--model", type=Path, help="default: tiny Gemma 4 (voice), the demo model (chat)")
    parser.add_argument("--mmproj", type=Path, default=TINY / "mmproj-tiny-gemma-4-E2B.gguf")
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument("--ctx", type=int, default=1024)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    if args.mode == "voice":
        args.model = args.model or TINY / "tiny-gemma-4-E2B.gguf"
        soak_voice(args)
    else:
        soak_chat(args)


if __name__ == "__main__":
    main()
