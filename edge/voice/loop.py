"""The voice loop: listen -> Gemma (native audio) -> speak, with per-turn numbers.

It never touches sounddevice: it reads blocks from an AudioSource (microphone, file, test array)
and speaks through a Speaker over an AudioSink, so anything can stand behind either end.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge.audio.capture import AudioSource
from edge.audio.playback import AudioSink
from edge.audio.tts import Speaker
from edge.audio.vad import Clip, Endpointer, PushToTalk
from edge.errors import EdgeError
from edge.voice.conversation import AudioConversation
from edge.voice.timeline import TurnTimeline


@dataclass(frozen=True)
class TurnStats:
    speech_s: float  # length of the clip sent to the model
    endpoint_delay_s: float  # from the end of speech to the clip being closed
    audio_encode_ms: float
    audio_tokens: int
    prompt_tps: float  # prefill rate, audio embeddings included
    ttft_s: float  # clip closed -> first reply text
    decode_tps: float
    reply_tokens: int
    first_sound_s: float | None  # clip closed -> first reply audio handed to the speaker (None: no TTS)
    heard: str  # the model's transcript of the turn, kept in the text history
    reply: str
    barged_in: bool = False
    dropped_turns: int = 0  # old turns that left the context to make room for this one
    # Seconds after the end of speech at which each stage happened (see edge.voice.timeline.STAGES).
    timeline: dict[str, float] = field(default_factory=dict)
    model_s: float | None = None  # the model's share of the wait for the first sound
    pipeline_s: float | None = None  # the rest of end of speech -> audible: edge-gemma's own delay

    def to_dict(self) -> dict:
        return asdict(self)


class _TimedSink(AudioSink):
    """Passes audio through and notes when the first sound of a turn was handed over and played."""

    def __init__(self, inner: AudioSink):
        self.inner = inner
        self.first_play_at: float | None = None

    def open(self) -> None:
        self.inner.open()

    def close(self) -> None:
        self.inner.close()

    def play(self, samples: np.ndarray, sample_rate: int = 16_000) -> bool:
        if self.first_play_at is None:
            self.first_play_at = time.perf_counter()
        return self.inner.play(samples, sample_rate)

    @property
    def last_started_at(self) -> float | None:
        return self.inner.last_started_at

    @property
    def output_latency_s(self) -> float:
        return self.inner.output_latency_s

    def drain(self) -> bool:
        return self.inner.drain()

    def stop(self) -> None:
        self.inner.stop()


class VoiceLoop:
    """Turns from `source` into replies spoken by `speaker_factory`'s Speaker (None: text only)."""

    def __init__(
        self,
        conversation: AudioConversation,
        source: AudioSource,
        *,
        endpointer: Endpointer | None = None,
        sink: AudioSink | None = None,
        speaker_factory: Callable[[AudioSink], Speaker] | None = None,
        barge_in: bool = True,
        max_tokens: int = 256,
        temperature: float = 0.7,
        on_text: Callable[[str], None] = lambda piece: None,
        on_turn: Callable[[TurnStats], None] = lambda stats: None,
        on_note: Callable[[str], None] = lambda message: None,
        log_path: Path | None = None,
        forget_after_s: float | None = 300.0,
    ):
        """`on_note` hears what the user should know between turns: a failed turn (the loop goes on),
        a fresh conversation after `forget_after_s` of quiet (None: remember forever)."""
        self.conversation, self.source = conversation, source
        self.endpointer = endpointer or Endpointer()
        self.sink = _TimedSink(sink) if sink is not None else None
        self.speaker = speaker_factory(self.sink) if speaker_factory and self.sink else None
        self.barge_in, self.max_tokens, self.temperature = barge_in, max_tokens, temperature
        self.on_text, self.on_turn, self.on_note, self.log_path = on_text, on_turn, on_note, log_path
        self.forget_after_s = forget_after_s
        self.turns: list[TurnStats] = []
        self.failed_turns = 0
        self._barged = False
        self._last_turn_at: float | None = None  # stream time the last turn's speech ended
        self._clock: tuple[float, float] | None = None  # (stream seconds, perf_counter) at the last block

    def run(
        self,
        max_turns: int | None = None,
        push_to_talk: PushToTalk | None = None,
        stop: threading.Event | None = None,
        toggles: queue.SimpleQueue | None = None,
    ) -> list[TurnStats]:
        """Listen until the source ends, `stop` is set, or max_turns replies were made.

        With push_to_talk, each item put on `toggles` (from a key-reading thread) starts or stops a
        recording; it is applied here, in the loop's thread, between blocks.
        """
        stop = stop or threading.Event()
        speaker_cm = self.speaker if self.speaker is not None else contextlib.nullcontext()
        with speaker_cm:
            for block in self.source.blocks(timeout=0.25):
                if stop.is_set():
                    break
                clips = push_to_talk.feed(block) if push_to_talk else self.endpointer.feed(block)
                self._clock = (self.endpointer.position_s, time.perf_counter())
                while push_to_talk is not None and toggles is not None and not toggles.empty():
                    toggles.get()
                    if push_to_talk.recording:
                        clips += [c for c in [push_to_talk.stop()] if c is not None]
                    else:
                        push_to_talk.start()
                if self.barge_in and self.speaker is not None and self.speaker.speaking and self.endpointer.in_speech:
                    self.speaker.stop()  # the user talks over the reply: stop speaking, listen
                    self._barged = True
                for clip in clips:
                    self.guarded_turn(clip)
                    if max_turns is not None and len(self.turns) >= max_turns:
                        return self.turns
            for clip in [] if push_to_talk else self.endpointer.flush():
                if max_turns is None or len(self.turns) < max_turns:
                    self.guarded_turn(clip)
            if self.speaker is not None:
                self.speaker.wait(timeout=120)
        return self.turns

    def guarded_turn(self, clip: Clip) -> TurnStats | None:
        """A turn that cannot take the loop down: a failure is reported and listening goes on."""
        try:
            return self.turn(clip)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001  (one bad turn must not end a week-long session)
            self.failed_turns += 1
            if self.speaker is not None:
                self.speaker.stop()
            reason = str(exc) if isinstance(exc, EdgeError) else f"unexpected {type(exc).__name__}: {exc}"
            self.on_note(f"that turn failed ({reason}); still listening")
            return None

    def wall_time_of(self, stream_s: float) -> float:
        """perf_counter time at which the stream's sample at `stream_s` was captured.

        The last block arrived at the clock's wall time; earlier samples are that much older, and
        a microphone's own input latency older still.
        """
        if self._clock is None:
            return time.perf_counter()
        position, wall = self._clock
        return wall - (position - stream_s) - getattr(self.source, "latency_s", 0.0)

    def turn(self, clip: Clip) -> TurnStats:
        """One reply to one clip: stream, speak sentence by sentence, remember as text."""
        closed_at = time.perf_counter()
        timeline = TurnTimeline(self.wall_time_of(clip.speech_end_s))
        timeline.mark("clip_closed", closed_at)
        timeline.mark("reply_start", closed_at)
        # Quiet is measured in stream time (the clip's own clock), so a file replays the same way.
        quiet = clip.speech_start_s - self._last_turn_at if self._last_turn_at is not None else 0.0
        if self.forget_after_s is not None and quiet > self.forget_after_s and len(self.conversation.history) > 1:
            self.conversation.forget()  # a smart speaker does not remember yesterday's question
            self.on_note(f"new conversation after {quiet:.0f} s of quiet")
        self._last_turn_at = clip.speech_end_s
        if self.sink is not None:
            self.sink.first_play_at = None
            timeline.output_latency_s = self.sink.output_latency_s
        if self.speaker is not None:
            self.speaker.on_stage = timeline.mark
        barged, self._barged = self._barged, False
        generation = self.conversation.reply(
            clip.pcm, max_tokens=self.max_tokens, temperature=self.temperature, on_stage=timeline.mark
        )
        for piece in generation:
            timeline.mark("first_token")
            self.on_text(piece)
            if self.speaker is not None:
                self.speaker.feed(piece)
        if self.speaker is not None:
            self.speaker.finish()
        heard = self.conversation.remember(generation.text)  # runs while the reply is being spoken
        if self.speaker is not None and not self.barge_in:
            # Without barge-in the microphone hears our own reply: wait it out, then forget it.
            self.speaker.wait(timeout=120)
            if hasattr(self.source, "drain"):
                self.source.drain()
            self.endpointer.flush()
        stats = self._stats(clip, generation, closed_at, heard, barged, timeline)
        self.turns.append(stats)
        self.on_turn(stats)
        if self.log_path is not None:
            with self.log_path.open("a") as log:
                log.write(json.dumps(stats.to_dict()) + "\n")
        return stats

    def _stats(
        self, clip: Clip, generation, closed_at: float, heard: str, barged: bool, timeline: TurnTimeline
    ) -> TurnStats:
        s, heard_audio = generation.stats, self.conversation.last_heard
        first_play = self.sink.first_play_at if self.sink is not None else None
        return TurnStats(
            speech_s=round(clip.duration_s, 3),
            endpoint_delay_s=round(clip.endpoint_delay_s, 3),
            audio_encode_ms=heard_audio.audio.encode_ms if heard_audio else 0.0,
            audio_tokens=heard_audio.audio.n_audio_tokens if heard_audio else 0,
            prompt_tps=round(s.prompt_tps, 2),
            ttft_s=round(s.time_to_first_token, 3),
            decode_tps=round(s.generation_tps, 2),
            reply_tokens=s.generated_tokens,
            first_sound_s=round(first_play - closed_at, 3) if first_play else None,
            heard=heard,
            reply=generation.text.strip(),
            barged_in=barged,
            dropped_turns=self.conversation.last_fit.dropped_turns if self.conversation.last_fit else 0,
            timeline=timeline.seconds(),
            model_s=timeline.model_s(),
            pipeline_s=timeline.pipeline_s(),
        )
