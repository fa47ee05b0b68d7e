"""What a grammar costs a reply's decode: tools offered, a forced call, a reply held to a JSON schema.
Each is decoded against the same prompt and seed with no grammar.

A lazy grammar (tool_choice auto) must cost nothing until a call starts: `offered_vs_free` decodes the
same prompt at the same seed with and without it, at each length, and says whether both wrote the
same tokens (they must, until a call). A forced call holds every token to the grammar:
`forced_vs_free` decodes a call against free text of the same length. Random weights write what the
grammar refuses far more often than a trained model does, so the forced figure is a floor.
`schema_vs_free` holds a reply to a JSON schema (structured output) over long replies: a string
field random weights never close runs to the length asked, under the grammar all the way.

Drafting (engine/drafting.py) decodes the tokens a grammar dictates in the batch of the token before
them. Random weights spell a call's words in pieces a trained model never uses (`ca`, `l`, `l` for
`call`), so their drafts rarely hold; `drafted_calls` measures what drafting does for calls as a trained
model writes them: the batches the drafter forms for the call's own tokens (the real grammar and
drafter), timed at the prompt's depth against the same tokens decoded one at a time.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from edge.model.engine import GEMMA_SAMPLING, Generation, Grammar, LoadedModel, Sampling
from edge.model.json_output import json_grammar
from edge.model.tool_calls import ToolSpec
from edge.model.tool_grammar import call_grammar

PROMPT_ASK = [{"role": "user", "content": "Tell me a long story about the house, then turn on the kitchen light."}]


@dataclass(frozen=True)
class OfferedRow:
    tokens: int  # decoded tokens asked for
    free_tps: float  # median decode tokens/s, no tools
    offered_tps: float  # median decode tokens/s, tools offered (lazy grammar)
    same_text: bool  # every run wrote the same tokens both ways (no call started)
    calls_started: int  # runs in which the model wrote the call token (the grammar then held)

    @property
    def ratio(self) -> float:
        return self.offered_tps / self.free_tps

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": round(self.ratio, 3)}


# Any text at all: every token a model writes is allowed, so this measures the check on the drawn token
# alone, which is what a trained model's call pays when it writes the syntax it was taught.
ANY_TEXT = Grammar("root ::= [^\\x00]*")
CHECK_TOKENS = 256


@dataclass(frozen=True)
class ForcedRow:
    free_tps: float  # median decode tokens/s of free text of the call's length
    forced_tps: float  # median decode tokens/s of a forced call
    call_tokens: float  # median tokens in the forced call
    refusals: float  # median full-vocabulary passes per call (tokens the grammar refused)
    checked_ratio: float  # median decode rate under a grammar that refuses nothing / free (the check alone)
    undrafted_tps: float  # median decode tokens/s of the forced call with drafting off
    drafted: float  # median tokens drafted per call (drafting on)
    draft_kept: float  # median of them the sampler drew

    @property
    def ratio(self) -> float:
        return self.forced_tps / self.free_tps

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": round(self.ratio, 3)}


def offered_vs_free(
    loaded: LoadedModel, tools: Sequence[ToolSpec], lengths: Sequence[int], seeds: Sequence[int], repeats: int = 1
) -> list[OfferedRow]:
    """Decode `length` tokens after the chat prompt with `tools` declared, with the lazy call grammar
    and without it (temperature 1, each seed both ways `repeats` times, in turn; the prompt evaluated
    fresh each time)."""
    prompt = loaded.chat_prompt(PROMPT_ASK, tools=[t.declaration() for t in tools]).text
    grammar = call_grammar(tools, lazy=True)
    rows = []
    for length in lengths:
        free, offered, same, started = [], [], True, 0
        for seed in [s for s in seeds for _ in range(repeats)]:
            base = GEMMA_SAMPLING.with_(max_tokens=length, seed=seed)
            plain = _decode(loaded, prompt, base)
            lazy = _decode(loaded, prompt, base.with_(grammar=grammar))
            free.append(_rate(plain))
            offered.append(_rate(lazy))
            same &= plain.text == lazy.text
            started += "<|tool_call>" in lazy.text
        rows.append(OfferedRow(length, _median(free), _median(offered), same, started))
    return rows


def forced_vs_free(loaded: LoadedModel, tools: Sequence[ToolSpec], seeds: Sequence[int]) -> ForcedRow:
    """A call forced from the first token (tool_choice required), against free text of its length."""
    prompt = loaded.chat_prompt(PROMPT_ASK, tools=[t.declaration() for t in tools]).text
    grammar = call_grammar(tools, lazy=False, parallel=False)
    free, forced, lengths, refusals, checked, undrafted, drafted, kept = [], [], [], [], [], [], [], []
    for seed in seeds:
        forcing = GEMMA_SAMPLING.with_(max_tokens=400, seed=seed, grammar=grammar)
        undrafted.append(_rate(_decode(loaded, prompt, forcing, draft=False)))
        call = _decode(loaded, prompt, forcing)
        n, refused = call.stats.generated_tokens, loaded.engine.last_refusals
        drafted.append(loaded.engine.last_drafted)
        kept.append(loaded.engine.last_draft_kept)
        plain = _decode(loaded, prompt, GEMMA_SAMPLING.with_(max_tokens=max(n, 8), seed=seed))
        # The check alone, over a length where a rate means something (a call is a few dozen tokens).
        long_free = _decode(loaded, prompt, GEMMA_SAMPLING.with_(max_tokens=CHECK_TOKENS, seed=seed))
        check = _decode(loaded, prompt, GEMMA_SAMPLING.with_(max_tokens=CHECK_TOKENS, seed=seed, grammar=ANY_TEXT))
        forced.append(_rate(call))
        free.append(_rate(plain))
        checked.append(_rate(check) / _rate(long_free))
        lengths.append(n)
        refusals.append(refused)
    return ForcedRow(
        _median(free),
        _median(forced),
        _median(lengths),
        _median(refusals),
        _median(checked),
        _median(undrafted),
        _median(drafted),
        _median(kept),
    )


# Home Assistant commands' calls as Gemma 4 writes them (its chat template's syntax).
HA_CALLS = (
    '<|tool_call>call:HassTurnOn{name:<|"|>kitchen light<|"|>}<tool_call|>',
    '<|tool_call>call:HassLightSet{brightness:50,name:<|"|>kitchen light<|"|>}<tool_call|>',
    '<|tool_call>call:HassTurnOff{area:<|"|>Living Room<|"|>,domain:<|"|>light<|"|>}<tool_call|>',
    "<|tool_call>call:HassClimateSetTemperature{temperature:21}<tool_call|>",
)
CALL_DEPTH = 1200  # about where a Home Assistant call starts: the 14 intents and the request before it


@dataclass(frozen=True)
class DraftedCall:
    call: str
    tokens: int  # the call's tokens, as the tokenizer splits it
    batches: list[int]  # the decode batches drafting forms for them (a drawn token and its draft each)
    single_s: float  # median seconds to decode the tokens one at a time, at CALL_DEPTH
    drafted_s: float  # median seconds to decode those batches, at CALL_DEPTH

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": round(self.single_s / self.drafted_s, 3)}


def drafted_calls(
    loaded: LoadedModel, tools: Sequence[ToolSpec], calls: Sequence[str] = HA_CALLS, repeats: int = 5
) -> list[DraftedCall]:
    """Each call's decode as a trained model writes it: one token at a time against drafting's batches."""
    from edge.bench.measure import BenchContext

    grammar = call_grammar(tools, lazy=False, parallel=False)
    plans = []
    for call in calls:
        tokens = loaded.engine.tokenize(call, bos=False)
        plans.append((call, len(tokens), loaded.engine.draft_batches(grammar, tokens)))
    rows = []
    with BenchContext(loaded, n_batch=loaded.settings.n_batch, n_ubatch=loaded.settings.n_ubatch) as bench:
        for call, n_tokens, batches in plans:
            timings = {"single": [], "drafted": []}
            for _ in range(repeats):
                for name, sizes in (("single", [1] * n_tokens), ("drafted", batches)):
                    bench.fill_depth(CALL_DEPTH, loaded.settings.n_batch)
                    timings[name].append(bench.batches(sizes) / 1e9)
            rows.append(DraftedCall(call, n_tokens, batches, _median(timings["single"]), _median(timings["drafted"])))
    return rows


# A structured task as Home Assistant's AI tasks ask for one: a long text field and a number.
SUMMARY_SCHEMA = {
    "type": "object",
    "properties": {"summary": {"type": "string", "maxLength": 8000}, "people": {"type": "integer"}},
    "required": ["summary", "people"],
}
SCHEMA_ASK = [{"role": "user", "content": "Summarise the day at home as JSON."}]


@dataclass(frozen=True)
class SchemaRow:
    tokens: int
    free_tps: float  # median decode tokens/s, no grammar
    schema_tps: float  # median decode tokens/s, held to SUMMARY_SCHEMA from the first token
    refusals: float  # median full-vocabulary passes (drawn tokens the grammar refused)
    undrafted_tps: float  # median decode tokens/s held to the schema with drafting off (what drafting costs)

    @property
    def ratio(self) -> float:
        return self.schema_tps / self.free_tps

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": round(self.ratio, 3)}


def schema_vs_free(
    loaded: LoadedModel, lengths: Sequence[int], seeds: Sequence[int], repeats: int = 1
) -> list[SchemaRow]:
    """Decode `length` tokens held to SUMMARY_SCHEMA and free, at the same seed (temperature 1), each
    seed `repeats` times in turn."""
    prompt = loaded.chat_prompt(SCHEMA_ASK).text
    grammar = json_grammar(SUMMARY_SCHEMA)
    rows = []
    for length in lengths:
        free, held, refusals, undrafted = [], [], [], []
        for seed in [s for s in seeds for _ in range(repeats)]:
            base = GEMMA_SAMPLING.with_(max_tokens=length, seed=seed)
            free.append(_rate(_decode(loaded, prompt, base)))
            undrafted.append(_rate(_decode(loaded, prompt, base.with_(grammar=grammar), draft=False)))
            held.append(_rate(_decode(loaded, prompt, base.with_(grammar=grammar))))
            refusals.append(loaded.engine.last_refusals)
        rows.append(SchemaRow(length, _median(free), _median(held), _median(refusals), _median(undrafted)))
    return rows


def _decode(loaded: LoadedModel, prompt: str, sampling: Sampling, *, draft: bool = True) -> Generation:
    generation = loaded.complete(prompt, sampling, special=True, draft=draft)
    generation.run()
    return generation


def _rate(generation: Generation) -> float:
    return generation.stats.generation_tps or float("nan")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
