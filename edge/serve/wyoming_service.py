"""`edge-gemma wyoming`: Home Assistant's ears and brain over the Wyoming protocol, with Gemma 4.

Built on the `wyoming` package (its AsyncServer, AsyncEventHandler and event classes; no hand-written
protocol). One handler per connection; the model belongs to the same single worker `serve` uses.

- describe -> info: an ASR program (Gemma 4's own speech recognition), a handle (conversation)
  program and a TTS program (Piper's natural voice when the voice extra is installed, else espeak-ng).
- ASR: transcribe, audio-start, audio-chunk*, audio-stop -> transcript-start/-chunk/-stop and
  transcript. Chunks of any rate, width and channel count become 16 kHz mono. The model hears the
  audio as it arrives (each new batch of audio tokens encoded and prefilled under the transcription
  prompt), so at audio-stop only the tail is left; speech over 30 s is split at pauses.
- Conversation: transcript -> handled-start/-chunk/-stop and handled (not-handled for nothing to
  say), with one conversation per Wyoming context or satellite, kept in the shared context budget.
  Home control (advertised in info): HA's built-in intents are the model's tools, and its calls are
  answered as `intent` events (intents-start/-stop around several), which Home Assistant executes.
- synthesize -> audio-start/-chunk/-stop in the voice the voice loop uses; streaming synthesis too
  (synthesize-start, synthesize-chunk*, synthesize-stop -> audio sentence by sentence, then
  synthesize-stopped), as Home Assistant sends a reply while it is still being written.

A client that sends malformed events, audio without audio-start, too much audio or nothing for a
while is dropped without harming the next one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioChunkConverter, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_read_event
from wyoming.handle import Handled, HandledChunk, HandledStart, HandledStop, NotHandled
from wyoming.info import (
    AsrModel,
    AsrProgram,
    Attribution,
    Describe,
    HandleModel,
    HandleProgram,
    Info,
    TtsProgram,
    TtsVoice,
)
from wyoming.intent import Entity, Intent, IntentsStart, IntentsStop
from wyoming.server import AsyncEventHandler
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped
from wyoming.wake import Detect, Detection, NotDetected

from edge import __version__
from edge.assist.ha_intents import HA_INTENTS, intent_entities
from edge.assist.ha_intents import SYSTEM_PROMPT as HOME_SYSTEM_PROMPT
from edge.audio.tts import SentenceSplitter
from edge.audio_format import MAX_CLIP_SECONDS, SAMPLE_RATE
from edge.errors import EdgeError
from edge.model.chat_format import Message
from edge.model.engine import AUDIO_BATCH, GEMMA_SAMPLING
from edge.model.reply_events import CallEvent, DoneEvent, ErrorEvent, TextEvent
from edge.model.tool_turn import ToolSetup, with_results
from edge.serve import tasks
from edge.serve.worker import ModelWorker
from edge.serve.wyoming_wake import WakeListener, wake_program
from edge.voice.audio_conversation import LANGUAGE_NAMES, language_name

log = logging.getLogger(__name__)
DEFAULT_PORT = 10700  # faster-whisper uses 10300, piper 10200; Home Assistant's discovery finds any
RATE, WIDTH, CHANNELS = SAMPLE_RATE, 2, 1
ROW_S = 0.04  # Gemma 4 hears 25 audio tokens a second
LISTEN_STEP_S = AUDIO_BATCH * ROW_S  # the model takes early audio a whole batch at a time
LANGUAGES = sorted(LANGUAGE_NAMES)
ATTRIBUTION = Attribution(name="Google (Gemma 4), edge-gemma", url="https://ai.google.dev/gemma")
SYSTEM_PROMPT = (
    "You are a helpful voice assistant in a home. Answer briefly, in plain spoken sentences: "
    "no lists, no markdown, no emoji."
)


@dataclass
class WyomingSettings:
    model_name: str
    max_audio_seconds: float = 120.0
    idle_timeout_s: float = 120.0
    max_tokens: int = 512  # room for a series of calls (a spoken answer ends long before)
    transcript_tokens: int = 512  # the longest transcript of one clip
    forget_after_s: float = 300.0
    tts: object | None = None  # an audio.tts backend, or None: no TTS program
    # HA's built-in intents offered to the model, its calls sent as intent events: "auto" (the model
    # decides), "always" (every request is a command: tool_choice required) or "off".
    home_control: str = "auto"
    log_path: Path | None = None  # one JSON line per request (RequestLog)


class RequestLog:
    """`wyoming --log FILE`: one JSON line per request, as `voice --log` writes one per turn.

    kind: transcribe | handle | synthesize; seconds: request -> its last event; first_token_s: request
    -> its first streamed text (or call, or audio); the model's counts where the model ran."""

    def __init__(self, path: Path | None):
        self.path = path

    def write(self, kind: str, started: float, first: float | None, **counts) -> None:
        if self.path is None:
            return
        now = time.perf_counter()
        record = {
            "kind": kind,
            "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "first_token_s": round(first - started, 3) if first is not None else None,
            "seconds": round(now - started, 3),
            **counts,
        }
        try:
            with self.path.open("a") as out:
                out.write(json.dumps(record) + "\n")
        except OSError as exc:  # a full disk must not fail the request
            log.warning("could not write the request log %s: %s", self.path, exc)


