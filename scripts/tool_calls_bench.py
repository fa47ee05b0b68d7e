#!/usr/bin/env python3
"""What tool calls cost and how they come out: decode tokens/s with and without the call grammar,
request -> complete call time, and unconstrained (auto) replies whose call markup failed to parse.

    python scripts/tool_calls_bench.py                       # the demo model and the tiny Gemma 4
    python scripts/tool_calls_bench.py --model E2B.gguf      # add a model (e.g. a full-size shape)

A forced call needs a Gemma 4 chat template; on any model the grammar's cost is measured by forcing
a call with it on a plain prompt (the grammar is the same). Numbers are medians over --runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from edge.assist.ha_intents import HA_INTENTS
from edge.model.engine import GEMMA_SAMPLING, LoadedModel
from edge.model.files import ensure_demo_model
from edge.model.reply_events import CallEvent
from edge.model.synthetic import TINY_DIR, TINY_TEXT_NAME
from edge.model.tool_grammar import call_grammar
from edge.model.tool_turn import ToolSetup, ToolTurn
from edge.settings import RunSettings

ASK = [{"role": "user", "content": "Turn on the kitchen light and set a timer for ten minutes."}]
PROMPT = "Here is the plan for the smart home today: "


def decode_rates(loaded: LoadedModel, runs: int, tokens: int) -> tuple[float, float]:
    """(free decode tok/s, grammar-constrained decode tok/s): the same number of tokens each way."""
    grammar = call_grammar(HA_INTENTS, lazy=False)
    free, constrained = [], []
    for seed in range(runs):
        plain = loaded.complete(PROMPT, GEMMA_SAMPLING.with_(max_tokens=tokens, seed=seed, stop=()))
        plain.run()
        forced = loaded.complete(PROMPT, GEMMA_SAMPLING.with_(max_tokens=tokens, seed=seed, grammar=grammar))
        forced.run()
        for out, generation in ((free, plain), (constrained, forced)):
            if generation.stats.generation_tps:
                out.append(generation.stats.generation_tps)
    return statistics.median(free), statistics.median(constrained)


def call_times(loaded: LoadedModel, runs: int) -> tuple[float, float, float, int, int]:
    """Request -> complete call, seconds: from an empty cache (the prompt with the declarations
    evaluated whole) and with that prompt cached (later requests of a conversation); the median call
    tokens, the calls that failed to parse, and the prompt's tokens."""
    fresh, cached, tokens, malformed, prompt = [], [], [], 0, 0
    setup = ToolSetup(HA_INTENTS, "HassTurnOn", parallel=False)
    for run in range(runs * 2):
        if run < runs:
            loaded.engine.reset()
        started = time.perf_counter()
        turn = ToolTurn.chat(loaded, ASK, setup, GEMMA_SAMPLING.with_(max_tokens=400))
        for event in turn:
            if isinstance(event, CallEvent):
                (fresh if run < runs else cached).append(time.perf_counter() - started)
        tokens.append(turn.stats.generated_tokens)
        malformed += turn.reply.malformed
        prompt = turn.stats.prompt_tokens
    return _median(fresh), _median(cached), _median(tokens), malformed, prompt


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def auto_markup(loaded: LoadedModel, runs: int) -> tuple[int, int, int]:
    """Unconstrained auto turns at temperature 1.0: (turns with call markup, of them unparsed, leaked)."""
    with_markup = unparsed = leaked = 0
    for seed in range(runs):
        turn = ToolTurn.chat(
            loaded, ASK, ToolSetup(HA_INTENTS, "auto"), GEMMA_SAMPLING.with_(max_tokens=64, seed=seed, temperature=1.0)
        )
        reply = turn.run()
        raw = turn.generation.text
        with_markup += "<|tool_call>" in raw
        unparsed += reply.malformed > 0
        leaked += "<|tool_call>" in reply.content or "<tool_call|>" in reply.content
    return with_markup, unparsed, leaked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, action="append", default=[], help="another GGUF to measure")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--auto-runs", type=int, default=50, help="auto turns on the tiny Gemma 4")
    parser.add_argument("--tokens", type=int, default=64, help="decoded tokens per rate sample")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    models = [Path(ensure_demo_model()), TINY_DIR / TINY_TEXT_NAME, *args.model]
    t = args.threads
    print(
        "| model | decode free tok/s | decode with grammar tok/s | prompt tokens (14 HA intents declared) "
        "| request -> call s, empty cache | ... prompt cached | call tokens | unparsed |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for path in models:
        settings = RunSettings(n_ctx=4096, n_threads=t, n_threads_batch=t, n_batch=512, n_ubatch=512)
        with LoadedModel(path, settings) as loaded:
            free, constrained = decode_rates(loaded, args.runs, args.tokens)
            if loaded.info.architecture == "gemma4":
                fresh, cached, tokens, malformed, prompt = call_times(loaded, args.runs)
                timing = f"{prompt} | {fresh:.2f} | {cached:.2f} | {tokens:.0f} | {malformed}"
            else:
                timing = "- | - | - | - | - (no tool-call template)"
            print(f"| {path.name} | {free:.1f} | {constrained:.1f} | {timing} |", flush=True)
            if path.name == TINY_TEXT_NAME:
                auto = auto_markup(loaded, args.auto_runs)
    print(
        f"\nauto, temperature 1.0, tiny Gemma 4, {args.auto_runs} turns: {auto[0]} wrote call markup, "
        f"{auto[1]} of them failed to parse (dropped), {auto[2]} leaked markup into the text"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
