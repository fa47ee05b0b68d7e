"""Replies made on a worker thread while the loop keeps listening, and thrown away if speech resumes.

A turn may start before the end-pointer is sure the user has finished (a "speculative" start after a
short pause). Its reply streams and may even be spoken, but it only enters the conversation once
the loop commits it (the full end-pointing silence passed with no more speech); a turn cancelled
because speech resumed leaves the conversation as it was. One worker thread owns the model: a
llama context and libmtmd are not thread-safe.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from edge.assist.toolbox import Toolbox
from edge.audio.tts import Speaker
from edge.audio.vad import Clip, speech_span, trim_silence
from edge.audio_format import SAMPLE_RATE
from edge.errors import ContextFullError, EdgeError
from edge.model.engine import GEMMA_SAMPLING, Sampling
from edge.model.reply_events import TextEvent
from edge.model.tool_turn import ToolSetup
from edge.voice.audio_conversation import AudioConversation
from edge.voice.timeline import TurnTimeline


@dataclass(frozen=True)
class TurnStats:
    speech_s: float  # length of the audio sent to the model (trimmed of its quiet edges)
    endpoint_delay_s: float  # from the end of speech to the clip being closed (the full silence)
    audio_encode_ms: float
    audio_tokens: int
    prompt_tokens: int  # context positions of the turn's prompt, audio included
    prompt_reused: int  # of those, found in the KV cache (the system prompt, earlier turns)
    prompt_tps: float | None  # prefill rate of what was evaluated (None: too little to measure)
    ttft_s: float  # reply start -> first reply text
    decode_tps: float | None
    reply_tokens: int
    first_sound_s: float | None  # end of speech -> the first reply sound is heard (None: no TTS)
    heard: str  # the model's transcript of the turn, kept in the text history
    reply: str
    barged_in: bool = False
    barge_in_by: str | None = None  # "voice" or "name": what cut the reply before this turn short
    dropped_turns: int = 0  # old turns that left the context to make room for this one
    speculative: bool = False  # the reply started in a pause, before the end-pointer was sure
    discarded_starts: int = 0  # speculative replies thrown away (speech resumed) before this turn
    # Seconds after the end of speech at which each stage happened (see edge.voice.timeline.STAGES).
    timeline: dict[str, float] = field(default_factory=dict)
    model_s: float | None = None  # the model's share of the wait for the first sound
    pipeline_s: float | None = None  # the rest of end of speech -> audible: edge-gemma's own delay
    tool_calls: list[str] = field(default_factory=list)  # calls the model made, as name(arguments)
    audio_tokens_early: int = 0  # of audio_tokens, prefilled while the user was still speaking
    first_token_s: float | None = None  # end of speech -> the reply's first token
    encoded_audio_s: float = 0.0  # audio through the encoder for this turn, overlapping windows included
    image_tokens: int = 0  # pictures a tool showed the model in this turn (the camera's frame)
    image_encode_ms: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(eq=False)
class Turn:
    """One reply in the making. The loop decides it (commit or cancel); the worker makes it."""

    clip: Clip
    timeline: TurnTimeline
    speculative: bool
    barged: str | None = None  # how the user cut the previous reply short to say this: "voice" or "name"
    discarded_before: int = 0
    committed: bool = False
    cancelled: bool = False
    decided: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    def commit(self, final_clip: Clip | None = None) -> None:
        if final_clip is not None:
            self.clip = final_clip  # same samples; its endpoint delay is the full silence
        self.timeline.mark("clip_closed")
        self.committed = True
        self.decided.set()

    def cancel(self) -> None:
        self.cancelled = True
        self.decided.set()

    def same_speech(self, clip: Clip) -> bool:
        """`clip` is what this turn was started on: no speech came after it. (The closed clip may carry
        more of the quiet tail than a snapshot taken early in the pause; the model never hears the
        tail, which trim_silence cuts.)"""
        c = self.clip
        return c.start_s == clip.start_s and c.speech_end_s == clip.speech_end_s


@dataclass(eq=False)
class Listen:
    """Hear the clip in progress (listening while the user speaks); the loop sends one at a time."""

    clip: Clip
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class TurnSettings:
    sampling: Sampling = GEMMA_SAMPLING  # max_tokens caps a spoken reply
    toolbox: Toolbox | None = None  # the offline tools the model may call (time, timers, calculator)
    tool_choice: str = "auto"  # OpenAI's tool_choice: the model decides, or a named tool is forced
    forget_after_s: float | None = 300.0  # quiet (stream seconds) after which a new conversation starts
    log_path: Path | None = None


class TurnWorker:
    """The thread that owns the model: makes each queued turn's reply, speaks it, remembers it."""

    def __init__(
        self,
        conversation: AudioConversation,
        speaker: Speaker | None,
        settings: TurnSettings,
        *,
        on_text: Callable[[str], None],
        on_turn: Callable[[TurnStats], None],
        on_note: Callable[[str], None],
    ):
        self.conversation, self.speaker, self.settings = conversation, speaker, settings
        self.on_text, self.on_turn, self.on_note = on_text, on_turn, on_note
        self.turns: list[TurnStats] = []
        self.failed_turns = 0
        # Held while checking a turn is still wanted and handing its text to the speaker, so a
        # cancel (which stops the speaker) can never be followed by one more stale piece of speech.
        self.speech_lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Turn | Listen | None] = queue.SimpleQueue()
        self._heard_from: tuple[float, int] | None = None  # (clip start, first sample) of the clip being heard
        self._last_turn_at: float | None = None  # stream time the last kept turn's speech ended
        self._cancelled_all = False  # Ctrl-C: the turns still queued are not made
        self._thread = threading.Thread(target=self._work, name="edge-voice-turns", daemon=True)
        self._thread.start()

    def submit(self, job: Turn | Listen) -> None:
        self._jobs.put(job)

    def close(self, *, cancel: bool = False) -> None:
        """Finish the queued turns (`cancel`: skip them; a cancelled turn ends at its next token),
        then wait for the thread to stop. No timeout: the model is closed after this, and a reply
        still decoding would decode on freed memory (a slow board only makes the wait longer)."""
        if cancel:
            self._cancelled_all = True
        self._jobs.put(None)
        self._thread.join()

    def _work(self) -> None:
        try:
            self.conversation.prime(tools=self._tools(), sampling=self.settings.sampling)
        except Exception as exc:  # noqa: BLE001  (the first turn meets the same problem and reports it)
            self.on_note(f"could not evaluate the system prompt ahead ({_reason(exc)})")
        while (job := self._jobs.get()) is not None:
            try:
                if self._cancelled_all:
                    if isinstance(job, Turn):
                        job.cancel()
                elif isinstance(job, Listen):
                    self._hear(job.clip)
                elif not job.cancelled:
                    self._guarded(job)
            finally:
                job.done.set()

    def _hear(self, clip: Clip) -> None:
        """Prefill what has been said so far of the clip in progress. A failure costs only speed:
        the turn's reply encodes what was not heard."""
        try:
            self.conversation.listen(self._heard_pcm(clip), tools=self._tools(), sampling=self.settings.sampling)
        except ContextFullError:
            pass  # the turn outgrew the context: its reply will say so
        except Exception as exc:  # noqa: BLE001  (the worker thread must outlive any one step)
            self.on_note(f"listening ahead failed ({_reason(exc)}); the reply will hear the whole clip")

    def _heard_pcm(self, clip: Clip):
        """The samples the model hears of `clip`. The start is fixed when listening to a clip begins,
        so what was heard early stays a prefix of what the reply hears."""
        if self._heard_from is None or self._heard_from[0] != clip.start_s:
            self._heard_from = (clip.start_s, speech_span(clip)[0])
        return trim_silence(clip, first=self._heard_from[1])

    def _tools(self) -> ToolSetup | None:
        toolbox = self.settings.toolbox
        return ToolSetup(toolbox.specs, self.settings.tool_choice) if toolbox else None

    def _guarded(self, turn: Turn) -> None:
        """A turn that cannot take the loop down: a failure is reported and listening goes on."""
        try:
            self._reply(turn)
        except Exception as exc:  # noqa: BLE001  (one bad turn must not end a week-long session)
            turn.decided.wait()  # a speculative turn that was thrown away fails silently
            if self.speaker is not None:
                self.speaker.stop()
            if turn.cancelled:
                return
            self.failed_turns += 1
            self.on_note(f"that turn failed ({_reason(exc)}); still listening")

    def _reply(self, turn: Turn) -> None:
        """Stream the reply (spoken as it comes); once the turn is committed, show it and remember it."""
        clip, timeline, s = turn.clip, turn.timeline, self.settings
        timeline.mark("reply_start")
        # Quiet is measured in stream time (the clip's own clock), so a file replays the same way.
        quiet = clip.speech_start_s - self._last_turn_at if self._last_turn_at is not None else 0.0
        if s.forget_after_s is not None and quiet > s.forget_after_s and len(self.conversation.history) > 1:
            self.conversation.forget()  # a smart speaker does not remember yesterday's question
            self.on_note(f"new conversation after {quiet:.0f} s of quiet")
        if self.speaker is not None:
            self.speaker.on_stage = timeline.mark
            timeline.output_latency_s = self.speaker.sink.output_latency_s
        heard_pcm = self._heard_pcm(clip)
        held: list[str] = []  # text of a reply not yet committed: shown only if it is kept
        calls, results, shown = [], [], None
        tools = self._tools()
        if tools is not None:
            first = self.conversation.reply_with_tools(
                heard_pcm, tools, sampling=s.sampling, on_stage=timeline.mark, cancelled=lambda: turn.cancelled
            )
            generation = first.generation
            text = self._speak((e.text for e in first if isinstance(e, TextEvent)), turn, held)
            calls = first.reply.calls if first.reply else []
            turn.decided.wait()  # a tool acts on the world: never for a reply that is thrown away
            if calls and not turn.cancelled:
                results = [s.toolbox.run(call) for call in calls]
                # Reading the results, the model answers in words (no second round of calls).
                more = self.conversation.continue_after_calls(calls, results, replace(tools, choice="none"), s.sampling)
                text += self._speak((e.text for e in more if isinstance(e, TextEvent)), turn, held)
                shown = more.prefill  # what reading the results took: a camera frame's image tokens
        else:
            generation = self.conversation.reply(
                heard_pcm, sampling=s.sampling, on_stage=timeline.mark, cancelled=lambda: turn.cancelled
            )
            text = self._speak(generation, turn, held)
        with self.speech_lock:
            if not turn.cancelled and self.speaker is not None:
                self.speaker.finish()
        turn.decided.wait()
        if turn.cancelled:
            return
        self._show(held)
        # runs while the reply is being spoken
        # The transcript step gives way as soon as the user speaks again (a job is waiting).
        heard = self.conversation.remember(text, calls=calls, results=results, give_way=lambda: not self._jobs.empty())
        if self.speaker is not None:
            # The turn's record needs the first sound's time, which may still be on its way out;
            # stop waiting once nothing is left to speak (a barge-in, a reply with no words).
            timeline.wait_for("first_sample", 10.0, unless=lambda: not self.speaker.speaking)
        self._last_turn_at = turn.clip.speech_end_s
        stats = self._stats(turn, generation, heard, len(heard_pcm) / SAMPLE_RATE)
        calls_made = [f"{c.name}({c.arguments_json()})" for c in calls]
        stats = replace(stats, reply=text.strip(), tool_calls=calls_made)
        if shown is not None and shown.media_tokens:
            stats = replace(stats, image_tokens=shown.media_tokens, image_encode_ms=shown.encode_ms)
        self.turns.append(stats)
        self.on_turn(stats)
        if s.log_path is not None:
            with s.log_path.open("a") as log:
                log.write(json.dumps(stats.to_dict()) + "\n")

    def _speak(self, pieces, turn: Turn, held: list[str]) -> str:
        """Feed text pieces to the speaker as they come (and to the screen once committed)."""
        timeline, text = turn.timeline, ""
        yielded = False  # the worker has waited once for the first clause's synthesis
        for piece in pieces:
            with self.speech_lock:
                if turn.cancelled:
                    break
                timeline.mark("first_token")
                if self.speaker is not None:
                    self.speaker.feed(piece)
            if self.speaker is not None and not yielded and timeline.has("first_clause"):
                # The first clause's synthesis is all the listener is waiting for: give it the CPU
                # instead of decoding on (the next clause is not needed until this one is heard).
                # Once per turn: a voice that fails to synthesise must not slow every piece after it.
                yielded = True
                timeline.wait_for("synth_done", 1.0, unless=lambda: turn.cancelled or not self.speaker.speaking)
            held.append(piece)
            text += piece
            if turn.committed:
                self._show(held)
        return text

    def _show(self, held: list[str]) -> None:
        for piece in held:
            self.on_text(piece)
        held.clear()

    def _stats(self, turn: Turn, generation, heard: str | None, speech_s: float) -> TurnStats:
        g, timeline, c = generation.stats, turn.timeline, self.conversation
        seconds = timeline.seconds()
        heard_prefill = c.last_heard or g.prefill
        return TurnStats(
            speech_s=round(speech_s, 3),
            endpoint_delay_s=round(turn.clip.endpoint_delay_s, 3),
            audio_encode_ms=heard_prefill.encode_ms,
            audio_tokens=len(c.last_clip.embeddings) if c.last_clip is not None else g.prefill.media_tokens,
            audio_tokens_early=g.prefill.last_media_reused,
            first_token_s=seconds.get("first_token"),
            encoded_audio_s=round(c.last_listening.encoded_seconds, 3) if c.last_listening else 0.0,
            prompt_tokens=g.prefill.prompt_tokens,
            prompt_reused=g.prefill.reused,
            prompt_tps=_rounded(g.prompt_tps),
            ttft_s=round(g.time_to_first_token, 3),
            decode_tps=_rounded(g.generation_tps),
            reply_tokens=g.generated_tokens,
            first_sound_s=seconds.get("audible"),
            heard=heard if heard is not None else "(kept as audio: the next question came first)",
            reply=generation.text.strip(),
            barged_in=turn.barged is not None,
            barge_in_by=turn.barged,
            dropped_turns=self.conversation.last_fit.dropped_turns if self.conversation.last_fit else 0,
            speculative=turn.speculative,
            discarded_starts=turn.discarded_before,
            timeline=seconds,
            model_s=timeline.model_s(),
            pipeline_s=timeline.pipeline_s(),
        )


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, EdgeError) else f"unexpected {type(exc).__name__}: {exc}"


def _rounded(rate: float | None) -> float | None:
    return round(rate, 2) if rate is not None else None
