"""What a prompt evaluation and a generation did: the numbers every front end prints."""

from __future__ import annotations

from dataclasses import dataclass, replace

MIN_TOKENS_FOR_RATE = 16  # fewer evaluated tokens than this make a tokens/s figure meaningless
MIN_SECONDS_FOR_RATE = 0.001  # perf_counter resolves far finer; below this a rate is noise


@dataclass(frozen=True)
class PrefillReport:
    """What one prompt evaluation did."""

    prompt_tokens: int  # context positions the prompt takes (media included)
    reused: int  # of those, found in the KV cache and not evaluated again
    evaluated: int  # evaluated now
    seconds: float  # evaluating, media encoding included
    media_tokens: int = 0  # embeddings decoded for media
    media_chunks: int = 0
    encode_ms: float = 0.0  # time in the media encoder alone
    last_media_reused: int = 0  # rows of the prompt's last clip found in the cache (heard while spoken)

    @property
    def tps(self) -> float | None:
        """Prefill tokens/s, or None when too little was evaluated for the figure to mean anything."""
        if self.evaluated < MIN_TOKENS_FOR_RATE or self.seconds < MIN_SECONDS_FOR_RATE:
            return None
        return self.evaluated / self.seconds


@dataclass(frozen=True)
class GenerationStats:
    prefill: PrefillReport
    generated_tokens: int  # tokens sampled (the stop token not counted)
    generation_seconds: float  # from the first sampled token to the last
    time_to_first_token: float  # wall clock, from the start of the request to the first text
    total_seconds: float
    finish_reason: str  # "stop" | "length" | "cancelled" | "interrupted"

    @property
    def prompt_tokens(self) -> int:
        return self.prefill.prompt_tokens

    @property
    def prompt_tps(self) -> float | None:
        return self.prefill.tps

    @property
    def generation_tps(self) -> float | None:
        steps = self.generated_tokens - 1  # the first token came from the prompt's logits
        if steps < 2 or self.generation_seconds < MIN_SECONDS_FOR_RATE:
            return None
        return steps / self.generation_seconds

    @property
    def stopped_by_user(self) -> bool:
        return self.finish_reason == "interrupted"


def joined(first: PrefillReport, rest: PrefillReport) -> PrefillReport:
    """One prompt evaluated in two parts, reported as one."""
    evaluated = first.evaluated + rest.evaluated
    return replace(
        rest,
        reused=rest.prompt_tokens - evaluated,
        evaluated=evaluated,
        seconds=first.seconds + rest.seconds,
        encode_ms=round(first.encode_ms + rest.encode_ms, 3),
    )
