"""The voice loop: listen -> Gemma (native audio) -> speak, with per-turn numbers.

It never touches sounddevice: it reads blocks from an AudioSource (microphone, file, test array)
and speaks through a Speaker over an AudioSink, so anything can stand behind either end.

Listening never stops. Replies are made on a worker thread (edge.voice.turns), so the loop hears
the user talk over a reply (barge-in) and can start a reply speculatively: after a short pause
(`speculate_after_s`, 0.15 s) rather than the full end-pointing silence (0.7 s). If speech resumes
before the silence is complete the reply is cancelled (and its speech cut) and the same clip goes
on; otherwise the reply already under way is kept. People answer each other within about 0.2-0.3 s.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge.assist.toolbox import Toolbox, spoken_duration
from edge.audio.capture import AudioSource
from edge.audio.playback import AudioSink
from edge.audio.tts import Speaker, chime_sound
from edge.audio.vad import Clip, Endpointer, PushToTalk
from edge.audio.wake import WakeWord
from edge.errors import UsageError
from edge.model.engine import GEMMA_SAMPLING, Sampling
from edge.voice.audio_conversation import AudioConversation
from edge.voice.timeline import TurnTimeline
from edge.voice.turns import Listen, Turn, TurnSettings, TurnStats, TurnWorker
from edge.voice.wake_gate import FOLLOW_UP_S, WakeGate

__all__ = ["TurnStats", "VoiceLoop"]

# A pause this long starts the reply; speech resuming before the end-point cancels it. 0.25 s left
# the pipeline's share of the wait at 0.38 s, 0.15 s at 0.29 s (scripts/voice_latency.py), with no
# start thrown away on the test questions; a thrown-away start costs compute, not latency, since the
# user is still talking while it is cancelled.
SPECULATE_AFTER_S = 0.15
# Listening while the user speaks: a step after each this much more speech (one in flight at a time).
# About one audio batch (24 rows, 0.96 s): steps that small keep the end-of-speech remainder short.
LISTEN_EVERY_S = 1.0
BARGE_IN = ("voice", "name", "off")


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
        barge_in: str = "voice",
        sampling: Sampling = GEMMA_SAMPLING,
        on_text: Callable[[str], None] = lambda piece: None,
        on_turn: Callable[[TurnStats], None] = lambda stats: None,
        on_note: Callable[[str], None] = lambda message: None,
        log_path: Path | None = None,
        forget_after_s: float | None = 300.0,
        speculate_after_s: float | None = SPECULATE_AFTER_S,
        toolbox: Toolbox | None = None,
        wake: WakeWord | None = None,
        follow_up_s: float = FOLLOW_UP_S,
        chime: bool = True,
        listen_while_speaking: bool = True,
        wake_audio: Callable[[], np.ndarray | None] | None = None,
    ):
        """`on_note` hears what the user should know between turns: a failed turn (the loop goes on),
        a fresh conversation after `forget_after_s` of quiet (None: remember forever).

        `barge_in`: what stops a reply being spoken: "voice" (any speech; headphones, or a loudspeaker
        with its echo removed), "name" (the wake word, as smart speakers do: the microphone may hear the
        reply, which is never taken for a turn) or "off" (each reply is heard out).
        `speculate_after_s` None waits for the full end-pointing silence before replying. Replies start
        early only with voice barge-in (a reply must stop when the speech turns out to go on).
        `toolbox`: offline tools the model may call; its timers are announced when they ring.
        `wake`: answer only speech after this wake word (a chime says it was heard; `chime`), and
        follow-ups within `follow_up_s` of a reply (wake_gate.py). None: every utterance is a turn.
        `listen_while_speaking`: the model encodes and prefills the speech as it arrives, so at the
        end of speech only the last second is left to evaluate (engine/listening.py).
        `wake_audio`: what the wake word hears of the block just read (None: the block). With the echo
        canceller on, its filter's output before the end-pointer's gate (echo.py): a name said over a
        reply stays in whole (docs/performance.md, "Echo").
        """
        self.conversation, self.source = conversation, source
        self.endpointer = endpointer or Endpointer()
        self.sink = sink
        self.speaker = speaker_factory(sink) if speaker_factory and sink else None
        if barge_in not in BARGE_IN:
            raise UsageError(f"barge_in must be one of {', '.join(BARGE_IN)}, not {barge_in!r}")
        if barge_in == "name" and wake is None:
            raise UsageError("barge-in by name needs a wake word: add --wake-word NAME, or use --barge-in voice|off")
        self.barge_in = barge_in
        self.speculate_after_s = speculate_after_s if barge_in == "voice" else None
        self.toolbox = toolbox
        if toolbox is not None:
            toolbox.clock = self.stream_time  # timers run on the audio's clock
        self.settings = TurnSettings(sampling, toolbox, forget_after_s=forget_after_s, log_path=log_path)
        self.on_text, self.on_turn, self.on_note = on_text, on_turn, on_note
        self.discarded_starts = 0  # speculative replies thrown away in this session
        self.rung: list[str] = []  # timers that rang, by name
        self.wake, self.wake_audio = wake, wake_audio
        self.gate = WakeGate(follow_up_s=follow_up_s) if wake is not None else None
        self.chime = chime
        self.wakes = 0  # times the wake word was heard
        self._worker: TurnWorker | None = None
        self._pending: Turn | None = None  # a speculative turn not yet committed
        self._last: Turn | None = None  # the last committed turn
        self._discards = 0  # since the last committed turn
        self._barged: str | None = None  # how the user cut the last reply short: "voice" or "name"
        self._committed = 0
        self._clock: tuple[float, float] | None = None  # (stream seconds, perf_counter) at the last block
        self.listen_while_speaking = listen_while_speaking
        self._hearing: Listen | None = None  # the last listening step sent to the worker

    @property
    def turns(self) -> list[TurnStats]:
        return self._worker.turns if self._worker else []

    @property
    def failed_turns(self) -> int:
        return self._worker.failed_turns if self._worker else 0

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
            self._worker = TurnWorker(
                self.conversation,
                self.speaker,
                self.settings,
                on_text=self.on_text,
                on_turn=self.on_turn,
                on_note=self.on_note,
            )
            interrupted = False
            try:
                self._listen(max_turns, push_to_talk, stop, toggles)
            except KeyboardInterrupt:
                interrupted = True
                if self._last is not None:
                    self._last.cancel()  # stop the reply in progress at its next token
                raise
            finally:
                if self._pending is not None:
                    self._discard(self._pending)
                self._worker.close(cancel=interrupted)
            if self.speaker is not None:
                self.speaker.wait(timeout=120)
        return self.turns

    def _listen(self, max_turns, push_to_talk, stop, toggles) -> None:
        for block in self.source.blocks(timeout=0.25):
            if stop.is_set():
                return
            listener = push_to_talk or self.endpointer
            clips = listener.feed(block)
            self._clock = (listener.position_s, time.perf_counter())  # clips are timed on this clock
            while push_to_talk is not None and toggles is not None and not toggles.empty():
                toggles.get()
                if push_to_talk.recording:
                    clips += [c for c in [push_to_talk.stop()] if c is not None]
                else:
                    push_to_talk.start()
            self._check_barge_in()
            self._ring_timers()
            if push_to_talk is None and self.gate is not None:
                clips = self._gated(block, clips, listener.position_s)
            for clip in clips:
                self._on_clip(clip)
                if max_turns is not None and self._committed >= max_turns:
                    return
            if push_to_talk is None:
                self._speculate()
                self._listen_ahead()
        for clip in [] if push_to_talk else self.endpointer.flush():
            if max_turns is None or self._committed < max_turns:
                self._on_clip(clip)

    def _gated(self, block, clips: list[Clip], now: float) -> list[Clip]:
        """With a wake word: listen for it, and keep only the clips meant for the assistant."""
        if self._reply_active():
            if self.barge_in == "name" and self.speaker is not None:
                self.gate.after_reply(now)  # what the microphone hears now is our own reply
            else:
                self.gate.keep_awake(now)
        heard = self.wake_audio() if self.wake_audio is not None else block
        if heard is not None and self.wake.feed(heard):
            self.wakes += 1
            self.gate.heard_name(now)
            if self.barge_in == "name" and self.speaker is not None and self.speaker.speaking:
                self.speaker.stop()
                self._barged = "name"
            if self.chime and self.speaker is not None:
                self.speaker.chime(*chime_sound())
        return [kept for clip in clips if (kept := self.gate.admit(clip)) is not None]

    def _reply_active(self) -> bool:
        last_running = self._last is not None and not self._last.done.is_set()
        return last_running or self._pending is not None or (self.speaker is not None and self.speaker.speaking)

    def stream_time(self) -> float:
        """Seconds of audio heard so far: the clock timers run on."""
        return self._clock[0] if self._clock is not None else 0.0

    def _ring_timers(self) -> None:
        """A timer that rang is said aloud now, whatever the conversation is doing."""
        if self.toolbox is None:
            return
        for timer in self.toolbox.timers.due(self.stream_time()):
            message = (
                f"Your {timer.name} timer is done." if not timer.name.startswith("timer ") else "Your timer is done."
            )
            self.rung.append(timer.name)
            self.on_note(f"timer rang: {timer.name} ({spoken_duration(timer.seconds)})")
            if self.speaker is not None:
                self.speaker.say(message)

    def _check_barge_in(self) -> None:
        """The user talks over the reply: stop speaking and listen."""
        if self.barge_in != "voice" or self.speaker is None or self._pending is not None:
            return  # a speculative reply is cancelled by `_speculate` when speech resumes
        heard_until = self._last.clip.speech_end_s if self._last else float("-inf")
        talking = self.endpointer.in_speech and (self.endpointer.last_speech_s or 0.0) > heard_until
        if talking and self.speaker.speaking:
            self.speaker.stop()
            self._barged = "voice"

    def _speculate(self) -> None:
        """Start the reply in a pause; throw it away if the speech goes on."""
        if self.speculate_after_s is None:
            return
        pending, ep = self._pending, self.endpointer
        if pending is not None and (ep.last_speech_s or 0.0) > pending.clip.speech_end_s:
            self._discard(pending)  # speech resumed: the same clip continues
            pending = None
        if pending is None and ep.in_speech and ep.silence_s >= self.speculate_after_s:
            clip = ep.snapshot()
            if clip is not None and self.gate is not None:
                clip = self.gate.admit(clip, preview=True)  # speech not for us is never started on
            if clip is not None:
                self._pending = self._start(clip, speculative=True)

    def _listen_ahead(self) -> None:
        """While the user speaks, have the worker hear what they said so far: one step at a time,
        each after LISTEN_EVERY_S more speech, so a slow encoder takes bigger steps, never a queue."""
        if not self.listen_while_speaking or self._hearing is not None and not self._hearing.done.is_set():
            return
        clip = self.endpointer.snapshot() if self.endpointer.in_speech and self._pending is None else None
        if clip is not None and self.gate is not None:
            clip = self.gate.admit(clip, preview=True)  # speech not for us is not listened to
        if clip is None:
            return
        heard = self._hearing.clip if self._hearing is not None else None
        if heard is not None and heard.start_s == clip.start_s and clip.end_s - heard.end_s < LISTEN_EVERY_S:
            return
        if clip.speech_end_s - clip.speech_start_s < LISTEN_EVERY_S:
            return
        self._hearing = Listen(clip)
        assert self._worker is not None
        self._worker.submit(self._hearing)

    def _on_clip(self, clip: Clip) -> None:
        """The end-pointer closed a clip: keep the speculative reply made for it, or start one."""
        pending, self._pending = self._pending, None
        if pending is not None and pending.same_speech(clip):
            turn = pending
        else:
            if pending is not None:
                self._discard(pending)
            turn = self._start(clip, speculative=False)
        turn.discarded_before, self._discards = self._discards, 0
        turn.barged, self._barged = self._barged, None
        turn.commit(clip)
        self._last = turn
        self._committed += 1
        if not self.source.live:
            turn.done.wait()  # a file read at full speed is answered turn by turn, as it was spoken
        if self.speaker is not None and self.barge_in == "off":
            # Without barge-in the microphone hears our own reply: wait it out, then forget it.
            turn.done.wait()
            self.speaker.wait(timeout=120)
            if hasattr(self.source, "drain"):
                self.source.drain()
            self.endpointer.flush()

    def _start(self, clip: Clip, *, speculative: bool) -> Turn:
        turn = Turn(clip, TurnTimeline(self.wall_time_of(clip.speech_end_s)), speculative)
        assert self._worker is not None
        self._worker.submit(turn)
        return turn

    def _discard(self, turn: Turn) -> None:
        assert self._worker is not None
        with self._worker.speech_lock:
            turn.cancel()
            if self.speaker is not None and self.speaker.speaking:
                self.speaker.stop()
        self._pending = None if self._pending is turn else self._pending
        self._discards += 1
        self.discarded_starts += 1

    def wall_time_of(self, stream_s: float) -> float:
        """perf_counter time at which the stream's sample at `stream_s` was captured.

        The last block arrived at the clock's wall time; earlier samples are that much older, and
        a microphone's own input latency older still.
        """
        if self._clock is None:
            return time.perf_counter()
        position, wall = self._clock
        return wall - (position - stream_s) - self.source.latency_s
