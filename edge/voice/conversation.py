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
- Thinking stays off (the template's empty thought channel): thoughts would be spoken and
  transcripts get worse with them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edge.audio_format import SAMPLE_RATE
from edge.errors import AudioError
from edge.model.chat_format import GEMMA3_STOP, GEMMA4_STOP, Message
from edge.model.context_budget import Fitted, audio_tokens_for
from edge.model.conversation import Conversation
from edge.model.engine import GEMMA_SAMPLING, GREEDY, Generation, LoadedModel, PrefillReport, Sampling
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
        """What evaluating the last turn's prompt and audio did (audio tokens, encode time)."""
        return self._last.prefill if self._last is not None else None

    # -- one turn --------------------------------------------------------------------------------

    def reply(
        self,
        pcm: np.ndarray,
        *,
        instruction: str = "",
        sampling: Sampling = GEMMA_SAMPLING,
        on_stage: Callable[[str], None] = lambda stage: None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> Generation:
        """Stream the reply to a spoken turn. Iterate it; then call `remember()` with its text.

        The history is first fitted to the context with room for this clip's audio tokens, the reply
        and the transcript step after it; old turns that do not fit are dropped (see `last_fit`).
        `on_stage` is told "prompt_ready", "audio_eval_start" and "audio_eval_end" (a turn's timeline).
        """
        generation = self.text.reply(
            self.marker + instruction, sampling, **self._clip_turn(pcm), on_stage=on_stage, cancelled=cancelled
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
        """As `reply`, with tools the model may call; iterate it for ("text", piece) and ("call", call)."""
        turn = self.text.reply_with_tools(
            self.marker, tools, sampling, **self._clip_turn(pcm), on_stage=on_stage, cancelled=cancelled
        )
        on_stage("prompt_ready")
        self._last = turn.generation
        return turn

    def _clip_turn(self, pcm: np.ndarray) -> dict:
        """What a spoken turn asks of the context budget: room for its audio and the transcript step."""
        seconds = len(pcm) / SAMPLE_RATE
        return {
            "clips": [pcm],
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

    def remember(self, reply_text: str, *, transcribe: bool = True, calls=(), results=()) -> str:
        """Put the finished turn into the text history; returns what the model heard ('' if skipped).
        A turn that called tools keeps its calls and their results, as the template writes them."""
        heard = self._heard_in_context() if transcribe else ""
        answer = with_results(list(calls), list(results), reply_text.strip() or "Done.") if calls else None
        self.text.remember(reply_text, user_text=heard or "(spoken message)", answer=answer)
        return heard

    def transcribe(self, pcm: np.ndarray, *, language: str = "English") -> Generation:
        """A one-shot transcription (no history), greedy as the model card advises."""
        prompt = [{"role": "user", "content": self.marker + TRANSCRIBE_PROMPT.format(language=language)}]
        return self.loaded.chat(prompt, GREEDY.with_(max_tokens=512), clips=[pcm])

    def _heard_in_context(self) -> str:
        """Ask, with the audio still in the KV cache, what the user said (greedy, short)."""
        follow_up = self.loaded.chat_prompt([{"role": "user", "content": HEARD_PROMPT}])
        # follow_up.text is "<turn opener>user\n...<generation prompt>": close the model's turn first.
        closer = (GEMMA4_STOP if "<|turn>" in follow_up.text else GEMMA3_STOP)[0] + "\n"
        self.loaded.engine.extend(closer + follow_up.text)
        sampling = GREEDY.with_(max_tokens=TRANSCRIPT_MAX_TOKENS, stop=tuple(follow_up.stop))
        heard = Generation(self.loaded.engine, None, sampling).run()
        return " ".join(heard.split())
