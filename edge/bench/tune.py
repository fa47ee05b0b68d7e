"""Per-device thread tuning: measure decode and prompt speed for each thread count (and ubatch if it
pays) within a time budget, keep the fastest, and remember it per device and model file.

Decode uses n_threads and prompt processing n_threads_batch (and n_ubatch), so the two are tuned
separately: the grid threads x batch-threads x ubatch collapses to three short races. Each race
measures every candidate once, then keeps re-measuring the ones still close to the best until its
share of the budget is spent. Ties within 1% go to fewer threads (cooler, leaves a core for audio).

The winners are stored through tuned.py.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edge.bench.measure import BenchContext, Progress, mean, now_rfc3339, sample_stdev
from edge.tuned import TunedSettings

UBATCH_CANDIDATES = (128, 256, 512)
TIE = 0.01  # fewer threads win when within 1% of the fastest
KEEP_RACING = 0.92  # candidates over 8% (and clearly, beyond noise) behind the best stop racing
PAYS = 0.03  # a non-default ubatch must be 3% faster to be kept


# ---- the sweep ----------------------------------------------------------------------------------


@dataclass
class Race:
    """Samples (tokens/s) per candidate for one setting."""

    setting: str
    samples: dict[int, list[float]] = field(default_factory=dict)

    def mean(self, candidate: int) -> float:
        return mean(self.samples.get(candidate, []))

    def stdev(self, candidate: int) -> float:
        return sample_stdev(self.samples.get(candidate, []))

    def best(self) -> int | None:
        measured = [c for c, s in self.samples.items() if s]
        if not measured:
            return None
        top = max(self.mean(c) for c in measured)
        return min(c for c in measured if self.mean(c) >= top * (1 - TIE))


@dataclass
class TuneResult:
    tuned: TunedSettings | None  # None when interrupted before every race had a winner
    races: list[Race]
    seconds: float
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)


def thread_candidates(fast_cores: int) -> list[int]:
    """Every count up to the fast cores; past 8, every second one (and n-1, n)."""
    if fast_cores <= 8:
        return list(range(1, fast_cores + 1))
    return sorted({1, 2, 4, *range(6, fast_cores + 1, 2), fast_cores - 1, fast_cores})


def tune_model(
    loaded,
    *,
    fast_cores: int,
    budget_s: float = 60.0,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> TuneResult:
    """Race decode threads, batch threads, then ubatch on `loaded`, within about `budget_s`."""
    start = clock()
    threads = thread_candidates(fast_cores)
    s = loaded.settings
    ubatches = [u for u in UBATCH_CANDIDATES if u <= s.n_batch]
    result = TuneResult(None, [], 0.0)
    decode, prefill, ubatch = Race("n_threads"), Race("n_threads_batch"), Race("n_ubatch")
    try:
        with BenchContext(loaded, n_batch=s.n_batch, n_ubatch=s.n_ubatch) as bench:
            n_gen, n_prompt = _calibrate(bench, threads[-1], min(s.n_ubatch, 256, bench.n_ctx - 1))
            result.races += [decode, prefill]
            # Decode dominates how a chat feels: half the budget; prompt threads get 30%.
            _race(decode, threads, start + budget_s * 0.5, clock, progress, lambda t: _tg(bench, t, n_gen))
            _race(prefill, threads, start + budget_s * 0.8, clock, progress, lambda t: _pp(bench, t, n_prompt))
        if len(ubatches) > 1:
            result.races.append(ubatch)
            _tune_ubatch(loaded, ubatch, ubatches, prefill.best(), start + budget_s, clock, progress, result.notes)
    except KeyboardInterrupt:
        result.interrupted = True
    result.seconds = clock() - start
    if decode.best() is not None and prefill.best() is not None:
        result.tuned = TunedSettings(
            n_threads=decode.best(),
            n_threads_batch=prefill.best(),
            n_ubatch=_paying_ubatch(ubatch, s.n_ubatch),
            decode_tps=round(decode.mean(decode.best()), 3),
            prefill_tps=round(prefill.mean(prefill.best()), 3),
            tuned_at=now_rfc3339(),
            budget_s=budget_s,
        )
    return result


def _calibrate(bench: BenchContext, n_threads: int, max_prompt: int) -> tuple[int, int]:
    """Warm up, then size the tests so one measurement takes about a second."""
    bench.set_threads(n_threads, n_threads)
    bench.clear()
    n_probe = max(1, min(64, max_prompt))
    bench.prompt(n_probe, bench.n_batch)
    bench.clear()
    per_token_prefill = bench.prompt(n_probe, bench.n_batch) / n_probe / 1e9
    bench.clear()
    bench.generate(1)
    per_token_decode = bench.generate(4) / 4 / 1e9
    n_gen = int(min(128, max(8, 1.0 / max(per_token_decode, 1e-6))))
    n_prompt = int(min(max_prompt, max(32, 1.0 / max(per_token_prefill, 1e-6))))
    return n_gen, n_prompt


def _tg(bench: BenchContext, n_threads: int, n_gen: int) -> float:
    bench.set_threads(n_threads, n_threads)
    bench.clear()
    bench.generate(1)  # first decode after a thread change pays for spinning the threads up
    bench.clear()
    return 1e9 * n_gen / bench.generate(n_gen)


def _pp(bench: BenchContext, n_threads: int, n_prompt: int) -> float:
    bench.set_threads(n_threads, n_threads)
    bench.clear()
    return 1e9 * n_prompt / bench.prompt(n_prompt, bench.n_batch)


def _race(
    race: Race,
    candidates: list[int],
    deadline: float,
    clock,
    progress: Progress | None,
    measure: Callable[[int], float],
) -> None:
    """Round-robin over the candidates still within reach of the best, until the deadline."""
    alive = list(candidates)
    rounds = 0
    while alive:
        for candidate in alive:
            race.samples.setdefault(candidate, []).append(measure(candidate))
            if progress:
                progress(
                    f"{race.setting}={candidate}: {race.mean(candidate):.2f} t/s ({len(race.samples[candidate])} runs)"
                )
        rounds += 1
        leader = max(alive, key=race.mean)
        if rounds >= 2:
            alive = [c for c in alive if not _clearly_slower(race, c, leader)]
        if clock() >= deadline or len(alive) == 1 and rounds >= 3:
            break


def _clearly_slower(race: Race, candidate: int, leader: int) -> bool:
    """Out of the race: more than 8% behind the leader, and by more than 3 SE of the gap (noise)."""
    gap = race.mean(leader) - race.mean(candidate)
    noise = math.sqrt(sum(race.stdev(c) ** 2 / len(race.samples[c]) for c in (candidate, leader)))
    return gap > race.mean(leader) * (1 - KEEP_RACING) and gap > 3 * noise


def _tune_ubatch(
    loaded,
    race: Race,
    ubatches: list[int],
    n_threads_batch: int | None,
    deadline: float,
    clock,
    progress: Progress | None,
    notes: list[str],
) -> None:
    """ubatch only matters for prompts longer than it: measure pp at the largest candidate."""
    n_prompt = max(ubatches)
    s = loaded.settings
    if loaded.n_ctx <= n_prompt:
        notes.append(f"ubatch not tuned: the context ({loaded.n_ctx}) is not over {n_prompt} tokens")
        return
    contexts: dict[int, BenchContext] = {}
    try:
        for u in ubatches:
            contexts[u] = BenchContext(loaded, n_batch=s.n_batch, n_ubatch=u)
        threads = n_threads_batch or s.n_threads_batch
        first = clock()
        _pp(contexts[ubatches[0]], threads, n_prompt)  # warmup, and how long one run takes
        one_run = clock() - first
        if clock() + one_run * len(ubatches) * 3 > deadline:
            notes.append(
                f"ubatch not tuned: a pp{n_prompt} run takes {one_run:.1f} s, too long for the budget (raise --budget)"
            )
            return
        for u in ubatches[1:]:
            _pp(contexts[u], threads, n_prompt)  # each context's first run touches its buffers
        _race(race, ubatches, deadline, clock, progress, lambda u: _pp(contexts[u], threads, n_prompt))
    finally:
        for bench in contexts.values():
            bench.close()


def _paying_ubatch(race: Race, current: int) -> int | None:
    """The fastest ubatch, if it beats the current one by 3% and by more than the noise (2 SE)."""
    best = race.best()
    if best is None or best == current:
        return None
    if not race.samples.get(current):
        return best  # the profile's value was not a candidate: any measured winner is better known
    gain = race.mean(best) - race.mean(current)
    noise = math.sqrt(sum(race.stdev(c) ** 2 / len(race.samples[c]) for c in (best, current)))
    return best if gain >= race.mean(current) * PAYS and gain > 2 * noise else None
