"""The voice loop's listening policy replayed in virtual time: end of speech -> first token, from costs.

A question arrives at 25 audio rows a second. While it is spoken, a step starts once `step_s` more speech
has come and the last step is done (one at a time, as edge/voice/loop.py does): it encodes a window (the
new audio and up to WARM_S before it, engine/listening.py) and prefills the rows now exact, in whole
batches of `batch` rows. At the end of speech, a step still running is waited for, the rest is encoded,
and the remaining rows and the text after the audio are prefilled. Prefill costs depend on the batch:
`PrefillRates` holds tokens/s measured at several batch sizes and interpolates between them.

Used by docs/performance.md (edge/bench/performance_doc.py) to replay the policy with this machine's
costs, and with a Pi 5's on paper.
"""

from __future__ import annotations

from dataclasses import dataclass

ROWS_PER_S = 25
BLOCK_S = 0.48  # the encoder's attention block (12 rows)
WARM_S = 16 * BLOCK_S  # the full-size encoder's exact window reaches 16 blocks back (engine/listening.py)
TEXT_AFTER_AUDIO = 10  # tokens after the audio: the end of the user's turn and the model's turn opening


@dataclass(frozen=True)
class PrefillRates:
    """Prefill tokens/s by batch size (measured points; linear between them, the last beyond)."""

    by_batch: dict[int, float]

    def scaled(self, factor: float) -> PrefillRates:
        return PrefillRates({n: r * factor for n, r in self.by_batch.items()})

    def tps(self, n: int) -> float:
        sizes = sorted(self.by_batch)
        if n <= sizes[0]:
            return self.by_batch[sizes[0]]
        for lo, hi in zip(sizes, sizes[1:], strict=False):
            if n <= hi:
                return self.by_batch[lo] + (self.by_batch[hi] - self.by_batch[lo]) * (n - lo) / (hi - lo)
        return self.by_batch[sizes[-1]]

    def seconds(self, n: int, batch: int) -> float:
        """Prefilling n tokens in batches of `batch`."""
        whole, rest = divmod(n, batch)
        return whole * batch / self.tps(batch) + (rest / self.tps(rest) if rest else 0.0)


def first_token_s(
    seconds: float,
    *,
    early: bool,
    encode_s_per_s: float,
    rates: PrefillRates,
    step_s: float = 1.0,
    batch: int = 24,
) -> float:
    """End of speech -> first token for a question of `seconds`, heard whole or while spoken."""
    rows_total = round(seconds * ROWS_PER_S)
    if not early:
        return seconds * encode_s_per_s + rates.seconds(rows_total, batch) + rates.seconds(TEXT_AFTER_AUDIO, 512)
    busy_until, heard, known, prefilled = 0.0, 0.0, 0, 0
    while (start := max(busy_until, heard + step_s)) < seconds:  # idle, and a step's more speech has come
        window = start - max(0.0, known // 12 * BLOCK_S - WARM_S)
        known = round(start * ROWS_PER_S) - 1  # the newest row waits for what comes after it
        exact = known // batch * batch
        busy_until = start + window * encode_s_per_s + rates.seconds(exact - prefilled, batch)
        heard, prefilled = start, exact
    window = seconds - max(0.0, known // 12 * BLOCK_S - WARM_S)
    waited = max(0.0, busy_until - seconds)  # a step still running at the end of speech
    tail = rates.seconds(rows_total - prefilled, batch) + rates.seconds(TEXT_AFTER_AUDIO, 512)
    return waited + window * encode_s_per_s + tail


def prefill_needed(
    seconds: float, goal_s: float, *, encode_s_per_s: float, rates: PrefillRates, step_s: float, batch: int
) -> float:
    """The factor on `rates` (and, as prefill is, on the encoder's speed) at which a question of
    `seconds` heard while spoken gets its first token within `goal_s`."""
    lo, hi = 0.05, 50.0
    for _ in range(60):
        mid = (lo * hi) ** 0.5
        t = first_token_s(
            seconds,
            early=True,
            encode_s_per_s=encode_s_per_s / mid,
            rates=rates.scaled(mid),
            step_s=step_s,
            batch=batch,
        )
        lo, hi = (mid, hi) if t > goal_s else (lo, mid)
    return hi
