"""Prefill/decode measurement the llama-bench way, on an already loaded model.

Method (tools/llama-bench/llama-bench.cpp of the vendored llama.cpp): a prompt test `ppN` decodes N
random tokens (uniform over the vocabulary, BOS first if the model adds one) in batches of n_batch; a
generation test `tgN` decodes N single tokens; one warmup (the whole prompt, or one token); then
`repetitions` runs, the KV cache cleared before each, optionally pre-filled to a depth (untimed).
Each run's tokens/s is N / time; the result is the mean and sample (N-1) stdev of those rates.
Only llama_decode + llama_synchronize are timed, so Python adds nothing measurable.
"""

from __future__ import annotations

import ctypes
import itertools
import math
import random
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from edge.errors import EdgeError, UsageError

Progress = Callable[[str], None]
MAX_THREADS = 512  # GGML_MAX_N_THREADS
MAX_REPETITIONS = 1000


class BenchError(EdgeError):
    """llama.cpp refused a benchmark step (a decode or a context could not be created)."""


# ---- statistics ---------------------------------------------------------------------------------


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def sample_stdev(values: Sequence[float]) -> float:
    """Sample standard deviation (N-1), 0 for fewer than two values: what llama-bench prints."""
    if len(values) < 2:
        return 0.0
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


# ---- what to run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchTest:
    n_prompt: int  # 0 for a generation test
    n_gen: int  # 0 for a prompt test
    n_depth: int
    n_threads: int
    n_threads_batch: int
    n_batch: int
    n_ubatch: int

    @property
    def name(self) -> str:
        """llama-bench's test name: pp512, tg128, pp512+tg128, with " @ d512" at a depth."""
        if self.n_prompt and not self.n_gen:
            base = f"pp{self.n_prompt}"
        elif self.n_gen and not self.n_prompt:
            base = f"tg{self.n_gen}"
        else:
            base = f"pp{self.n_prompt}+tg{self.n_gen}"
        return base + (f" @ d{self.n_depth}" if self.n_depth else "")

    @property
    def n_tokens(self) -> int:
        return self.n_prompt + self.n_gen

    @property
    def n_ctx_needed(self) -> int:
        return self.n_prompt + self.n_gen + self.n_depth


@dataclass(frozen=True)
class SweepSpec:
    """Lists, as on the command line; every combination runs (llama-bench's expansion)."""

    n_prompt: tuple[int, ...] = (512,)  # empty = no prompt tests
    n_gen: tuple[int, ...] = (128,)  # empty = no generation tests
    n_depth: tuple[int, ...] = (0,)
    n_threads: tuple[int, ...] = (2,)
    n_threads_batch: tuple[int, ...] | None = None  # None: the same as n_threads, pairwise
    n_batch: tuple[int, ...] = (512,)
    n_ubatch: tuple[int, ...] = (512,)
    repetitions: int = 5
    warmup: bool = True


def expand_sweep(sweep: SweepSpec) -> list[BenchTest]:
    """Every combination, in llama-bench's order: context settings outermost (fewest context
    rebuilds), then threads, then depth; for each, the prompt tests, then the generation tests."""
    thread_pairs = (
        [(t, t) for t in sweep.n_threads]
        if sweep.n_threads_batch is None
        else list(itertools.product(sweep.n_threads, sweep.n_threads_batch))
    )
    tests = []
    for nb, nub, (nt, ntb), nd in itertools.product(sweep.n_batch, sweep.n_ubatch, thread_pairs, sweep.n_depth):
        common = dict(n_depth=nd, n_threads=nt, n_threads_batch=ntb, n_batch=nb, n_ubatch=min(nub, nb))
        tests += [BenchTest(n_prompt=p, n_gen=0, **common) for p in sweep.n_prompt]
        tests += [BenchTest(n_prompt=0, n_gen=n, **common) for n in sweep.n_gen]
    return list(dict.fromkeys(tests))  # a clamped ubatch can repeat a combination


def parse_int_list(text: str, what: str) -> tuple[int, ...]:
    """ "1,2,4" or "1-4" (or a mix) -> (1, 2, 4); says which option is wrong."""
    values: list[int] = []
    for part in str(text).split(","):
        match = re.fullmatch(r"\s*(-?\d+)(?:-(\d+))?\s*", part)
        if not match or (match.group(2) and int(match.group(2)) < int(match.group(1))):
            raise UsageError(f"{what}: '{text}' is not a number or a list like 1,2,4 or 1-4")
        low = int(match.group(1))
        values += range(low, int(match.group(2) or low) + 1)
    return tuple(dict.fromkeys(values))