@dataclass
class _Conversation:
    history: list[Message]
    last_used: float = field(default_factory=time.monotonic)


class WyomingService:
    """What every connection shares: the model worker, the settings, the conversations."""

    def __init__(self, worker: ModelWorker, settings: WyomingSettings):
        self.worker, self.settings = worker, settings
        self.log = RequestLog(settings.log_path)
        self.conversations: dict[str, _Conversation] = {}
        self.info = self._info()

    def handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> GemmaHandler:
        return GemmaHandler(reader, writer, self)

    def conversation(self, key: str) -> _Conversation:
        now = time.monotonic()
        for stale in [k for k, c in self.conversations.items() if now - c.last_used > self.settings.forget_after_s]:
            del self.conversations[stale]  # a smart speaker does not remember yesterday's question
        system = HOME_SYSTEM_PROMPT if self.settings.home_control != "off" else SYSTEM_PROMPT
        conversation = self.conversations.setdefault(key, _Conversation([{"role": "system", "content": system}]))
        conversation.last_used = now
        return conversation

    def _info(self) -> Info:
        def artifact(cls, name: str, description: str, **extra):
            return cls(
                name=name,
                description=description,
                attribution=ATTRIBUTION,
                installed=True,
                version=__version__,
                **extra,
            )

        models = [artifact(AsrModel, self.settings.model_name, "Gemma 4 hearing speech natively", languages=LANGUAGES)]
        info = Info(
            asr=[
                artifact(
                    AsrProgram,
                    "edge-gemma",
                    "Speech to text by Gemma 4 itself (no separate recognizer)",
                    models=models,
                    supports_transcript_streaming=True,
                )
            ],
            handle=[
                artifact(
                    HandleProgram,
                    "edge-gemma",
                    "A conversation with Gemma 4, on this device",
                    models=[artifact(HandleModel, self.settings.model_name, "Gemma 4", languages=LANGUAGES)],
                    supports_handled_streaming=True,
                    supports_home_control=self.settings.home_control != "off",
                )
            ],
        )
        wake = wake_program()
        if wake is not None:
            info.wake = [wake]
        backend = self.settings.tts
        if backend is not None:
            kind = "Piper" if backend.name == "piper" else "espeak-ng"
            voice = artifact(
                TtsVoice, backend.voice_name, f"{kind}, the voice the voice loop speaks with", languages=["en"]
            )
            info.tts = [
                artifact(
                    TtsProgram, "edge-gemma-tts", f"{kind} speech", voices=[voice], supports_synthesize_streaming=True
                )
            ]
        return info


