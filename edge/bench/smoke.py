"""Setup's smoke test: load the configured model the way `run` does, generate a few tokens, bench briefly.

It lives above setup/ (it needs launch and the bench), so setup's own steps never import upwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge.bench.measure import BenchResult, BenchTest, run_sweep
from edge.launch import LoadRequest, RunPlan, load_model, prepare_run
from edge.model.engine import GREEDY, GenerationStats


@dataclass(frozen=True)
class SmokeTest:
    plan: RunPlan
    stats: GenerationStats  # the few generated tokens' numbers, as `run` prints them
    bench: tuple[BenchResult, ...]  # pp128 and tg32
    load_seconds: float


def smoke_test(root: Path = Path("/")) -> SmokeTest:
    plan = prepare_run(LoadRequest(root=root))  # the config just saved: its profile, model and plan
    s = plan.resolved.settings
    with load_model(plan) as loaded:
        generation = loaded.chat([{"role": "user", "content": "Say hello in five words."}], GREEDY.with_(max_tokens=16))
        generation.run()
        tests = [
            BenchTest(n, g, 0, s.n_threads, s.n_threads_batch, s.n_batch, s.n_ubatch) for n, g in ((128, 0), (0, 32))
        ]
        outcome = run_sweep(loaded, tests, repetitions=2)
        return SmokeTest(plan, generation.stats, tuple(outcome.results), loaded.load_seconds)
