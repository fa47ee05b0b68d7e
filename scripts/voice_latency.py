#!/usr/bin/env python3
"""How long a listener waits: end of speech -> each stage of a voice turn, median and p95 over N turns.

Speaks N questions (espeak-ng) into a WAV with pauses between them, runs the real
`edge-gemma voice --file` on it at speaking pace (the file stands in for a microphone) with speech
going to the default PortAudio output (a PulseAudio null sink here: scripts/start_test_audio.sh),
and summarises the turns' timelines from its --log. With the tiny Gemma 4 fixture the model's
compute is a few milliseconds, so `audible` is almost all pipeline: end-pointing, hand-offs,
synthesis and output buffering.

    python scripts/voice_latency.py                     # tiny fixture, 6 turns
    python scripts/voice_latency.py --turns 12 --json out.json -- --silence 0.7
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edge.audio.files import save_wav
from edge.audio.tts_backends import espeak_pcm as spoken
from edge.model.synthetic import REPO, TINY_DIR, TINY_MMPROJ_NAME, TINY_TEXT_NAME
from edge.voice.timeline import STAGES

QUESTIONS = [
    "What is the capital of France?",
    "How far away is the moon?",
    "Tell me a short joke about cats.",
    "What time is sunrise in winter?",
    "Can you name three colours?",
    "Why is the sky blue?",
]
SUMMARY = (*STAGES, "model_s", "pipeline_s")


def speech_file(path: Path, turns: int, gap_s: float) -> None:
    """N spoken questions, each followed by `gap_s` of silence (room for the reply)."""
    parts = [np.zeros(8000, dtype=np.float32)]
    for i in range(turns):
        parts += [spoken(QUESTIONS[i % len(QUESTIONS)]), np.zeros(int(gap_s * 16000), dtype=np.float32)]
    save_wav(path, np.concatenate(parts), 16000)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def summarise(turns: list[dict]) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {}
    for stage in SUMMARY:
        values = [t[stage] if stage in ("model_s", "pipeline_s") else t["timeline"].get(stage) for t in turns]
        values = [v for v in values if v is not None]
        if values:
            rows[stage] = {"median": percentile(values, 50), "p95": percentile(values, 95), "n": len(values)}
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--turns", type=int, default=6)
    ap.add_argument("--gap", type=float, default=4.0, help="seconds of silence after each question")
    ap.add_argument("-m", "--model", default=str(TINY_DIR / TINY_TEXT_NAME))
    ap.add_argument("--mmproj", default=str(TINY_DIR / TINY_MMPROJ_NAME))
    ap.add_argument("--json", type=Path, help="also write the summary and every turn here")
    ap.add_argument("voice_args", nargs="*", help="more `edge-gemma voice` options (after --)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="edge-latency-") as tmp:
        wav, log = Path(tmp) / "questions.wav", Path(tmp) / "turns.jsonl"
        speech_file(wav, args.turns, args.gap)
        cmd = [sys.executable, "-m", "edge.cli", "voice", "-m", args.model, "--mmproj", args.mmproj]
        cmd += ["--file", str(wav), "--log", str(log), "--tts", "espeak", *args.voice_args]
        subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        turns = [json.loads(line) for line in log.read_text().splitlines()]

    rows = summarise(turns)
    print(f"{len(turns)} turns; seconds after the end of speech (median / p95)")
    for stage, r in rows.items():
        print(f"  {stage:<17} {r['median']:7.3f}  {r['p95']:7.3f}")
    discarded = sum(t.get("discarded_starts", 0) for t in turns)
    print(f"  speculative starts thrown away: {discarded}")
    if args.json:
        args.json.write_text(json.dumps({"summary": rows, "turns": turns}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
