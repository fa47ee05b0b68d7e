"""Speaking replies: split streamed text into sentences and speak each as soon as it is complete.

The model streams tokens; waiting for the whole reply would add seconds of silence, so a
`SentenceSplitter` releases each sentence as its end arrives and a `Speaker` synthesises the next
sentence while the current one plays. Synthesis is Piper in-process (a neural voice, loaded once) or
an espeak-ng subprocess (tts_backends.py); the samples go to an `AudioSink`, so the output device is
the sink's business. `stop()` is barge-in: it drops queued sentences, kills synthesis in flight and
cuts playback.
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from edge.audio.playback import AudioSink
from edge.audio.tts_backends import EspeakBackend, NoneBackend, TTSBackend
from edge.audio_format import SAMPLE_RATE
from edge.errors import AudioError

TTSName = Literal["auto", "piper", "espeak", "none"]
StageHook = Callable[..., None]  # (stage name, perf_counter time or None for now)


def _no_stage(stage: str, at: float | None = None) -> None:
    pass


# A sentence ends at . ! ? (or an ellipsis), plus closing quotes/brackets, before whitespace.
_END = re.compile(r"""(?:\.\.\.|…|[.!?])+["'”’)\]]*(?=\s)""")
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "no", "fig", "approx"}
_MARKDOWN = re.compile(r"(\*\*|__|`+|^#+\s*|^\s*[-*+]\s+|^\s*\d+\.\s+(?=\S))", re.MULTILINE)


def clean_for_speech(text: str) -> str:
    """Drop markdown markup a TTS engine would read out ("asterisk asterisk") or stumble on."""
    return re.sub(r"\s+", " ", _MARKDOWN.sub(" ", text.replace("*", " "))).strip()


_CLAUSE_END = re.compile(r"[,;:]+(?=\s)|\s[-–—]+(?=\s)")


class SentenceSplitter:
    """Feed text pieces as they stream in; get back each sentence once it is complete.

    The first piece of a reply goes out sooner: at the first clause (a comma, semicolon, colon or
    dash after `first_clause_words` words) or after `first_max_words` words, whichever comes
    first, so speech starts while the model is still writing the first sentence. Later pieces are
    whole sentences: synthesis then runs a sentence ahead of playback and the speech flows.
    """

    def __init__(self, max_chars: int = 220, *, first_clause_words: int = 3, first_max_words: int = 8):
        self.max_chars = max_chars  # a run-on reply is broken at a comma or space beyond this
        self.first_clause_words, self.first_max_words = first_clause_words, first_max_words
        self._buf = ""
        self._first = True  # nothing of this reply released yet

    def feed(self, piece: str) -> list[str]:
        self._buf += piece
        out: list[str] = []
        while True:
            cut = self._next_cut()
            if cut is None:
                break
            sentence, self._buf = self._buf[:cut], self._buf[cut:]
            if sentence.strip():
                out.append(sentence.strip())
                self._first = False
        return out

    def flush(self) -> list[str]:
        """End of the reply: whatever is left is the last sentence."""
        rest, self._buf, self._first = self._buf.strip(), "", True
        return [rest] if rest else []

    def reset(self) -> None:
        self._buf, self._first = "", True

    def _next_cut(self) -> int | None:
        sentence = self._sentence_cut()
        if self._first and self.first_max_words:
            clause = self._first_clause_cut()
            if clause is not None and (sentence is None or clause < sentence):
                return clause
        return sentence

    def _first_clause_cut(self) -> int | None:
        """Where the first spoken piece may end: a clause boundary, or enough words (at a space)."""
        cuts = [
            m.end()
            for m in _CLAUSE_END.finditer(self._buf)
            if len(self._buf[: m.start()].split()) >= self.first_clause_words
        ][:1]
        words = list(re.finditer(r"\S+(?=\s)", self._buf))  # complete words only
        if len(words) >= self.first_max_words:
            cuts.append(words[self.first_max_words - 1].end())
        return min(cuts, default=None)

    def _sentence_cut(self) -> int | None:
        para = self._buf.find("\n\n")  # paragraph breaks and list items end a sentence too
        for m in _END.finditer(self._buf):
            if para != -1 and para < m.start():
                break
            word = re.search(r"(\S+)$", self._buf[: m.start()])
            stem = (word.group(1) if word else "").lower().strip("(\"'")
            if (
                m.group(0).startswith(".")
                and not m.group(0).startswith("...")
                and (
                    stem in _ABBREVIATIONS or (len(stem) == 1 and stem.isalpha())  # "Dr.", "J. Smith"
                )
            ):
                continue
            return m.end()
        if para != -1:
            return para + 2
        if len(self._buf) > self.max_chars:
            window = self._buf[: self.max_chars]
            for sep in (", ", "; ", ": ", " "):
                k = window.rfind(sep)
                if k > self.max_chars // 3:
                    return k + len(sep)
            return self.max_chars
        return None


def make_tts_backend(
    name: TTSName, *, voice: str | Path | None = None, words_per_minute: int | None = None
) -> TTSBackend:
    """The backend a `--tts` option names. "auto": Piper with its bundled voice when the voice extra
    is installed, else espeak-ng. `voice`: a Piper voice (name or .onnx path) or an espeak-ng voice."""
    if name == "auto":
        from edge.audio.piper import piper_available

        name = "piper" if piper_available() or (voice and str(voice).endswith(".onnx")) else "espeak"
    if name == "none":
        return NoneBackend()
    if name == "espeak":
        return EspeakBackend(str(voice) if voice else None, words_per_minute)
    if name == "piper":
        from edge.audio.piper import PiperBackend

        return PiperBackend(voice or "joe")
    raise AudioError(f"unknown TTS backend {name!r}; choose auto, piper, espeak or none")


