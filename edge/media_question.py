"""One question about what the user hands over: a spoken question, pictures, a camera frame.

`gather` reads and checks every input before a model is loaded (a bad file costs nothing);
`answer` shows them to a loaded Gemma 4 and streams the reply. `ask`, serve and chat share the
pictures' path: fitted to the image-token budget (vision/images.py), then through the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.errors import UsageError
from edge.model.conversation import Conversation
from edge.model.engine import GEMMA_SAMPLING, Generation, LoadedModel, Sampling
from edge.vision.images import Picture, read_image

DESCRIBE = "Describe what you see."


@dataclass
class Inputs:
    question: str
    pcm: np.ndarray | None = None  # a spoken question (16 kHz mono), at most 30 s
    pictures: list[Picture] = field(default_factory=list)  # as read: full size


@dataclass
class Answer:
    generation: Generation
    pictures: list[Picture]  # as the model saw them: fitted to the budget
    image_tokens: list[int]

    def summary(self) -> dict:
        """What a machine reads from `ask --json`, besides the text."""
        stats = self.generation.stats
        prefill = stats.prefill
        images = sum(self.image_tokens)
        return {
            "answer": self.generation.text.strip(),
            "images": [
                {"name": p.name, "width": p.width, "height": p.height, "image_tokens": n}
                for p, n in zip(self.pictures, self.image_tokens)
            ],
            "prompt_tokens": prefill.prompt_tokens,
            "image_tokens": images,
            "audio_tokens": prefill.media_tokens - images,
            "generated_tokens": stats.generated_tokens,
            "finish_reason": stats.finish_reason,
            "encode_ms": prefill.encode_ms,
            "prompt_tps": stats.prompt_tps,
            "generation_tps": stats.generation_tps,
        }


def gather(
    question: str, *, audio: Path | None = None, images: tuple[Path, ...] = (), camera: str | None = None
) -> Inputs:
    """Every input read and checked; nothing is loaded yet."""
    from edge.audio.files import load_audio
    from edge.audio_format import MAX_CLIP_SECONDS

    if audio is None and not images and camera is None:
        raise UsageError("give ask something to hear or see: --audio FILE, --image FILE or --camera SOURCE")
    pictures = [read_image(path) for path in images]
    if camera is not None:
        from edge.vision.camera import open_camera

        with open_camera(camera) as source:
            pictures.append(source.capture())
    pcm = load_audio(audio, max_seconds=MAX_CLIP_SECONDS) if audio is not None else None
    return Inputs(question.strip(), pcm, pictures)


def answer(
    loaded: LoadedModel, inputs: Inputs, *, image_tokens: int | None = None, sampling: Sampling = GEMMA_SAMPLING
) -> Answer:
    """The reply, streamed: iterate `Answer.generation`. Pictures come before the question."""
    fitted = [loaded.fit_image(p, image_tokens) for p in inputs.pictures]
    counts = [loaded.projector.image_tokens(p) for p in fitted]
    if inputs.pcm is not None:
        from edge.voice.audio_conversation import AudioConversation

        conversation = AudioConversation(loaded)
        generation = conversation.reply(inputs.pcm, instruction=inputs.question, images=fitted, sampling=sampling)
    else:
        conversation = Conversation(loaded)
        generation = conversation.reply(
            inputs.question or DESCRIBE,
            sampling,
            images=fitted,
            what="the pictures and question",
            fix="lower --image-tokens, show fewer pictures or raise --ctx",
        )
    return Answer(generation, fitted, counts)
