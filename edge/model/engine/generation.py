"""One request to the engine: prefill the prompt, then stream the reply, timed.

Iterate a `Generation` for text pieces; `.stats` is set once the iteration ends (or is broken off).
Nothing runs until the first piece is asked for, so a caller can time the whole request.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from edge.model.engine.core import Engine, GenerationStats, PrefillReport
from edge.model.engine.media import EncodedAudio
from edge.model.engine.sampling import Sampling
from edge.vision.images import Picture


class Generation:
    def __init__(
        self,
        engine: Engine,
        prompt: str,
        sampling: Sampling,
        *,
        clips: Sequence[np.ndarray | EncodedAudio | Picture] | Callable[[], Sequence] = (),
        cancelled: Callable[[], bool] = lambda: False,
        special: bool | frozenset[int] = False,
        on_stage: Callable[[str], None] = lambda stage: None,
        continues: bool = False,
        pin_chars: int = 0,
        draft: bool = True,
    ):
        """`prompt`: a whole prompt (its longest cached prefix reused), or with `continues` text
        evaluated after what the cache holds (the same turn going on: tool results, a follow-up
        question). `clips` may be a function: called when the prefill starts, so a clip's encoding
        is timed with the request. `pin_chars`: the prompt's shared prefix (Engine.prefill).
        `draft`: tokens a grammar dictates are checked in batches (Engine.generate; False for a bench's baseline)."""
        self._engine, self._prompt, self._clips, self._continues = engine, prompt, clips, continues
        self._pin_chars, self._draft = pin_chars, draft
        self.sampling, self._cancelled, self._special, self._on_stage = sampling, cancelled, special, on_stage
        self.stats: GenerationStats | None = None
        self.prefill: PrefillReport | None = None
        self.text = ""

    def __iter__(self) -> Iterator[str]:
        engine, start = self._engine, time.perf_counter()
        first = last = None
        finish = "interrupted"
        try:
            clips = self._clips() if callable(self._clips) else self._clips
            if self._continues:
                self.prefill = engine.continue_with(self._prompt, clips)
            else:
                # A seeded request is evaluated from an empty cache: see core.py on what a seed promises.
                self.prefill = engine.prefill(
                    self._prompt,
                    clips,
                    fresh=self.sampling.seed is not None,
                    on_stage=self._on_stage,
                    pin_chars=self._pin_chars,
                )
            for piece in engine.generate(
                self.sampling, cancelled=self._cancelled, special=self._special, draft=self._draft
            ):
                last = time.perf_counter()
                first = first or last
                self.text += piece
                yield piece
            finish = engine.last_finish
        except GeneratorExit:
            finish = "cancelled"
            raise
        finally:
            end = time.perf_counter()
            self.stats = GenerationStats(
                prefill=self.prefill or PrefillReport(0, 0, 0, 0.0),
                generated_tokens=engine.last_generated if self.prefill else 0,
                generation_seconds=(last - first) if first and last else 0.0,
                time_to_first_token=(first or end) - start,
                total_seconds=end - start,
                finish_reason=finish,
            )

    def run(self) -> str:
        """Consume the whole generation silently and return the text."""
        for _ in self:
            pass
        return self.text
