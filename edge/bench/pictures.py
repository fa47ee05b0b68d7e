"""`bench --pictures`: what a picture costs on this board at each image-token budget.

For each budget a 640x480 test photo is fitted and shown to the model `repetitions` times, each from
an empty cache: the vision encoder's time and the prefill of the image tokens (with the few text
tokens around them) are timed apart, and the medians are reported. One warm-up run comes first
(graph allocation, the first pages read), as llama-bench does. The photo's content does not matter
to speed or memory; its size and aspect ratio do, and every budget gets the same one.
"""

from __future__ import annotations

import io
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from edge.model.engine import LoadedModel
from edge.vision.images import Picture, decode_image

QUESTION = "What is in this picture?"


@dataclass(frozen=True)
class PictureResult:
    budget: int
    width: int  # the picture as the model saw it
    height: int
    image_tokens: int
    prompt_tokens: int  # the image tokens and the question around them
    encode_s: float  # median: the vision encoder
    prefill_s: float  # median: evaluating the prompt's tokens, the picture's included
    repetitions: int

    @property
    def total_s(self) -> float:
        return self.encode_s + self.prefill_s


def test_photo() -> Picture:
    """A 640x480 JPEG with a photo's kind of content (smooth shading, shapes, sensor noise), decoded
    the way a user's file is."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(640)
    y, x = np.mgrid[0:480, 0:640]
    base = np.stack([x / 640 * 200, y / 480 * 180, (x + y) / 1120 * 160], axis=-1)
    image = Image.fromarray((base + rng.normal(0, 12, base.shape)).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, 560)), int(rng.integers(0, 400))
        size = rng.integers(20, 160, 2)
        draw.ellipse(
            (x0, y0, x0 + int(size[0]), y0 + int(size[1])), fill=tuple(int(c) for c in rng.integers(0, 255, 3))
        )
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return decode_image(buffer.getvalue(), name="test-photo.jpg")


def bench_pictures(
    loaded: LoadedModel,
    budgets: list[int],
    repetitions: int,
    progress: Callable[[str], None] = lambda message: None,
) -> list[PictureResult]:
    photo = test_photo()
    prompt = loaded.chat_prompt([{"role": "user", "content": loaded.projector.marker + QUESTION}]).text
    engine = loaded.engine
    engine.prefill(prompt, [loaded.fit_image(photo, budgets[0])], fresh=True)  # warm-up, not counted
    results = []
    for budget in budgets:
        picture = loaded.fit_image(photo, budget)
        encode, prefill = [], []
        for rep in range(repetitions):
            progress(f"picture at {budget} image tokens: run {rep + 1}/{repetitions}")
            started = time.perf_counter()
            report = engine.prefill(prompt, [picture], fresh=True)
            seconds = time.perf_counter() - started
            encode.append(report.encode_ms / 1000)
            prefill.append(seconds - report.encode_ms / 1000)
        results.append(
            PictureResult(
                budget,
                picture.width,
                picture.height,
                report.media_tokens,
                report.prompt_tokens,
                statistics.median(encode),
                statistics.median(prefill),
                repetitions,
            )
        )
    engine.reset()
    return results


def render_pictures(results: list[PictureResult], fmt: str, *, model: str, projector: str) -> str:
    if fmt == "json":
        rows = [asdict(r) | {"total_s": r.total_s} for r in results]
        return json.dumps({"model": model, "projector": projector, "pictures": rows}, indent=2)
    lines = [
        f"{model} with {projector}: a 640x480 photo at each image-token budget (medians)",
        "",
        "| budget | picture | image tokens | vision encode | prefill | total |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.budget} | {r.width}x{r.height} | {r.image_tokens} | {r.encode_s:.2f} s | {r.prefill_s:.2f} s "
        f"| {r.total_s:.2f} s |"
        for r in results
    ]
    return "\n".join(lines)
