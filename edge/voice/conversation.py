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

import codecs
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from edge.errors import AudioError, GenerationError
from edge.model.chat_format import GEMMA3_STOP, GEMMA4_STOP, Message
from edge.model.context_budget import Fitted, audio_tokens_for, fit_history, pinned_system
from edge.model.mtmd import AudioEvalResult, MtmdAudio
from edge.model.runner import Generation, LoadedModel

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


@dataclass(frozen=True)
class HeardAudio:
    """What one evaluation of audio put into the model (AudioEvalResult plus the clip length)."""

    speech_seconds: float
    audio: AudioEvalResult


class AudioConversation:
    """A text conversation whose user turns arrive as audio. One per loaded model + mmproj."""

    def __init__(self, loaded: LoadedModel, audio: MtmdAudio, *, system_prompt: str = DEFAULT_SYSTEM_PROMPT):
        if loaded.info.architecture != "gemma4":
            raise AudioError(
                f"{loaded.path.name} is a {loaded.info.architecture} model; only Gemma 4 "
                "E2B/E4B hear audio: run `edge-gemma setup` to install one"
            )
        self.loaded, self.audio = loaded, audio
        self.history: list[Message] = [{"role": "system", "content": system_prompt}] if system_prompt else []
        self.last_heard: HeardAudio | None = None
        self.last_fit: Fitted | None = None

    # -- one turn --------------------------------------------------------------------------------

    def reply(
        self,
        pcm: np.ndarray,
        *,
        instruction: str = "",
        max_tokens: int = 256,
        temperature: float = 0.7,
        on_stage: Callable[[str], None] = lambda stage: None,
    ) -> Generation:
        """Stream the reply to a spoken turn. Iterate it; then call `remember()` with its text.

        The history is first fitted to the context with room for this clip's audio tokens, the reply
        and the transcript step after it; old turns that do not fit are dropped (see `last_fit`).
        `on_stage` is told "prompt_ready", "audio_eval_start" and "audio_eval_end" (a turn's timeline).
        """
        asked: Message = {"role": "user", "content": self.audio.marker + instruction}
        seconds = len(pcm) / self.audio.audio_sample_rate
        reserve = audio_tokens_for(seconds) + max_tokens + self.transcript_room
        fitted = fit_history(
            self.history,
            asked,
            n_ctx=self.loaded.n_ctx,
            reserve=reserve,
            count_tokens=self.loaded.count_chat_tokens,
            what=f"a {seconds:.1f} s clip",
            fix="raise --ctx or speak in shorter turns",
        )
        self.history, self.last_fit = fitted.history, fitted
        pieces = self._pieces(self.history + [asked], pcm, max_tokens, temperature, on_stage)
        return Generation(self.loaded, pieces)

    @property
    def transcript_room(self) -> int:
        """Context the transcript step takes after a reply: its question and the transcript."""
        return self.loaded.count_tokens(HEARD_PROMPT) + 16 + TRANSCRIPT_MAX_TOKENS

    def forget(self) -> None:
        """Start a fresh conversation; the system prompt stays."""
        self.history = pinned_system(self.history)

    def remember(self, reply_text: str, *, transcribe: bool = True) -> str:
        """Put the finished turn into the text history; returns what the model heard ('' if skipped)."""
        heard = self._heard_in_context() if transcribe else ""
        self.history += [
            {"role": "user", "content": heard or "(spoken message)"},
            {"role": "assistant", "content": reply_text.strip()},
        ]
        return heard

    def transcribe(self, pcm: np.ndarray, *, language: str = "English") -> Generation:
        """A one-shot transcription (no history), greedy as the model card advises."""
        prompt = [{"role": "user", "content": self.audio.marker + TRANSCRIBE_PROMPT.format(language=language)}]
        return Generation(self.loaded, self._pieces(prompt, pcm, 512, 0.0))

    # -- the model side --------------------------------------------------------------------------

    def _pieces(
        self,
        messages: list[Message],
        pcm: np.ndarray,
        max_tokens: int,
        temperature: float,
        on_stage: Callable[[str], None] = lambda stage: None,
    ) -> Iterator[str]:
        """Evaluate text prefix + audio + suffix, then sample; runs lazily inside Generation's timing."""
        prompt = self.loaded.chat_prompt(messages)
        before, after = prompt.text.split(self.audio.marker, 1)
        on_stage("prompt_ready")
        with _llama_failures("evaluating the conversation"):
            self._eval_text_prefix(before)
        on_stage("audio_eval_start")
        result = self.audio.eval_prompt_with_audio(self.loaded.llama, self.audio.marker + after, pcm, append=True)
        on_stage("audio_eval_end")
        self.last_heard = HeardAudio(len(pcm) / self.audio.audio_sample_rate, result)
        yield from self._sample(max_tokens, temperature, prompt.stop)

    def _eval_text_prefix(self, text: str) -> None:
        """Reuse the longest cached prefix (the system prompt, earlier text turns); evaluate the rest."""
        llama = self.loaded.llama
        tokens = llama.tokenize(text.encode(), add_bos=True, special=True)
        cached = llama.input_ids[: llama.n_tokens]
        same = 0
        for ours, theirs in zip(tokens, cached):
            if ours != theirs:
                break
            same += 1
        same = min(same, len(tokens) - 1)  # evaluate at least one token so logits are fresh
        llama.n_tokens = same
        llama.eval(tokens[same:])  # llama.eval drops cached positions past n_tokens first

    def _sample(self, max_tokens: int, temperature: float, stop: list[str]) -> Iterator[str]:
        """Sample after what is in the KV cache, until end of turn, a stop string or max_tokens."""
        import llama_cpp

        llama = self.loaded.llama
        vocab = llama_cpp.llama_model_get_vocab(llama.model)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        history = llama.input_ids[: llama.n_tokens].tolist()
        text = ""
        with _llama_failures("generating the reply"):
            for count, token in enumerate(llama.generate(history, temp=temperature, top_k=64, top_p=0.95, reset=True)):
                if llama_cpp.llama_vocab_is_eog(vocab, token) or count >= max_tokens:
                    return
                piece = decoder.decode(llama.detokenize([token], special=False))
                text += piece
                if any(s and s in text for s in stop):
                    return
                if piece:
                    yield piece

    def _heard_in_context(self) -> str:
        """Ask, with the audio still in the KV cache, what the user said (greedy, short)."""
        llama = self.loaded.llama
        follow_up = self.loaded.chat_prompt([{"role": "user", "content": HEARD_PROMPT}])
        # follow_up.text is "<turn opener>user\n...<generation prompt>": close the model's turn first.
        closer = (GEMMA4_STOP if "<|turn>" in follow_up.text else GEMMA3_STOP)[0] + "\n"
        with _llama_failures("writing down what was heard"):
            llama.eval(llama.tokenize((closer + follow_up.text).encode(), add_bos=False, special=True))
        heard = "".join(self._sample(TRANSCRIPT_MAX_TOKENS, 0.0, follow_up.stop))
        return " ".join(heard.split())


@contextlib.contextmanager
def _llama_failures(doing: str):
    """llama-cpp-python reports a failed llama_decode (a full KV cache, say) as RuntimeError/ValueError."""
    try:
        yield
    except (RuntimeError, ValueError) as exc:
        raise GenerationError(
            f"llama.cpp failed while {doing} ({exc}); the turn was dropped and the "
            "conversation kept: try again, or raise --ctx if it repeats"
        ) from exc