def check_sweep(
    sweep: SweepSpec,
    *,
    n_ctx_limit: int | None = None,
    logical_cores: int | None = None,
) -> list[str]:
    """Reject sizes llama.cpp cannot run; return warnings (e.g. more threads than cores).

    Without n_ctx_limit/logical_cores only the sizes are checked: that needs no model, so it can run
    before any slow work.
    """
    for what, values in (
        ("-p/--n-prompt", sweep.n_prompt),
        ("-n/--n-gen", sweep.n_gen),
        ("-b/--batch-size", sweep.n_batch),
        ("-ub/--ubatch-size", sweep.n_ubatch),
        ("-t/--threads", sweep.n_threads),
        ("--threads-batch", sweep.n_threads_batch or (1,)),
    ):
        bad = [v for v in values if v < 1]
        if bad:
            raise UsageError(f"{what} must be positive, not {bad[0]}")
    if any(d < 0 for d in sweep.n_depth):
        raise UsageError(f"--depth must be 0 or more, not {min(sweep.n_depth)}")
    if not sweep.n_prompt and not sweep.n_gen:
        raise UsageError("nothing to measure: keep the prompt tests, the generation tests or both")
    if not 1 <= sweep.repetitions <= MAX_REPETITIONS:
        raise UsageError(f"-r/--repetitions must be from 1 to {MAX_REPETITIONS}, not {sweep.repetitions}")
    threads = set(sweep.n_threads) | set(sweep.n_threads_batch or ())
    if max(threads) > MAX_THREADS:
        raise UsageError(f"at most {MAX_THREADS} threads (llama.cpp's limit), not {max(threads)}")
    need = max(t.n_ctx_needed for t in expand_sweep(sweep))
    if n_ctx_limit is not None and need > n_ctx_limit:
        raise UsageError(
            f"the largest test needs {need} tokens of context (prompt + generation + depth) "
            f"but the limit here is {n_ctx_limit}; use smaller -p/-n/-d"
        )
    warnings = []
    over = sorted(t for t in threads if logical_cores is not None and t > logical_cores)
    if over:
        warnings.append(
            f"{', '.join(map(str, over))} threads is more than the {logical_cores} cores here: "
            "threads will share cores and the numbers will be low"
        )
    return warnings


# ---- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchResult:
    spec: BenchTest
    samples_ns: tuple[int, ...]  # one per repetition: time spent in llama_decode/synchronize
    throttled: tuple[bool, ...]  # per repetition: the board reported throttling around it
    temps_c: tuple[float | None, ...]  # per repetition: highest CPU temperature seen around it
    test_time: str  # RFC 3339, when the test started (llama-bench's test_time)

    @property
    def samples_ts(self) -> tuple[float, ...]:
        return tuple(1e9 * self.spec.n_tokens / ns for ns in self.samples_ns)

    @property
    def avg_ts(self) -> float:
        return mean(self.samples_ts)

    @property
    def stddev_ts(self) -> float:
        return sample_stdev(self.samples_ts)

    @property
    def avg_ns(self) -> int:
        return int(mean(self.samples_ns))

    @property
    def stddev_ns(self) -> int:
        return int(sample_stdev(self.samples_ns))

    @property
    def any_throttled(self) -> bool:
        return any(self.throttled)


# ---- the low-level runner -----------------------------------------------------------------------


