#!/usr/bin/env python3
"""A Home Assistant voice command through `edge-gemma wyoming`, stage by stage: end of speech -> transcript
-> the conversation agent's answer, measured with the real Wyoming client as HA's pipeline sends it.

"Turn on the kitchen light" (espeak-ng, about 1.7 s) goes as audio-start/-chunk/-stop, 100 ms chunks at
the pace a satellite's microphone gives them (the server hears the command while it is said); the transcript
goes to the conversation agent with Home Assistant's 14 intents (`--home-control always`). Three
commands: the first after a start with no saved prompt state (cold), the next one (steady), and the
first after a restart that finds the state saved (warm restart). Stages come from the server's
`--log` (prompt tokens evaluated and reused, prompt seconds, decode tok/s) and the client's clock.

Random weights never write what a trained model writes, so the server caps the transcript at 6 tokens
("Turn on the kitchen light.") and the answer at 16 (its call, markup included), and
the decode of those counts is figured from the measured decode rate: the figures are prefill and
encoder time measured here plus fixed token counts at the measured speed.

    python scripts/ha_command.py -m E2B.gguf --mmproj mmproj-Q8_0.gguf --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TRANSCRIPT_TOKENS, CALL_TOKENS = 6, 16  # what a real model writes for this command (the call with its markup)
COMMAND = "Turn on the kitchen light."
CHUNK_S = 0.1  # audio_events' chunk


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, mmproj: Path, log: Path, cache: Path, threads: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    args = ["-m", str(model), "--mmproj", str(mmproj), "-c", "4096", "-t", str(threads), "--no-tune"]
    args += ["--uri", f"tcp://127.0.0.1:{port}", "--home-control", "always", "--tts", "none", "--log", str(log)]
    args += ["--max-tokens", str(CALL_TOKENS), "--transcript-tokens", str(TRANSCRIPT_TOKENS)]
    env = dict(os.environ, XDG_CACHE_HOME=str(cache))
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "wyoming", *args], env=env, stderr=subprocess.PIPE, text=True
    )
    return proc, port


async def exchange(port: int, events, until: tuple, timeout: float = 600.0, pace_s: float = 0.0):
    """Send `events` (`pace_s` apart), then read until one of `until`; the time the last one went."""
    from wyoming.client import AsyncTcpClient

    received = []
    async with AsyncTcpClient("127.0.0.1", port) as client:
        for event in events:
            await client.write_event(event)
            await asyncio.sleep(pace_s)
        sent = time.perf_counter()
        while True:
            event = await asyncio.wait_for(client.read_event(), timeout)
            if event is None:
                return received, sent
            received.append((time.perf_counter(), event))
            if any(t.is_type(event.type) for t in until):
                return received, sent


def audio_events(pcm: np.ndarray) -> list:
    from wyoming.audio import AudioChunk, AudioStart, AudioStop

    data = (np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes()
    chunks = [data[i : i + 3200] for i in range(0, len(data), 3200)]  # 100 ms
    return (
        [AudioStart(rate=16000, width=2, channels=1).event()]
        + [AudioChunk(rate=16000, width=2, channels=1, audio=c).event() for c in chunks]
        + [AudioStop().event()]
    )


def wait_ready(port: int, proc: subprocess.Popen, pcm: np.ndarray) -> None:
    """Until a transcription is answered (the model has loaded). It does not touch the agent's prompt."""
    from wyoming.asr import Transcript
    from wyoming.error import Error

    deadline = time.time() + 900
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {proc.stderr.read()}")
        try:
            received, _ = asyncio.run(exchange(port, audio_events(pcm), (Transcript, Error)))
            if received and Transcript.is_type(received[-1][1].type):
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit("the server did not become ready")


def command(port: int, pcm: np.ndarray) -> dict:
    """One command as HA sends it; client-side seconds per stage."""
    from wyoming.asr import Transcript
    from wyoming.handle import Handled, NotHandled
    from wyoming.intent import Intent, IntentsStop

    # 100 ms chunks as a satellite's microphone gives them: the server hears the command while it is said.
    received, stopped = asyncio.run(exchange(port, audio_events(pcm), (Transcript,), pace_s=CHUNK_S))
    heard_at = received[-1][0]
    context = {"satellite_id": "kitchen-satellite"}
    # Random weights write a meaningless transcript: HA would hand the agent the real one.
    event = Transcript(text=COMMAND, context=context).event()
    answered, asked = asyncio.run(exchange(port, [event], (Intent, IntentsStop, Handled, NotHandled)))
    return {"transcribe_wall_s": heard_at - stopped, "handle_wall_s": answered[-1][0] - asked}


def logged(log: Path, after: int) -> tuple[dict, dict]:
    """The command's transcribe and handle records (the server writes each once its last event is out)."""
    deadline = time.time() + 30
    while True:
        records = [json.loads(x) for x in log.read_text().splitlines()[after:]]
        kinds = {r["kind"]: r for r in records}
        if {"transcribe", "handle"} <= set(kinds) or time.time() > deadline:
            return kinds["transcribe"], kinds["handle"]
        time.sleep(0.05)


def run(model: Path, mmproj: Path, threads: int) -> dict:
    from edge.audio.tts_backends import espeak_pcm

    pcm = np.concatenate([espeak_pcm(COMMAND), np.zeros(4000, np.float32)])
    # Readiness is checked with other speech: the measured command's audio must not be in the cache.
    hello = np.concatenate([espeak_pcm("Hello there."), np.zeros(4000, np.float32)])
    out = {"speech_s": round(len(pcm) / 16000, 2), "commands": []}
    with tempfile.TemporaryDirectory() as tmp:
        log, cache = Path(tmp) / "requests.jsonl", Path(tmp) / "cache"
        for label, commands in (("start, nothing saved", ("cold", "steady")), ("restart, state saved", ("warm",))):
            proc, port = start_server(model, mmproj, log, cache, threads)
            try:
                wait_ready(port, proc, hello)
                for name in commands:
                    lines_before = len(log.read_text().splitlines())
                    measured = command(port, pcm)
                    transcribe, handle = logged(log, lines_before)
                    out["commands"].append(
                        {"name": name, "server": label, **measured, "transcribe": transcribe, "handle": handle}
                    )
                    print(f"{name}: {out['commands'][-1]}", flush=True)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=120)
            time.sleep(1)  # the state file is written in the background: let it land before the restart
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", type=Path, required=True)
    ap.add_argument("--mmproj", type=Path, required=True)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    results = run(args.model, args.mmproj, args.threads)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
