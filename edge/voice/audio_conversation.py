"""Gemma 4 hearing audio natively: one spoken turn in, a streamed text reply out.

How a turn works (and why):
- The prompt is the conversation so far *as text*, then a user turn holding the audio. The text
  before the audio is prefix-matched against the KV cache, so the system prompt and earlier turns
  are evaluated once and reused; only the new audio goes through the encoder.
- The reply streams first (time to first sound is what a listener feels). Then, with the audio
  still in the KV cache, the model is asked what it heard; that transcript replaces the audio in
  the text history. Past audio is never encoded again, and the transcript is made while the reply
  is being spoken, off the latency path. Transcribing first would delay every reply by the
  transcript's length (~2-4 s on a Pi 5).
- The model listens while the user speaks (`listen`): what has arrived is encoded and prefilled,
  so at the end of speech only the last second or so is left (engine/listening.py). If the user
  starts the next question while the transcript step runs, the step gives way and the turn stays
  in the history as audio, already in the KV cache: the next question never waits for it.
- Thinking stays off (the template's empty thought channel): thoughts would be spoken and
  transcripts get worse with them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from edge.audio_format import SAMPLE_RATE
from edge.errors import AudioError
from edge.model.chat_format import GEMMA3_STOP, GEMMA4_STOP, Message
from edge.model.context_budget import Fitted, audio_tokens_for
from edge.model.conversation import Conversation
from edge.model.engine import (
    AUDIO_BATCH,
    GEMMA_SAMPLING,
    GREEDY,
    EncodedAudio,
    Generation,
    Listener,
    ListenerWork,
    LoadedModel,
    PrefillReport,
    Sampling,
)
from edge.model.tool_turn import ToolSetup, ToolTurn, with_results

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful voice assistant running offline on a small computer. "
    "Listen to what the user says and answer briefly, in plain spoken sentences: "
    "no lists, no markdown, no emoji."
)
# The model card's transcription prompt (FACTS.md), used at temperature 0.
TRANSCRIBE_PROMPT = (
    "Transcribe the following speech segment in {language} into {language} text. "
    "Only output the transcription, with no newlines. When transcribing numbers, "
    "write the digits."
)
# ISO-639-1 codes (what OpenAI and Wyoming clients send) -> the name the transcription prompt uses.
LANGUAGE_NAMES = {
    "en": "English",
    "de": "German",
    "fr": "French",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "nl": "Dutch",
    "pl": "Polish",
    "ru": "Russian",
    "uk": "Ukrainian",
    "ja": "Japanese",
    "ko": "Korean",
    "zh": "Chinese",
    "hi": "Hindi",
    "ar": "Arabic",
    "tr": "Turkish",
    "sv": "Swedish",
    "da": "Danish",
    "fi": "Finnish",
    "no": "Norwegian",
    "cs": "Czech",
    "el": "Greek",
    "he": "Hebrew",
    "id": "Indonesian",
    "vi": "Vietnamese",
    "th": "Thai",
}


def language_name(code: str | None) -> str:
    """ "en" or "en-GB" -> "English"; an unknown code or a name is kept as given (trimmed)."""
    if not code or not code.strip():
        return "English"
    return LANGUAGE_NAMES.get(code.strip().split("-")[0].lower(), code.strip()[:40])


LISTEN_ROOM_S = 5.0  # while listening, the clip is budgeted this much longer than heard so far
HEARD_PROMPT = "Write down exactly what I said in my last message, and nothing else."
TRANSCRIPT_MAX_TOKENS = 160


class AudioConversation:
    """A text conversation whose user turns arrive as audio, on a model loaded with its projector."""

    def __init__(self, loaded: LoadedModel, *, system_prompt: str = DEFAULT_SYSTEM_PROMPT):
        if loaded.projector is None:
            raise AudioError(
                f"{loaded.path.name} was loaded without an audio projector; Gemma 4 E2B/E4B hear "
                "through one: run `edge-gemma setup` or pass --mmproj PATH"
            )
        loaded.projector.require_audio()
        self.loaded = loaded
        self.marker = loaded.projector.marker
        self.text = Conversation(loaded, system=system_prompt or None)
        self._last: Generation | None = None
        self._listener: Listener | None = None  # the turn being heard while it is spoken
        self.last_clip: EncodedAudio | None = None  # the last turn's audio, as the model heard it
        self.last_listening: ListenerWork | None = None  # what hearing it cost the encoder

    @property
    def history(self) -> list[Message]:
        return self.text.history

    @history.setter
    def history(self, messages: list[Message]) -> None:
        self.text.history = list(messages)

    @property
    def last_fit(self) -> Fitted | None:
        return self.text.last_fit

    @property
    def last_heard(self) -> PrefillReport | None:
        """What evaluating the last turn's prompt and audio did (audio tokens, encode time at the end
        of speech: the encoder runs here, before the engine, on what was not heard while spoken)."""
        prefill = self._last.prefill if self._last is not None else None
        if prefill is None or self.last_listening is None:
            return prefill
        return replace(prefill, encode_ms=round(self.last_listening.final_encode_seconds * 1000, 3))

    # -- one turn --------------------------------------------------------------------------------

    def reply(
        self,
        pcm: np.ndarray,
        *,
        instruction: str = "",
        images=(),
        sampling: Sampling = GEMMA_SAMPLING,
        on_stage: Callable[[str], None] = lambda stage: None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> Generation:
        """Stream the reply to a spoken turn (with `images`: pictures shown with it, fitted by
        LoadedModel.fit_image). Iterate it; then call `remember()` with its text.

        The history is first fitted to the context with room for this clip's audio tokens, the reply
        and the transcript step after it; old turns that do not fit are dropped (see `last_fit`).
        `on_stage` is told "prompt_ready", "audio_eval_start" and "audio_eval_end" (a turn's timeline).
        """
        generation = self.text.reply(
            self.marker + instruction, sampling, images=images, **self._clip_turn(pcm, on_stage), cancelled=cancelled
        )
        on_stage("prompt_ready")
        self._last = generation
        return generation

    def reply_with_tools(
        self,
        pcm: np.ndarray,
        tools: ToolSetup,
        *,
        sampling: Sampling = GEMMA_SAMPLING,
        on_stage: Callable[[str], None] = lambda stage: None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> ToolTurn:
        """As `reply`, with tools the model may call; iterate it for TextEvent and CallEvent."""
        turn = self.text.reply_with_tools(
            self.marker, tools, sampling, **self._clip_turn(pcm, on_stage), cancelled=cancelled
        )
        on_stage("prompt_ready")
        self._last = turn.generation
        return turn

    def prime(self, *, tools: ToolSetup | None = None, sampling: Sampling = GEMMA_SAMPLING) -> PrefillReport:
        """Evaluate the conversation so far (the system prompt, tools) up to where the next clip goes,
        before anyone speaks: nothing the model can do early is left for after the question."""
        nothing_yet = EncodedAudio(np.zeros(SAMPLE_RATE // 4, np.float32), np.empty((0, 0), np.float32))
        return self.text.prefill_ahead(self.marker, nothing_yet, sampling, tools=tools, **self._room(LISTEN_ROOM_S))

    def listen(self, pcm: np.ndarray, *, tools: ToolSetup | None = None, sampling: Sampling = GEMMA_SAMPLING) -> int:
        """Hear the turn in progress (`pcm`: the clip so far, always from the same first sample):
        encode what is new and prefill the rows that will not change. Returns the rows in the cache.
        The turn's reply (`reply`, with the same `tools`) then evaluates only what is left."""
        heard = self._hear(pcm)
        if heard is None:
            return 0
        # Room for the clip as it may still grow: a fit that drops fewer turns than the reply's would
        # change the prompt before the audio and waste what was heard.
        room = self._room(len(pcm) / SAMPLE_RATE + LISTEN_ROOM_S)
        self.text.prefill_ahead(self.marker, heard, sampling, tools=tools, **room)
        return len(heard.embeddings) // AUDIO_BATCH * AUDIO_BATCH

    def _hear(self, pcm: np.ndarray) -> EncodedAudio | None:
        """The clip so far through the listener (a new one for a new clip); None until a whole batch
        of rows is exact."""
        if self._listener is None or not self._listener.same_clip(pcm):
            self._listener = Listener(self.loaded.projector)
        heard = self._listener.hear(pcm)
        return heard if heard is not None and len(heard.embeddings) >= AUDIO_BATCH else None

    def _encoded(self, pcm: np.ndarray, on_stage: Callable[[str], None]) -> EncodedAudio:
        """The turn's clip through the encoder: only what was not heard while it was spoken."""
        on_stage("audio_eval_start")
        listener = self._listener if self._listener is not None and self._listener.same_clip(pcm) else None
        listener = listener or Listener(self.loaded.projector)
        self._listener = None
        self.last_clip, self.last_listening = listener.finish(pcm), listener.work
        return self.last_clip

    def _clip_turn(self, pcm: np.ndarray, on_stage: Callable[[str], None]) -> dict:
        """A spoken turn's arguments to the text conversation: its clip, encoded when the reply starts
        (`_encoded`), and the room it asks of the context."""
        return {
            "clips": lambda: [self._encoded(pcm, on_stage)],
            "on_stage": on_stage,
            **self._room(len(pcm) / SAMPLE_RATE),
        }

    def _room(self, seconds: float) -> dict:
        """What a spoken turn asks of the context budget: room for its audio and the transcript step."""
        return {
            "reserve_extra": audio_tokens_for(seconds) + self.transcript_room,
            "what": f"a {seconds:.1f} s clip",
            "fix": "raise --ctx or speak in shorter turns",
        }

    def continue_after_calls(self, calls, results, tools: ToolSetup, sampling: Sampling = GEMMA_SAMPLING) -> ToolTurn:
        """The model reads its calls' results and goes on speaking, in the same turn, in the KV cache."""
        return ToolTurn.after_results(self.loaded, calls, results, tools, sampling)

    @property
    def transcript_room(self) -> int:
        """Context the transcript step takes after a reply: its question and the transcript."""
        return self.loaded.count_tokens(HEARD_PROMPT) + 16 + TRANSCRIPT_MAX_TOKENS

    def forget(self) -> None:
        """Start a fresh conversation; the system prompt stays."""
        self.text.clear()

    def remember(
        self,
        reply_text: str,
        *,
        transcribe: bool = True,
        calls=(),
        results=(),
        give_way: Callable[[], bool] = lambda: False,
    ) -> str | None:
        """Put the finished turn into the history; returns what the model heard ('' if skipped, None
        if the transcript step gave way: `give_way()` turned true, the user is speaking again; the
        turn is then kept as audio). A turn that called tools keeps its calls and their results."""
        heard = self._heard_in_context(give_way) if transcribe else ""
        answer = with_results(list(calls), list(results), reply_text.strip() or "Done.") if calls else None
        kept_audio = {"role": "user", "content": self.marker, "audio": self.last_clip}
        asked = kept_audio if heard is None and self.last_clip is not None else None
        self.text.remember(reply_text, user_text=heard or "(spoken message)", answer=answer, asked=asked)
        return heard

    def transcribe(self, pcm: np.ndarray, *, language: str = "English", max_tokens: int = 512) -> Generation:
        """A one-shot transcription (no history), greedy as the model card advises. What
        `listen_to_transcribe` heard of the clip while it was spoken is not encoded again."""
        clips = lambda: [self._encoded(pcm, lambda stage: None)]  # noqa: E731  (encoded when the prefill starts)
        return self.loaded.chat(self._transcription(language), GREEDY.with_(max_tokens=max_tokens), clips=clips)

    def listen_to_transcribe(self, pcm: np.ndarray, *, language: str = "English") -> int:
        """`listen` for a one-shot transcription (`pcm`: the clip so far): the rows heard are
        prefilled under the transcription prompt, so `transcribe` evaluates only the rest. Returns
        the rows in the cache. The model card puts the audio before the instruction, so the
        instruction's tokens are still evaluated at the end."""
        heard = self._hear(pcm)
        if heard is None:
            return 0
        prompt = self.loaded.chat_prompt(self._transcription(language))
        self.loaded.engine.prefill(prompt.text, [heard], audio_rows=len(heard.embeddings))
        return len(heard.embeddings) // AUDIO_BATCH * AUDIO_BATCH

    def _transcription(self, language: str) -> list[Message]:
        return [{"role": "user", "content": self.marker + TRANSCRIBE_PROMPT.format(language=language)}]

    def _heard_in_context(self, give_way: Callable[[], bool] = lambda: False) -> str | None:
        """Ask, with the audio still in the KV cache, what the user said (greedy, short); None if it
        gave way."""
        follow_up = self.loaded.chat_prompt([{"role": "user", "content": HEARD_PROMPT}])
        # follow_up.text is "<turn opener>user\n...<generation prompt>": close the model's turn first.
        closer = (GEMMA4_STOP if "<|turn>" in follow_up.text else GEMMA3_STOP)[0] + "\n"
        sampling = GREEDY.with_(max_tokens=TRANSCRIPT_MAX_TOKENS, stop=tuple(follow_up.stop))
        step = self.loaded.continue_turn(closer + follow_up.text, sampling, cancelled=give_way)
        heard = step.run()
        return None if step.stats.finish_reason == "cancelled" else " ".join(heard.split())