class Speaker:
    """Speaks streamed text through a backend and a sink, one sentence at a time, in order.

    Two worker threads: one synthesises, one plays, so sentence N+1 is being made while N plays.
    Use as a context manager; `feed()` text pieces, `finish()` at the end of a reply, `wait()` for
    the speech to end, `stop()` to cut it (barge-in). Everything but `wait()` returns at once.
    """

    def __init__(self, backend: TTSBackend, sink: AudioSink, *, splitter: SentenceSplitter | None = None):
        self.backend, self.sink = backend, sink
        self.splitter = splitter or SentenceSplitter()
        self.spoken: list[str] = []  # sentences played to the end (for transcripts and tests)
        self._texts: queue.Queue[tuple[int, str, StageHook] | None] = queue.Queue()
        self._audio: queue.Queue[tuple[int, str, np.ndarray, int, StageHook] | None] = queue.Queue(maxsize=2)
        self._generation = 0  # bumped by stop(): work tagged with an older one is dropped
        self._pending = 0  # sentences queued and not yet played or dropped
        self._idle = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._error: AudioError | None = None
        # Told "first_clause", "synth_done" and "first_sample" (with its time) for each piece of speech,
        # through the hook set when the piece was queued: the voice loop times its turns with it.
        self.on_stage: StageHook = _no_stage

    def __enter__(self) -> Speaker:
        self._threads = [
            threading.Thread(target=self._synth_loop, name="edge-tts-synth", daemon=True),
            threading.Thread(target=self._play_loop, name="edge-tts-play", daemon=True),
        ]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._texts.put(None)
        for t in self._threads:
            t.join(timeout=5)
        self._threads = []

    @property
    def speaking(self) -> bool:
        with self._idle:
            return self._pending > 0

    def feed(self, piece: str) -> None:
        """A piece of streamed reply text; complete sentences are queued for speech."""
        for sentence in self.splitter.feed(piece):
            self._queue(sentence)

    def finish(self) -> None:
        """The reply is complete: speak what is left in the splitter."""
        for sentence in self.splitter.flush():
            self._queue(sentence)

    def say(self, text: str) -> None:
        self.feed(text)
        self.finish()

    def chime(self, pcm: np.ndarray, rate: int) -> bool:
        """Play a short sound (the wake word's acknowledgement) unless speech is under way."""
        with self._idle:
            if self._pending:
                return False
            self._pending += 1
            generation = self._generation
        self._audio.put((generation, "", pcm, rate, _no_stage))
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Until everything queued has been spoken (or dropped); False on timeout."""
        with self._idle:
            done = self._idle.wait_for(lambda: self._pending == 0, timeout)
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return done

    def stop(self) -> None:
        """Barge-in: drop queued sentences, kill synthesis in flight, cut playback."""
        with self._idle:
            self._generation += 1
            self.splitter.reset()
        self.backend.cancel()
        self.sink.stop()
        for q in (self._texts, self._audio):
            while True:
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    self._done()
                else:
                    q.put(None)  # keep a shutdown marker for its worker
                    break

    def _queue(self, sentence: str) -> None:
        text = clean_for_speech(sentence)
        if not text or isinstance(self.backend, NoneBackend):
            return
        with self._idle:
            self._pending += 1
            generation = self._generation
        self.on_stage("first_clause")
        self._texts.put((generation, text, self.on_stage))

    def _done(self) -> None:
        with self._idle:
            self._pending = max(0, self._pending - 1)
            self._idle.notify_all()

    def _synth_loop(self) -> None:
        while (item := self._texts.get()) is not None:
            generation, text, on_stage = item
            if generation != self._generation:
                self._done()
                continue
            try:
                pcm, rate = self.backend.synthesize(text)
            except AudioError as e:
                self._error = e
                self._done()
                continue
            if generation != self._generation or len(pcm) == 0:
                self._done()
                continue
            on_stage("synth_done")
            self._audio.put((generation, text, pcm, rate, on_stage))
        self._audio.put(None)

    def _play_loop(self) -> None:
        while (item := self._audio.get()) is not None:
            generation, text, pcm, rate, on_stage = item
            try:
                played = generation == self._generation and self.sink.play(
                    pcm, rate, on_start=lambda at, mark=on_stage: mark("first_sample", at)
                )
                if played and self._audio.empty():  # nothing follows yet: let this sentence be heard out
                    played = self.sink.drain()
                if played and generation == self._generation and text:
                    self.spoken.append(text)
            except AudioError as e:
                self._error = e
            finally:
                self._done()


def chime_sound(rate: int = SAMPLE_RATE) -> tuple[np.ndarray, int]:
    """Two soft rising notes, 0.25 s: "I heard my name, go on"."""

    def note(hz: float, seconds: float) -> np.ndarray:
        t = np.arange(int(seconds * rate)) / rate
        return (0.25 * np.sin(2 * np.pi * hz * t) * np.hanning(len(t))).astype(np.float32)

    return np.concatenate([note(660.0, 0.11), np.zeros(int(0.03 * rate), np.float32), note(880.0, 0.11)]), rate