class BenchContext:
    """A llama_context of a loaded model, driven through llama.cpp's C API with random tokens.

    Borrowed from the engine (Engine.lent_context: the cache emptied, threads restored on close).
    Uses the model's own context when n_batch/n_ubatch match it; otherwise creates (and later frees)
    a context on the same model, so no setting in a sweep needs the weights loaded again.
    `sliding_window_cache`: tests at a depth need llama-bench's small sliding-window cache
    (swa_full off); llama_cpp.Llama's context keeps the full-size one, so they get their own.
    """

    def __init__(self, loaded, *, n_batch: int, n_ubatch: int, sliding_window_cache: bool = False, seed: int = 1):
        import llama_cpp

        self._c = llama_cpp
        self.requested = (n_batch, n_ubatch, sliding_window_cache)
        self._lease = loaded.engine.lent_context()  # the model stays loaded and its cache empty until close()
        own = self._lease.__enter__()
        try:
            self._open(loaded, own, n_batch, n_ubatch, sliding_window_cache, seed)
        except BaseException:
            self._lease.__exit__(None, None, None)
            raise

    def _open(self, loaded, own, n_batch: int, n_ubatch: int, sliding_window_cache: bool, seed: int) -> None:
        llama_cpp = self._c
        # llama.cpp clamps n_batch to n_ctx and n_ubatch to n_batch: compare what it would use.
        want_batch = min(n_batch, llama_cpp.llama_n_ctx(own))
        same_batches = (want_batch, min(n_ubatch, want_batch)) == (
            llama_cpp.llama_n_batch(own),
            llama_cpp.llama_n_ubatch(own),
        )
        if same_batches and not (sliding_window_cache and loaded.context_params.swa_full):
            self.ctx, self._owned = own, False
        else:
            params = type(loaded.context_params).from_buffer_copy(loaded.context_params)
            params.n_batch, params.n_ubatch = n_batch, n_ubatch
            params.swa_full = params.swa_full and not sliding_window_cache
            self.ctx = llama_cpp.llama_init_from_model(loaded.model_handle, params)
            if not self.ctx:
                raise BenchError(
                    f"llama.cpp could not create a context with n_batch={n_batch}, "
                    f"n_ubatch={n_ubatch}; try smaller values"
                )
            self._owned = True
        self.n_ctx = llama_cpp.llama_n_ctx(self.ctx)
        self.n_batch = llama_cpp.llama_n_batch(self.ctx)
        vocab = llama_cpp.llama_model_get_vocab(loaded.model_handle)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        self.bos = llama_cpp.llama_vocab_bos(vocab) if llama_cpp.llama_vocab_get_add_bos(vocab) else None
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._rng = random.Random(seed)
        self._depth_state: tuple[int, ctypes.Array] | None = None

    def set_threads(self, n_threads: int, n_threads_batch: int) -> None:
        self._c.llama_set_n_threads(self.ctx, n_threads, n_threads_batch)

    def clear(self) -> None:
        # data=False, as llama-bench: free the cells without zeroing (and cache-polluting) the buffers.
        self._c.llama_memory_clear(self._c.llama_get_memory(self.ctx), False)

    def _next_pos(self) -> int:
        return self._c.llama_memory_seq_pos_max(self._c.llama_get_memory(self.ctx), 0) + 1

    def _fill(self, tokens: list[int], pos: int, *, all_logits: bool = False) -> None:
        batch = self._batch
        for i, token in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos + i, 1
            batch.seq_id[i][0], batch.logits[i] = 0, all_logits
        batch.logits[len(tokens) - 1] = True  # logits for the last token only, as llama-bench
        batch.n_tokens = len(tokens)

    def _decode(self) -> int:
        """One timed llama_decode + llama_synchronize; returns nanoseconds."""
        start = time.perf_counter_ns()
        status = self._c.llama_decode(self.ctx, self._batch)
        self._c.llama_synchronize(self.ctx)
        elapsed = time.perf_counter_ns() - start
        if status != 0:
            raise BenchError(
                f"llama_decode failed (status {status}); the context may be too small for this test or memory ran out"
            )
        return elapsed

    def prompt(self, n_tokens: int, n_batch: int) -> int:
        """Decode n_tokens random tokens in batches; nanoseconds spent in llama.cpp."""
        step = max(1, min(n_batch, self.n_batch))
        pos, elapsed = self._next_pos(), 0
        for done in range(0, n_tokens, step):
            tokens = [self._rng.randrange(self.n_vocab) for _ in range(min(step, n_tokens - done))]
            if done == 0 and self.bos is not None:
                tokens[0] = self.bos
            self._fill(tokens, pos + done)
            elapsed += self._decode()
        return elapsed

    def generate(self, n_gen: int) -> int:
        """Decode n_gen single tokens (BOS first, then random); nanoseconds spent in llama.cpp."""
        pos, elapsed = self._next_pos(), 0
        token = self.bos if self.bos is not None else self._rng.randrange(self.n_vocab)
        for i in range(n_gen):
            self._fill([token], pos + i)
            elapsed += self._decode()
            token = self._rng.randrange(self.n_vocab)
        return elapsed

    def batches(self, sizes: list[int]) -> int:
        """Decode batches of these sizes one after another, each token's logits wanted (a draft
        checked row by row, as Engine.generate does); nanoseconds spent in llama.cpp."""
        pos, elapsed = self._next_pos(), 0
        for size in sizes:
            self._fill([self._rng.randrange(self.n_vocab) for _ in range(size)], pos, all_logits=True)
            elapsed += self._decode()
            pos += size
        return elapsed

    def fill_depth(self, n_depth: int, n_batch: int) -> None:
        """Pre-fill the cache to n_depth tokens (untimed), restoring a saved state when it can."""
        c, ctx = self._c, self.ctx
        if self._depth_state and self._depth_state[0] == n_depth:
            buf = self._depth_state[1]
            if c.llama_state_seq_set_data(ctx, buf, len(buf), 0):
                return
        self.prompt(n_depth, n_batch)
        size = c.llama_state_seq_get_size(ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        c.llama_state_seq_get_data(ctx, buf, size, 0)
        self._depth_state = (n_depth, buf)

    def close(self) -> None:
        if self._batch is not None:
            self._c.llama_batch_free(self._batch)
            self._batch = None
        if self._owned and self.ctx:
            self._c.llama_free(self.ctx)
        self.ctx = None
        if self._lease is not None:
            self._lease.__exit__(None, None, None)
            self._lease = None

    def __enter__(self) -> BenchContext:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_test(
    bench: BenchContext,
    spec: BenchTest,
    repetitions: int,
    *,
    warmup: bool = True,
    thermal=None,
    progress: Progress | None = None,
) -> BenchResult:
    """One test, exactly as llama-bench runs it; `thermal` (a ThermalReader) is sampled between runs."""
    test_time = now_rfc3339()
    bench.set_threads(spec.n_threads, spec.n_threads_batch)
    bench.clear()
    if warmup:
        if spec.n_prompt:
            bench.prompt(spec.n_prompt, spec.n_batch)
        if spec.n_gen:
            bench.generate(1)
    samples, throttled, temps = [], [], []
    before = thermal.sample() if thermal else None
    for rep in range(repetitions):
        if progress:
            progress(f"{spec.name} t={spec.n_threads}/{spec.n_threads_batch}: run {rep + 1}/{repetitions}")
        bench.clear()
        if spec.n_depth:
            bench.fill_depth(spec.n_depth, spec.n_batch)
        elapsed = 0
        if spec.n_prompt:
            elapsed += bench.prompt(spec.n_prompt, spec.n_batch)
        if spec.n_gen:
            elapsed += bench.generate(spec.n_gen)
        samples.append(elapsed)
        after = thermal.sample() if thermal else None
        throttled.append(_throttled_between(before, after))
        temps.append(_max_temp(before, after))
        before = after
    return BenchResult(spec, tuple(samples), tuple(throttled), tuple(temps), test_time)


@dataclass
class SweepOutcome:
    results: list[BenchResult] = field(default_factory=list)
    interrupted: bool = False  # Ctrl-C: `results` holds the tests that finished


def run_sweep(
    loaded,
    tests: Iterable[BenchTest],
    repetitions: int,
    *,
    warmup: bool = True,
    thermal=None,
    progress: Progress | None = None,
) -> SweepOutcome:
    """Run tests in order, reusing a context while n_batch/n_ubatch stay the same."""
    outcome = SweepOutcome()
    bench: BenchContext | None = None
    try:
        for spec in tests:
            wanted = (spec.n_batch, spec.n_ubatch, spec.n_depth > 0)
            if bench is None or bench.requested != wanted:
                if bench:
                    bench.close()
                bench = BenchContext(
                    loaded, n_batch=spec.n_batch, n_ubatch=spec.n_ubatch, sliding_window_cache=spec.n_depth > 0
                )
            outcome.results.append(
                run_test(bench, spec, repetitions, warmup=warmup, thermal=thermal, progress=progress)
            )
    except KeyboardInterrupt:
        outcome.interrupted = True
    finally:
        if bench:
            bench.clear()
            bench.close()
    return outcome


def _throttled_between(before, after) -> bool:
    if before is None or after is None:
        return False
    # The Pi's since-boot bits only ever get set: a new one means it happened during this run.
    return before.throttled or after.throttled or bool(set(after.since_boot) - set(before.since_boot))


def _max_temp(before, after) -> float | None:
    temps = [s.cpu_temp_c for s in (before, after) if s is not None and s.cpu_temp_c is not None]
    return max(temps) if temps else None
