"""The model-side work of each endpoint. These run on the model worker's thread, never elsewhere.

Each task takes what the HTTP side parsed and checked, streams text pieces through the job, stops
between tokens when the caller went away, and returns a typed result for the response and metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edge.errors import AudioError
from edge.model.chat_format import Message
from edge.model.context_budget import fit_history
from edge.model.mtmd import MtmdAudio
from edge.model.runner import Generation, LoadedModel
from edge.serve.worker import Job

AUDIO_RATE = 16_000


@dataclass
class ServedModel:
    """What the worker loaded: the model and, when it has a projector with an audio encoder, its ears."""

    name: str
    loaded: LoadedModel
    audio: MtmdAudio | None = None

    def close(self) -> None:
        if self.audio is not None:
            self.audio.close()
        self.loaded.close()


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"
    prompt_tps: float = 0.0
    generation_tps: float = 0.0
    audio_seconds: float = 0.0
    dropped_turns: int = 0
    kept_history: list[Message] = field(default_factory=list)  # the earlier messages the prompt kept


@dataclass
class Transcript:
    text: str
    duration: float
    segments: list[dict] = field(default_factory=list)  # {id, start, end, text}
    generation_tps: float = 0.0


def chat(served: ServedModel, messages: list[Message], audio: np.ndarray | None, sampling: Sampling, job: Job):
    """A chat reply; `audio` (16 kHz mono) belongs to the last user message, whose text is the instruction."""
    loaded = served.loaded
    *earlier, last = messages
    if audio is None:
        fitted = fit_history(
            earlier,
            last,
            n_ctx=loaded.n_ctx,
            reserve=min(sampling.max_tokens, loaded.n_ctx // 2),
            count_tokens=loaded.count_chat_tokens,
            what="the messages",
            fix="send fewer or shorter messages, or start the server with a larger --ctx",
        )
        generation = loaded.chat(
            fitted.history + [last],
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            seed=sampling.seed,
            top_p=sampling.top_p,
            stop=list(sampling.stop),
        )
        completion = _stream(generation, job, sampling)
        completion.prompt_tokens = fitted.prompt_tokens  # counted while fitting: no second render
        completion.dropped_turns, completion.kept_history = fitted.dropped_turns, fitted.history
        return completion
    from edge.voice.conversation import AudioConversation

    conversation = AudioConversation(loaded, _ears(served), system_prompt="")
    conversation.history = list(earlier)
    generation = conversation.reply(
        audio, instruction=last["content"], max_tokens=sampling.max_tokens, temperature=sampling.temperature
    )
    completion = _stream(generation, job, sampling)
    heard = conversation.last_heard
    completion.audio_seconds = len(audio) / AUDIO_RATE
    completion.prompt_tokens = heard.audio.n_past if heard else 0
    completion.dropped_turns = conversation.last_fit.dropped_turns if conversation.last_fit else 0
    completion.kept_history = list(conversation.history)
    return completion


def complete(served: ServedModel, prompt: str, sampling: Sampling, job: Job) -> Completion:
    generation = served.loaded.complete(
        prompt,
        max_tokens=sampling.max_tokens,
        temperature=sampling.temperature,
        stop=list(sampling.stop),
        seed=sampling.seed,
        top_p=sampling.top_p,
    )
    completion = _stream(generation, job, sampling)
    completion.prompt_tokens = served.loaded.count_tokens(prompt)
    return completion


def transcribe(served: ServedModel, pcm: np.ndarray, language: str, job: Job) -> Transcript:
    """Speech cut at pauses into clips of at most 30 s, each written down by Gemma 4 (greedy)."""
    from edge.audio.vad import segment
    from edge.voice.conversation import AudioConversation

    conversation = AudioConversation(served.loaded, _ears(served), system_prompt="")
    segments, rates = [], []
    for i, clip in enumerate(segment(pcm)):
        if job.cancelled.is_set():
            break
        generation = conversation.transcribe(clip.pcm, language=language)
        text = " ".join(generation.run().split())
        rates.append(generation.stats.generation_tps if generation.stats else 0.0)
        segments.append({"id": i, "start": round(clip.start_s, 2), "end": round(clip.end_s, 2), "text": text})
        job.emit("piece", text)
    return Transcript(
        " ".join(s["text"] for s in segments).strip(),
        len(pcm) / AUDIO_RATE,
        segments,
        sum(rates) / len(rates) if rates else 0.0,
    )


def _ears(served: ServedModel) -> MtmdAudio:
    """The audio projector, or the error that says how to get one."""
    if served.audio is None:
        raise AudioError(
            "this server's model has no audio projector: start it with a Gemma 4 E2B/E4B model "
            "and --mmproj (edge-gemma setup installs both)"
        )
    return served.audio


def _stream(generation: Generation, job: Job, sampling: Sampling) -> Completion:
    """Pass pieces to the caller until the end, a stop string, or the caller leaving."""
    pieces = iter(generation)
    text = ""
    try:
        for piece in pieces:
            if job.cancelled.is_set():
                break
            text += piece
            cut = _first_stop(text, sampling.stop)
            if cut is not None:
                job.emit("piece", piece[: max(0, len(piece) - (len(text) - cut))])
                text = text[:cut]
                break
            job.emit("piece", piece)
    finally:
        pieces.close()  # ends llama.cpp's generation now, not when garbage is collected
    stats = generation.stats
    # llama.cpp evaluates every sampled token but the last, so its counter is one short.
    generated = stats.generated_tokens + 1 if stats and text else 0
    return Completion(
        text=text,
        prompt_tokens=0,
        completion_tokens=min(generated, sampling.max_tokens),
        finish_reason="length" if generated >= sampling.max_tokens else "stop",
        prompt_tps=stats.prompt_tps if stats else 0.0,
        generation_tps=stats.generation_tps if stats else 0.0,
    )


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    found = [text.find(s) for s in stops if s and s in text]
    return min(found) if found else None
