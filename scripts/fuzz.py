#!/usr/bin/env python3
"""Fuzz what edge-gemma parses from outside, for longer than the test suite does, and report.

The targets are tests/fuzz_targets.py (the same ones tests/test_fuzz.py runs, bounded and
derandomized). Here each runs with fresh randomness for --examples cases. With --load, GGUF
mutations that pass the header checker are also loaded by `edge-gemma run` in a child process,
which shows whether llama.cpp itself survives what the checker lets through.

Examples:
    python scripts/fuzz.py                       # 2,000 cases per target
    python scripts/fuzz.py --examples 500 --load --only gguf
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import fuzz_targets as targets  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402


def run_target(name: str, strategy, target, examples: int) -> list[str]:
    """Run one target; returns the findings (exceptions other than the expected EdgeError)."""
    findings: list[str] = []

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def case(data):
        try:
            target(data)
        except Exception as exc:  # noqa: BLE001 - everything else is what we are looking for
            findings.append(f"{type(exc).__name__}: {str(exc)[:160]}")

    case()
    return findings


def load_mutations(examples: int) -> collections.Counter:
    """Mutated GGUFs that pass the checker, run through the real CLI: how does each end?"""
    from edge.errors import ModelFileError
    from edge.model.gguf import check_loadable_model

    samples: list[bytes] = []
    run_target("gguf-samples", targets.mutated_gguf(), samples.append, examples)
    outcomes: collections.Counter = collections.Counter()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.gguf"
        for data in samples:
            path.write_bytes(data)
            try:
                check_loadable_model(path)
            except ModelFileError:
                outcomes["refused by the checker"] += 1
                continue
            command = [sys.executable, "-m", "edge.cli", "run", "-m", str(path), "-n", "2", "-c", "256", "hi"]
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
            if "Traceback" in done.stderr:
                outcomes["traceback (a finding)"] += 1
            elif done.returncode == 0:
                outcomes["loaded and ran"] += 1
            elif "crashed in native code" in done.stderr:
                outcomes["native crash in llama.cpp, explained in one line"] += 1
            else:
                outcomes["clean one-line error"] += 1
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--only", choices=["gguf", "profile", "audio", "image", "hub"])
    parser.add_argument("--load", action="store_true", help="also load passing GGUF mutations in llama.cpp")
    args = parser.parse_args()
    plans = {
        "gguf": (targets.mutated_gguf(), targets.gguf_target),
        "profile": (targets.profile_toml(), targets.profile_target),
        "audio": (targets.audio_bytes(), targets.audio_target),
        "image": (targets.image_bytes(), targets.image_target),
    }
    total = 0
    for name, (strategy, target) in plans.items():
        if args.only and args.only != name:
            continue
        started = time.perf_counter()
        findings = run_target(name, strategy, target, args.examples)
        total += len(findings)
        print(f"{name}: {args.examples} cases in {time.perf_counter() - started:.0f} s, {len(findings)} findings")
        for finding, count in collections.Counter(findings).most_common(10):
            print(f"  {count} x {finding}")
    if args.only in (None, "hub"):
        import os

        from fake_hub import FakeHub

        with FakeHub() as hub:
            os.environ["HF_ENDPOINT"] = hub.endpoint
            started = time.perf_counter()
            findings = run_target(
                "hub",
                targets.hub_model_info(),
                lambda body: targets.hub_target(hub, "ggml-org/gemma-4-E2B-it-GGUF", body),
                args.examples,
            )
            total += len(findings)
            print(f"hub: {args.examples} answers in {time.perf_counter() - started:.0f} s, {len(findings)} findings")
            for finding, count in collections.Counter(findings).most_common(10):
                print(f"  {count} x {finding}")
    if args.load:
        for outcome, count in load_mutations(min(args.examples, 200)).most_common():
            print(f"gguf load: {count} {outcome}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
