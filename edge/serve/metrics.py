"""Counters for GET /metrics, in Prometheus' text exposition format (a few lines; no client library)."""

from __future__ import annotations

import threading
from collections import Counter


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()  # (endpoint, status)
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.audio_seconds = 0.0
        self.image_tokens = 0
        self.last_prompt_tps = 0.0
        self.last_generation_tps = 0.0
        self.cancelled = 0  # jobs whose caller left before the end (generation stopped early)

    def request(self, endpoint: str, status: int) -> None:
        with self._lock:
            self.requests[(endpoint, status)] += 1

    def job_finished(self, job) -> None:
        """Called by the model worker after every job, answered or abandoned."""
        outcome = job.outcome
        with self._lock:
            self.cancelled += int(job.cancelled.is_set())
        if hasattr(outcome, "completion_tokens"):
            self.completion(
                outcome.prompt_tokens,
                outcome.completion_tokens,
                outcome.prompt_tps,
                outcome.generation_tps,
                outcome.audio_seconds,
                outcome.image_tokens,
            )
        elif hasattr(outcome, "duration"):
            self.completion(0, 0, 0.0, outcome.generation_tps, outcome.duration)

    def completion(
        self,
        prompt_tokens: int,
        completion_tokens: int,
        prompt_tps: float,
        generation_tps: float,
        audio_seconds: float = 0.0,
        image_tokens: int = 0,
    ) -> None:
        with self._lock:
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            self.audio_seconds += audio_seconds
            self.image_tokens += image_tokens
            self.last_prompt_tps = prompt_tps or self.last_prompt_tps
            self.last_generation_tps = generation_tps or self.last_generation_tps

    def render(self, *, queue_depth: int, ready: bool) -> str:
        with self._lock:
            lines = [
                "# HELP edge_gemma_requests_total Requests answered, by endpoint and HTTP status.",
                "# TYPE edge_gemma_requests_total counter",
                *(
                    f'edge_gemma_requests_total{{endpoint="{e}",status="{s}"}} {n}'
                    for (e, s), n in sorted(self.requests.items())
                ),
                "# HELP edge_gemma_errors_total Requests answered with a 4xx or 5xx status.",
                "# TYPE edge_gemma_errors_total counter",
                f"edge_gemma_errors_total {sum(n for (_, s), n in self.requests.items() if s >= 400)}",
                "# HELP edge_gemma_cancelled_total Requests whose client left before the end.",
                "# TYPE edge_gemma_cancelled_total counter",
                f"edge_gemma_cancelled_total {self.cancelled}",
                "# TYPE edge_gemma_queue_depth gauge",
                f"edge_gemma_queue_depth {queue_depth}",
                "# TYPE edge_gemma_model_ready gauge",
                f"edge_gemma_model_ready {int(ready)}",
                "# TYPE edge_gemma_prompt_tokens_total counter",
                f"edge_gemma_prompt_tokens_total {self.prompt_tokens}",
                "# TYPE edge_gemma_completion_tokens_total counter",
                f"edge_gemma_completion_tokens_total {self.completion_tokens}",
                "# HELP edge_gemma_audio_seconds_total Seconds of audio the model has heard.",
                "# TYPE edge_gemma_audio_seconds_total counter",
                f"edge_gemma_audio_seconds_total {self.audio_seconds:.3f}",
                "# HELP edge_gemma_image_tokens_total Image tokens of the pictures the model has seen.",
                "# TYPE edge_gemma_image_tokens_total counter",
                f"edge_gemma_image_tokens_total {self.image_tokens}",
                "# HELP edge_gemma_prompt_tokens_per_second Prefill rate of the last request.",
                "# TYPE edge_gemma_prompt_tokens_per_second gauge",
                f"edge_gemma_prompt_tokens_per_second {self.last_prompt_tps:.2f}",
                "# HELP edge_gemma_generation_tokens_per_second Decode rate of the last request.",
                "# TYPE edge_gemma_generation_tokens_per_second gauge",
                f"edge_gemma_generation_tokens_per_second {self.last_generation_tps:.2f}",
            ]
        return "\n".join(lines) + "\n"
