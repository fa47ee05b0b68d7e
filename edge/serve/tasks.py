"""The model-side work of each endpoint. These run on the model worker's thread, never elsewhere.

Each task takes what the HTTP side parsed and checked, streams text pieces through the job, stops
between tokens when the caller went away, and returns a typed result for the response and metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edge.audio_format import MAX_CLIP_SECONDS, SAMPLE_RATE
from edge.errors import AudioError
from edge.model.chat_format import Message
from edge.model.context_budget import fit_history
from edge.model.conversation import Conversation, count_prompt, image_tokens_in, media_of, with_pictures
from edge.model.engine import Generation, LoadedModel, Sampling
from edge.model.reply_events import TextEvent
from edge.model.tool_calls import ToolCall
from edge.model.tool_turn import ToolSetup, ToolTurn
from edge.serve.worker import Job
from edge.vision.images import Picture
from edge.voice.audio_conversation import AudioConversation


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"
    prompt_tps: float | None = None
    generation_tps: float | None = None
    prompt_reused: int = 0  # prompt tokens found in the KV cache
    prompt_seconds: float = 0.0  # the prompt's evaluation (media encoding included)
    tool_calls: list[ToolCall] = field(default_factory=list)
    audio_seconds: float = 0.0
    image_tokens: int = 0  # the prompt's, over every picture it kept
    dropped_turns: int = 0
    kept_history: list[Message] = field(default_factory=list)  # the earlier messages the prompt kept


@dataclass
class Transcript:
    text: str
    duration: float
    segments: list[dict] = field(default_factory=list)  # {id, start, end, text}
    generation_tps: float | None = None
    audio_tokens: int = 0  # over every segment
    audio_tokens_early: int = 0  # of them, heard while the speech was still arriving (`listen`)
    prompt_tokens: int = 0
    prompt_reused: int = 0
    prompt_seconds: float = 0.0  # the encoder and the prompt's evaluation
    tokens: int = 0  # written


def chat(
    loaded: LoadedModel,
    messages: list[Message],
    audio: np.ndarray | None,
    sampling: Sampling,
    job: Job,
    tools: ToolSetup | None = None,
):
    """A chat reply; `audio` (16 kHz mono) belongs to the last user message, whose text is the instruction.
    User messages may show pictures ("images": (Picture, budget) pairs, as parsed).
    With `tools`, the reply may be calls: each one is emitted as a CallEvent."""
    cancelled = job.cancelled.is_set
    if tools is not None:
        if audio is not None:
            raise AudioError("tools with audio input are not taken yet: send the request as text, or without tools")
        return _tool_reply(loaded, messages, tools, sampling, job)
    *earlier, last = messages
    earlier, pictures = _shown(loaded, earlier), _fitted(loaded, last.get("images", ()))
    if audio is None:
        conversation = Conversation(loaded, history=earlier)
        generation = conversation.reply(
            last["content"],
            sampling,
            images=pictures,
            what="the messages",
            fix="send fewer or shorter messages or pictures, or start the server with a larger --ctx",
            cancelled=cancelled,
        )
    else:
        _require_ears(loaded)
        conversation = AudioConversation(loaded, system_prompt="")
        conversation.history = earlier
        generation = conversation.reply(
            audio, instruction=last["content"], images=pictures, sampling=sampling, cancelled=cancelled
        )
    completion = _stream(generation, job)
    completion.audio_seconds = len(audio) / SAMPLE_RATE if audio is not None else 0.0
    fit = conversation.last_fit
    completion.dropped_turns = fit.dropped_turns if fit else 0
    completion.kept_history = list(conversation.history)
    completion.image_tokens = image_tokens_in(loaded, media_of(conversation.history) + pictures)
    return completion


def _shown(loaded: LoadedModel, messages: list[Message]) -> list[Message]:
    """Messages whose pictures are fitted to their budgets, with a marker for each before the text."""
    return [
        {**m, **with_pictures(m["content"], _fitted(loaded, m["images"]), loaded.projector.marker)}
        if "images" in m
        else m
        for m in messages
    ]


def _fitted(loaded: LoadedModel, shown) -> list[Picture]:
    """(Picture, budget) pairs as parsed -> pictures sized to their budgets (None: the server's).
    A model without eyes refuses here (LoadedModel.fit_image says how to give it some)."""
    return [loaded.fit_image(picture, tokens) for picture, tokens in shown]


def _tool_reply(loaded: LoadedModel, messages: list[Message], tools: ToolSetup, sampling: Sampling, job: Job):
    """The messages fitted to the context with the declarations counted, then a tool turn streamed."""
    declarations = tools.declarations()
    *earlier, last = _shown(loaded, messages)
    fitted = fit_history(
        earlier,
        last,
        n_ctx=loaded.n_ctx,
        reserve=min(sampling.max_tokens, loaded.n_ctx // 2),
        count_tokens=lambda m: count_prompt(loaded, m, declarations),
        what="the messages and tools",
        fix="send fewer or shorter messages or tools, or start the server with a larger --ctx",
    )
    shown = fitted.history + [last]
    turn = ToolTurn.chat(loaded, shown, tools, sampling, clips=media_of(shown), cancelled=job.cancelled.is_set)
    events = iter(turn)
    try:
        for event in events:
            job.emit(event)
    finally:
        events.close()
    stats, reply = turn.stats, turn.reply
    return Completion(
        text=reply.content,
        prompt_tokens=stats.prompt_tokens,
        completion_tokens=stats.generated_tokens,
        finish_reason="tool_calls" if reply.calls else "length" if stats.finish_reason == "length" else "stop",
        prompt_tps=stats.prompt_tps,
        generation_tps=stats.generation_tps,
        prompt_reused=stats.prefill.reused,
        prompt_seconds=stats.prefill.seconds,
        dropped_turns=fitted.dropped_turns,
        kept_history=fitted.history,
        tool_calls=reply.calls,
        image_tokens=image_tokens_in(loaded, media_of(shown)),
    )


def complete(loaded: LoadedModel, prompt: str, sampling: Sampling, job: Job) -> Completion:
    return _stream(loaded.complete(prompt, sampling, cancelled=job.cancelled.is_set), job)


class Hearing:
    """One connection's clip heard while it is spoken (Wyoming): kept between its `listen` jobs and
    the `transcribe` at the end. Used on the worker thread only, like the model."""

    def __init__(self, language: str):
        self.language = language
        self.conversation: AudioConversation | None = None

    def of(self, loaded: LoadedModel) -> AudioConversation:
        if self.conversation is None or self.conversation.loaded is not loaded:
            _require_ears(loaded)
            self.conversation = AudioConversation(loaded, system_prompt="")
        return self.conversation


def listen(loaded: LoadedModel, hearing: Hearing, pcm: np.ndarray) -> int:
    """Encode and prefill what has arrived of a clip to be transcribed; the rows now in the cache."""
    return hearing.of(loaded).listen_to_transcribe(pcm, language=hearing.language)


def transcribe(
    loaded: LoadedModel, pcm: np.ndarray, job: Job, max_tokens: int = 512, *, hearing: Hearing
) -> Transcript:
    """Speech written down by Gemma 4 (greedy): up to 30 s as one clip (what `listen` heard of it is
    not evaluated again), longer speech cut at pauses into clips of at most 30 s. Speech-free audio
    is no words."""
    from edge.audio.vad import segment

    conversation = hearing.of(loaded)
    clips = [(c.pcm, c.start_s, c.end_s) for c in segment(pcm)]
    if clips and len(pcm) <= MAX_CLIP_SECONDS * SAMPLE_RATE:
        clips = [(pcm, 0.0, len(pcm) / SAMPLE_RATE)]  # whole, so it is the clip heard while spoken
    segments, rates = [], []
    counts = {"audio_tokens": 0, "audio_tokens_early": 0, "prompt_tokens": 0, "prompt_reused": 0, "tokens": 0}
    counts["prompt_seconds"] = 0.0
    for i, (clip, start_s, end_s) in enumerate(clips):
        if job.cancelled.is_set():
            break
        generation = conversation.transcribe(clip, language=hearing.language, max_tokens=max_tokens)
        text = " ".join(generation.run().split())
        stats = generation.stats
        if stats and stats.generation_tps:
            rates.append(stats.generation_tps)
        if stats:
            counts["audio_tokens"] += stats.prefill.media_tokens
            counts["audio_tokens_early"] += stats.prefill.last_media_reused
            counts["prompt_tokens"] += stats.prompt_tokens
            counts["prompt_reused"] += stats.prefill.reused
            # The encoder ran before the engine's prefill, on what was not heard while spoken.
            counts["prompt_seconds"] += stats.prefill.seconds + conversation.last_listening.final_encode_seconds
            counts["tokens"] += stats.generated_tokens
        segments.append({"id": i, "start": round(start_s, 2), "end": round(end_s, 2), "text": text})
        job.emit(TextEvent(text))
    return Transcript(
        " ".join(s["text"] for s in segments).strip(),
        len(pcm) / SAMPLE_RATE,
        segments,
        sum(rates) / len(rates) if rates else None,
        **counts,
    )


def _require_ears(loaded: LoadedModel) -> None:
    """The audio projector, or the error that says how to get one."""
    if loaded.projector is None or not loaded.projector.supports_audio:
        raise AudioError(
            "this server's model has no audio projector: start it with a Gemma 4 E2B/E4B model "
            "and --mmproj (edge-gemma setup installs both)"
        )


def _stream(generation: Generation, job: Job) -> Completion:
    """Pass pieces to the caller until the end, a stop string, or the caller leaving (the engine
    checks the job between tokens)."""
    pieces = iter(generation)
    try:
        for piece in pieces:
            job.emit(TextEvent(piece))
    finally:
        pieces.close()  # ends the generation now, not when garbage is collected
    stats = generation.stats
    return Completion(
        text=generation.text,
        prompt_tokens=stats.prompt_tokens,
        completion_tokens=stats.generated_tokens,
        finish_reason="length" if stats.finish_reason == "length" else "stop",
        prompt_tps=stats.prompt_tps,
        generation_tps=stats.generation_tps,
        prompt_reused=stats.prefill.reused,
        prompt_seconds=stats.prefill.seconds,
    )