class GemmaHandler(AsyncEventHandler):
    """One Wyoming connection (a Home Assistant pipeline, a satellite)."""

    def __init__(self, reader, writer, service: WyomingService):
        super().__init__(reader, writer)
        self.service = service
        self.peer = str(writer.get_extra_info("peername"))
        self.language = "en"
        self.context: dict | None = None
        self._converter = AudioChunkConverter(rate=RATE, width=WIDTH, channels=CHANNELS)
        self._audio: bytearray | None = None  # None: no audio-start yet
        self._hearing: tasks.Hearing | None = None  # the clip as the model heard it while it arrived
        self._heard_batches = 0  # batches of audio tokens handed to the model so far
        self._listening: asyncio.Task | None = None  # the listening step in flight, if any
        self._refused = False
        self._wake: WakeListener | None = None  # after `detect`: the audio is for the wake word
        self._streamed: bool | None = None  # a streamed synthesis: None (none), False (no audio sent yet), True
        self._splitter: SentenceSplitter | None = None

    async def run(self) -> None:
        """The base loop, with an idle timeout and malformed input treated as a goodbye."""
        self._is_running = True
        try:
            while self._is_running:
                event = await asyncio.wait_for(async_read_event(self.reader), self.service.settings.idle_timeout_s)
                if event is None or not await self.handle_event(event):
                    break
        except TimeoutError:
            log.info("dropped %s: idle for %.0f s", self.peer, self.service.settings.idle_timeout_s)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, asyncio.IncompleteReadError) as exc:
            log.info("dropped %s: malformed event (%s)", self.peer, exc)
        except (ConnectionError, OSError):
            pass  # the client went away
        finally:
            await self.disconnect()
            self.writer.close()

    async def handle_event(self, event: Event) -> bool:
        try:
            return await self._handle(event)
        except EdgeError as exc:
            await self.write_event(Error(text=str(exc), code=type(exc).__name__).event())
            return True  # a failed request, not a failed connection

    async def _handle(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.write_event(self.service.info.event())
        elif Transcribe.is_type(event.type):
            transcribe = Transcribe.from_event(event)
            self.language = (transcribe.language or self.language or "en").split("-")[0].lower()
            self.context = transcribe.context
        elif Detect.is_type(event.type):  # the audio that follows is for the wake word, not for speech to text
            self._wake = WakeListener(Detect.from_event(event).names)
        elif AudioStart.is_type(event.type):
            self._audio, self._refused = bytearray(), False
            self._hearing, self._heard_batches = tasks.Hearing(language_name(self.language)), 0
        elif AudioChunk.is_type(event.type):
            if self._wake is not None:
                return await self._listen_for_wake(AudioChunk.from_event(event))
            return await self._chunk(AudioChunk.from_event(event))
        elif AudioStop.is_type(event.type):
            if self._wake is not None:
                wake, self._wake, self._audio = self._wake, None, None
                if not wake.detected:
                    await self.write_event(NotDetected().event())
                wake.close()
                return True
            return await self._audio_stop()
        elif Transcript.is_type(event.type):
            await self._converse(Transcript.from_event(event))
        elif Synthesize.is_type(event.type):
            if self._streamed is None:  # HA also sends the whole text to a server that is streaming: once is enough
                await self._synthesize(Synthesize.from_event(event).text)
        elif SynthesizeStart.is_type(event.type):
            self._streamed, self._splitter = False, SentenceSplitter()
        elif SynthesizeChunk.is_type(event.type) and self._streamed is not None:
            for sentence in self._splitter.feed(SynthesizeChunk.from_event(event).text):
                await self._speak(sentence)
        elif SynthesizeStop.is_type(event.type) and self._streamed is not None:
            for sentence in self._splitter.flush():
                await self._speak(sentence)
            if self._streamed:
                await self.write_event(AudioStop().event())
            self._streamed = None
            await self.write_event(SynthesizeStopped().event())
        return True

    async def _listen_for_wake(self, chunk: AudioChunk) -> bool:
        for name, at_ms in self._wake.feed(self._converter.convert(chunk).audio):
            await self.write_event(Detection(name=name, timestamp=at_ms).event())
        return True

    async def _chunk(self, chunk: AudioChunk) -> bool:
        if self._audio is None:
            await self.write_event(Error(text="audio-chunk before audio-start", code="protocol").event())
            return False
        if self._refused:
            return True
        if not (1 <= chunk.width <= 4 and 1 <= chunk.channels <= 8 and 1000 <= chunk.rate <= 192_000):
            await self.write_event(
                Error(
                    text=f"unsupported audio format {chunk.rate} Hz, {chunk.width} bytes, {chunk.channels} channels",
                    code="audio_format",
                ).event()
            )
            return False
        self._audio += self._converter.convert(chunk).audio
        self._listen_ahead()
        if len(self._audio) / (RATE * WIDTH) > self.service.settings.max_audio_seconds:
            self._refused = True
            await self.write_event(
                Error(
                    text=f"audio over {self.service.settings.max_audio_seconds:.0f} s is not "
                    "transcribed; send shorter utterances",
                    code="audio_too_long",
                ).event()
            )
        return True

    def _listen_ahead(self) -> None:
        """While the user still speaks, hand the model each new batch of audio tokens (one step in
        flight at a time, so a slow board takes bigger steps, never a queue): at audio-stop only the
        tail is left. A step refused (the queue is full) or failed costs only speed."""
        if self._listening is not None and not self._listening.done():
            return
        seconds = len(self._audio) / (RATE * WIDTH)
        batches = int((seconds - ROW_S) / LISTEN_STEP_S)  # the last row waits for audio still to come
        if batches <= self._heard_batches or seconds > MAX_CLIP_SECONDS:
            return
        pcm, hearing = _floats(self._audio), self._hearing
        try:
            job = self._submit(lambda job: tasks.listen(self.service.worker.resources, hearing, pcm))
        except EdgeError:
            return
        self._heard_batches = batches
        self._listening = asyncio.create_task(self._listened(job))

    async def _listened(self, job) -> None:
        try:
            await job.result()
        except Exception as exc:  # noqa: BLE001  (the transcription at audio-stop hears the whole clip)
            log.info("listening ahead for %s failed (%s); the clip is heard at its end", self.peer, exc)

    async def _audio_stop(self) -> bool:
        audio, refused, self._audio = self._audio, self._refused, None
        hearing, self._hearing = self._hearing, None
        if audio is None:
            await self.write_event(Error(text="audio-stop before audio-start", code="protocol").event())
            return False
        if refused:
            return True
        started = time.perf_counter()
        pcm = _floats(audio)
        first, result = None, None
        if len(pcm) < RATE // 10:
            text = ""
        else:
            await self.write_event(TranscriptStart(language=self.language, context=self.context).event())
            cap = self.service.settings.transcript_tokens
            job = self._submit(
                lambda job: tasks.transcribe(self.service.worker.resources, pcm, job, cap, hearing=hearing)
            )
            pieces = []
            async for event in job.stream():
                match event:
                    case TextEvent(piece) if piece:
                        first = first or time.perf_counter()
                        pieces.append(piece)
                        await self.write_event(TranscriptChunk(text=(" " if len(pieces) > 1 else "") + piece).event())
                    case ErrorEvent(error):
                        raise error if isinstance(error, EdgeError) else EdgeError(f"transcription failed: {error}")
                    case DoneEvent(done):
                        result = done
            await self.write_event(TranscriptStop().event())
            text = " ".join(pieces)
        await self.write_event(Transcript(text=text, language=self.language, context=self.context).event())
        self.service.log.write(
            "transcribe",
            started,
            first,
            audio_seconds=round(len(pcm) / RATE, 3),
            audio_tokens=result.audio_tokens if result else 0,
            audio_tokens_early=result.audio_tokens_early if result else 0,
            prompt_tokens=result.prompt_tokens if result else 0,
            prompt_reused=result.prompt_reused if result else 0,
            prompt_seconds=round(result.prompt_seconds, 3) if result else 0.0,
            tokens=result.tokens if result else 0,
            decode_tps=_rounded(result.generation_tps if result else None),
        )
        return True

    async def _converse(self, transcript: Transcript) -> None:
        started, first = time.perf_counter(), None
        context = transcript.context or {}
        text = (transcript.text or "").strip()
        if not text:
            await self.write_event(NotHandled(text="I did not hear anything.", context=context).event())
            return
        key = str(context.get("conversation_id") or context.get("satellite_id") or self.peer)
        conversation = self.service.conversation(key)
        asked: Message = {"role": "user", "content": text}
        sampling = GEMMA_SAMPLING.with_(max_tokens=self.service.settings.max_tokens)
        control = self.service.settings.home_control
        tools = ToolSetup(HA_INTENTS, "required" if control == "always" else "auto") if control != "off" else None
        messages = conversation.history + [asked]
        job = self._submit(lambda job: tasks.chat(self.service.worker.resources, messages, None, sampling, job, tools))
        await self.write_event(HandledStart(context=context).event())
        reply, calls, result = "", [], None
        async for event in job.stream():
            match event:
                case TextEvent(piece) if piece:
                    first = first or time.perf_counter()
                    reply += piece
                    await self.write_event(HandledChunk(text=piece).event())
                case CallEvent(call):
                    first = first or time.perf_counter()
                    calls.append(call)
                case ErrorEvent(error):
                    raise error if isinstance(error, EdgeError) else EdgeError(f"the reply failed: {error}")
                case DoneEvent(done):
                    result = done
        await self.write_event(HandledStop().event())
        reply = reply.strip()
        if calls:
            await self._intents(calls, reply, context)
            answer = with_results(calls, [{"status": "sent to Home Assistant"}] * len(calls), reply or "Done.")
        else:
            await self.write_event(Handled(text=reply, context=context).event())
            answer = {"role": "assistant", "content": reply}
        # Old turns the budget dropped stay dropped; this turn joins what was kept.
        conversation.history = (result.kept_history if result else conversation.history) + [asked, answer]
        self.service.log.write(
            "handle",
            started,
            first,
            prompt_tokens=result.prompt_tokens if result else 0,
            prompt_reused=result.prompt_reused if result else 0,
            prompt_seconds=round(result.prompt_seconds, 3) if result else 0.0,
            tokens=result.completion_tokens if result else 0,
            decode_tps=_rounded(result.generation_tps if result else None),
            calls=[c.name for c in calls],
        )

    async def _intents(self, calls, text: str, context: dict) -> None:
        """The model's calls as intents Home Assistant executes (one, or a series)."""
        intents = [
            Intent(
                name=c.name, entities=[Entity(k, v) for k, v in intent_entities(c)], text=text or None, context=context
            )
            for c in calls
        ]
        if len(intents) == 1:
            await self.write_event(intents[0].event())
            return
        await self.write_event(IntentsStart(context=context).event())
        for intent in intents:
            await self.write_event(intent.event())
        await self.write_event(IntentsStop(context=context).event())

    async def _synthesize(self, text: str) -> None:
        started = time.perf_counter()
        pcm, rate = await self._voice(text[:2000])
        first = time.perf_counter()
        await self.write_event(AudioStart(rate=rate, width=WIDTH, channels=CHANNELS).event())
        await self._audio_chunks(pcm, rate)
        await self.write_event(AudioStop().event())
        self.service.log.write(
            "synthesize", started, first, characters=len(text), audio_seconds=round(len(pcm) / rate, 3)
        )

    async def _speak(self, sentence: str) -> None:
        """One sentence of a streamed synthesis: audio-start before the first, chunks for each."""
        pcm, rate = await self._voice(sentence[:2000])
        if not self._streamed:
            await self.write_event(AudioStart(rate=rate, width=WIDTH, channels=CHANNELS).event())
            self._streamed = True
        await self._audio_chunks(pcm, rate)

    async def _voice(self, text: str) -> tuple[np.ndarray, int]:
        backend = self.service.settings.tts
        if backend is None:
            raise EdgeError("this server has no voice: start it with --tts auto, piper or espeak")
        return await asyncio.to_thread(backend.synthesize, text)  # off the event loop; the model is not needed

    async def _audio_chunks(self, pcm: np.ndarray, rate: int) -> None:
        audio = (np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes()
        step = rate * WIDTH // 10  # 100 ms chunks
        for start in range(0, len(audio), step):
            await self.write_event(
                AudioChunk(rate=rate, width=WIDTH, channels=CHANNELS, audio=audio[start : start + step]).event()
            )

    def _submit(self, run):
        from edge.serve.worker import Busy, NotReady

        try:
            return self.service.worker.submit(run)
        except (Busy, NotReady) as exc:
            raise EdgeError(str(exc)) from None


def run_wyoming(
    plan,
    *,
    uri: str,
    settings: WyomingSettings,
    zeroconf_name: str | None = None,
    zeroconf: bool = False,
    on_note=lambda message: None,
) -> None:
    """Serve until SIGINT/SIGTERM (wyoming's server handles both), then free the model."""
    from urllib.parse import urlsplit

    from wyoming.server import AsyncServer

    from edge.serve.server import check_port_free, load_served

    parts = urlsplit(uri)
    if parts.scheme != "tcp" or not parts.hostname or not parts.port:
        raise EdgeError(f"--uri {uri!r} is not tcp://HOST:PORT (e.g. tcp://0.0.0.0:{DEFAULT_PORT})")
    check_port_free(parts.hostname, parts.port)
    worker = ModelWorker(lambda: load_served(plan), max_queue=8)
    worker.start()
    service = WyomingService(worker, settings)

    async def main() -> None:
        server = AsyncServer.from_uri(uri)
        if zeroconf:
            await _announce(parts.port, zeroconf_name, on_note)
        await server.run(service.handler)

    try:
        asyncio.run(main())
    finally:
        worker.stop()


async def _announce(port: int, name: str | None, on_note) -> None:
    """_wyoming._tcp on the LAN, as the other Wyoming servers do, so Home Assistant discovers it."""
    try:
        from wyoming.zeroconf import HomeAssistantZeroconf

        announcer = HomeAssistantZeroconf(port=port, name=name or "edge-gemma")
        await announcer.register_server()
        on_note(f"announced {announcer.name}._wyoming._tcp.local. at {announcer.host}:{port}")
    except (OSError, ImportError) as exc:  # no network for multicast: serve anyway, say why
        on_note(f"zeroconf announcement failed ({exc}); add the service in Home Assistant by host and port")


def _floats(audio: bytes | bytearray) -> np.ndarray:
    """16-bit PCM as the model's float samples."""
    return np.frombuffer(bytes(audio), dtype="<i2").astype(np.float32) / 32768.0


def _rounded(rate: float | None) -> float | None:
    return round(rate, 2) if rate is not None else None
