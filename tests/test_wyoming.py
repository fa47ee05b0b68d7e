"""`edge-gemma wyoming` spoken to by the `wyoming` package's own client, as Home Assistant does.

The server is a real `edge-gemma wyoming` process on the tiny Gemma 4 with its audio projector; the
client is wyoming's AsyncTcpClient. The tiny model's words are noise: these tests check the protocol.
"""

import asyncio
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from audio_support import require_espeak, silence, speech
from cli_helpers import free_port
from conftest import FIXTURES
from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.handle import Handled, HandledChunk, HandledStart, HandledStop
from wyoming.info import Describe, Info
from wyoming.intent import Intent, IntentsStart, IntentsStop
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped
from wyoming.wake import Detect, Detection, NotDetected

from edge.audio.resample import resample

TINY = FIXTURES / "gemma4-tiny"
MODEL, MMPROJ = TINY / "tiny-gemma-4-E2B.gguf", TINY / "mmproj-tiny-gemma-4-E2B.gguf"


def start(*extra: str):
    require_espeak()
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge.cli",
            "wyoming",
            "-m",
            str(MODEL),
            "--mmproj",
            str(MMPROJ),
            "-c",
            "4096",
            "--uri",
            f"tcp://127.0.0.1:{port}",
            "--idle-timeout",
            "3",
            "--max-audio-seconds",
            "20",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        _wait_until_ready(port, proc)
    except BaseException:
        proc.kill()  # a server that never became ready must not outlive the test
        proc.communicate()
        raise
    return port, proc


def _wait_until_ready(port: int, proc) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        try:
            info = asyncio.run(exchange(port, [Describe().event()], until=Info))
            if info:
                break
        except OSError:
            time.sleep(0.3)
    # The model loads on the worker: wait until a request is answered, not refused as "loading".
    while time.time() < deadline:
        events = asyncio.run(
            exchange(
                port,
                [Transcript(text="hello").event()],
                until=ANSWERS + (Error,),
                timeout=max(1, deadline - time.time()),
            )
        )
        if events and not Error.is_type(events[-1].type):
            return
        time.sleep(0.3)
    raise AssertionError("the Wyoming server did not answer within 120 s")


def stop(proc) -> None:
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err


ANSWERS = (Handled, Intent, IntentsStop)  # a spoken answer, or home control for HA to carry out


@pytest.fixture(scope="module")
def server(llama_cpp_available):
    port, proc = start()
    yield port
    stop(proc)


@pytest.fixture(scope="module")
def control_server(llama_cpp_available):
    """Every request is a home command: the model must call one of HA's intents."""
    port, proc = start("--home-control", "always")
    yield port
    stop(proc)


async def exchange(port: int, events, until, timeout: float = 60.0, pace_s: float = 0.0):
    """Send events (`pace_s` apart, as a microphone streams), then read until one of type `until`
    arrives (or the server hangs up)."""
    received = []
    async with AsyncTcpClient("127.0.0.1", port) as client:
        for event in events:
            await client.write_event(event)
            await asyncio.sleep(pace_s)
        types = until if isinstance(until, tuple) else (until,)
        while True:
            event = await asyncio.wait_for(client.read_event(), timeout)
            if event is None:
                return received
            received.append(event)
            if any(t.is_type(event.type) for t in types):
                return received


def audio_events(pcm: np.ndarray, rate: int, channels: int, chunk_ms: int = 100):
    """16 kHz float speech as Wyoming audio at another rate and channel count, 16-bit."""
    at_rate = resample(pcm, 16000, rate) if rate != 16000 else pcm
    frames = np.repeat((np.clip(at_rate, -1, 1) * 32767).astype("<i2")[:, None], channels, axis=1).tobytes()
    step = rate * 2 * channels * chunk_ms // 1000
    yield AudioStart(rate=rate, width=2, channels=channels).event()
    for start in range(0, len(frames), step):
        yield AudioChunk(rate=rate, width=2, channels=channels, audio=frames[start : start + step]).event()
    yield AudioStop().event()


def test_describe_advertises_asr_handle_and_tts(server):
    [event] = asyncio.run(exchange(server, [Describe().event()], until=Info))
    info = Info.from_event(event)
    assert info.asr[0].models[0].name == "tiny-gemma-4-E2B.gguf" and "en" in info.asr[0].models[0].languages
    assert info.asr[0].supports_transcript_streaming and info.asr[0].attribution.name
    assert info.handle[0].models[0].languages and info.handle[0].supports_handled_streaming
    assert info.handle[0].supports_home_control
    assert info.tts and info.tts[0].voices[0].name == "en_US-joe-medium"  # Piper, in-process
    assert info.tts[0].supports_synthesize_streaming


@pytest.mark.parametrize("rate, channels", [(16000, 1), (44100, 2), (22050, 1)])
def test_speech_at_any_rate_becomes_a_streamed_transcript(server, rate, channels):
    pcm = np.concatenate([silence(0.3), speech("What is the weather like today?"), silence(0.4)])
    events = asyncio.run(
        exchange(server, [Transcribe(language="en").event(), *audio_events(pcm, rate, channels)], until=Transcript)
    )
    kinds = [e.type for e in events]
    assert kinds[0] == TranscriptStart().event().type and TranscriptStop().event().type in kinds
    assert any(TranscriptChunk.is_type(k) for k in kinds)
    transcript = Transcript.from_event(events[-1])
    assert transcript.language == "en" and isinstance(transcript.text, str)


def test_a_conversation_is_handled_with_streaming_events(server):
    context = {"conversation_id": "kitchen"}
    for question in ("Tell me a story.", "And then?"):
        events = asyncio.run(exchange(server, [Transcript(text=question, context=context).event()], until=ANSWERS))
        kinds = [e.type for e in events]
        assert kinds[0] == HandledStart().event().type and HandledStop().event().type in kinds
        if Handled.is_type(kinds[-1]):  # random weights may also call a tool (see the home-control test)
            assert kinds[-2] == HandledStop().event().type and any(HandledChunk.is_type(k) for k in kinds[1:-2])
            assert Handled.from_event(events[-1]).context == context


def test_home_control_answers_with_well_formed_intents(control_server):
    from edge.assist.ha_intents import HA_INTENTS

    slots = {t.name: t.parameters for t in HA_INTENTS}
    context = {"conversation_id": "hall", "satellite_id": "hall-satellite"}
    for question in ("Turn on the kitchen light.", "Now dim it to 30 percent."):
        events = asyncio.run(
            exchange(control_server, [Transcript(text=question, context=context).event()], until=(Intent, IntentsStop))
        )
        kinds = [e.type for e in events]
        assert kinds[0] == HandledStart().event().type and HandledStop().event().type in kinds
        assert not any(Handled.is_type(k) for k in kinds)  # HA speaks the intent's own answer
        intents = [Intent.from_event(e) for e in events if Intent.is_type(e.type)]
        if len(intents) > 1:
            assert IntentsStart.is_type(kinds[kinds.index(Intent(name="x").event().type) - 1])
        for intent in intents:
            schema = slots[intent.name]
            names = [e.name for e in intent.entities]
            assert set(names) <= set(schema["properties"]) and set(schema["required"]) <= set(names)
            assert intent.context == context


def test_synthesize_answers_with_audio(server):
    events = asyncio.run(exchange(server, [Synthesize(text="Hello from the kitchen.").event()], until=AudioStop))
    start, *chunks, stop = events
    assert AudioStart.is_type(start.type) and AudioStop.is_type(stop.type)
    assert sum(len(AudioChunk.from_event(c).audio) for c in chunks) > 16000  # over half a second of speech


def test_streamed_synthesis_speaks_sentence_by_sentence(server):
    """As Home Assistant streams a reply: text in pieces, audio as each sentence completes; the whole
    text sent again as `synthesize` (for servers that cannot stream) is not spoken twice."""
    pieces = ["The kitchen ", "light is on. ", "The timer ", "has ten minutes left."]
    events = [SynthesizeStart().event(), *[SynthesizeChunk(text=p).event() for p in pieces]]
    events += [Synthesize(text="".join(pieces)).event(), SynthesizeStop().event()]
    received = asyncio.run(exchange(server, events, until=SynthesizeStopped))
    kinds = [e.type for e in received]
    assert sum(map(AudioStart.is_type, kinds)) == 1 and sum(map(AudioStop.is_type, kinds)) == 1
    assert SynthesizeStopped.is_type(kinds[-1]) and AudioStop.is_type(kinds[-2])
    chunks = [AudioChunk.from_event(e) for e in received if AudioChunk.is_type(e.type)]
    seconds = sum(len(c.audio) for c in chunks) / (chunks[0].rate * 2)
    assert 2.0 < seconds < 8.0  # both sentences, once


def test_a_satellite_streaming_its_microphone_gets_wake_word_detections(server):
    from edge.audio.piper import PiperBackend
    from edge.audio_format import SAMPLE_RATE

    piper = PiperBackend("joe")

    def said(text: str) -> np.ndarray:
        pcm, rate = piper.synthesize(text)
        return np.concatenate([silence(0.5), resample(pcm, rate, SAMPLE_RATE), silence(0.5)])

    [info] = asyncio.run(exchange(server, [Describe().event()], until=Info))
    wake = Info.from_event(info).wake
    assert wake and "hey_jarvis" in [m.name for m in wake[0].models]
    named = [Detect(names=["hey_jarvis"]).event(), *audio_events(said("Hey Jarvis."), 16000, 1)]
    events = asyncio.run(exchange(server, named, until=(Detection, NotDetected)))
    detection = Detection.from_event(events[-1])
    assert Detection.is_type(events[-1].type) and detection.name == "hey_jarvis" and 500 < detection.timestamp < 3000
    plain = [Detect(names=["hey_jarvis"]).event(), *audio_events(said("What time is it?"), 44100, 2)]
    events = asyncio.run(exchange(server, plain, until=(Detection, NotDetected)))
    assert NotDetected.is_type(events[-1].type)
    # Both engines are offered by name; the one asked for is the one that answers.
    assert {"micro:okay_nabu", "open:okay_nabu", "open:hey_rhasspy"} <= {m.name for m in wake[0].models}
    for engine in ("micro", "open"):
        asked = [Detect(names=[f"{engine}:okay_nabu"]).event(), *audio_events(said("Okay Nabu."), 16000, 1)]
        events = asyncio.run(exchange(server, asked, until=(Detection, NotDetected)))
        assert Detection.is_type(events[-1].type) and Detection.from_event(events[-1]).name == f"{engine}:okay_nabu"


def test_bad_clients_are_dropped_without_harming_the_next(server):
    async def raw(payload: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", server)
        writer.write(payload)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)  # until the server closes
        writer.close()
        return data

    assert asyncio.run(raw(b"this is not json\n")) == b""  # malformed: dropped
    chunk = AudioChunk(rate=16000, width=2, channels=1, audio=b"\0" * 3200).event()
    events = asyncio.run(exchange(server, [chunk], until=Error))  # audio without audio-start
    assert "before audio-start" in Error.from_event(events[-1]).text
    absurd = AudioChunk(rate=0, width=2, channels=1, audio=b"\0" * 10).event()
    events = asyncio.run(exchange(server, [AudioStart(rate=16000, width=2, channels=1).event(), absurd], until=Error))
    assert "unsupported audio format" in Error.from_event(events[-1]).text
    long = np.zeros(16000 * 25, dtype=np.float32)  # over --max-audio-seconds 20
    events = asyncio.run(exchange(server, list(audio_events(long, 16000, 1, chunk_ms=1000)), until=Error))
    assert Error.from_event(events[-1]).code == "audio_too_long"
    started = time.time()
    assert asyncio.run(raw(b"")) == b""  # an idle connection is closed after --idle-timeout (3 s)
    assert time.time() - started < 30
    [event] = asyncio.run(exchange(server, [Describe().event()], until=Info))  # and the service is fine
    assert Info.is_type(event.type)


def test_conversations_are_kept_per_context_and_forgotten_after_quiet():
    from edge.serve.wyoming_service import WyomingService, WyomingSettings

    service = WyomingService(worker=None, settings=WyomingSettings(model_name="m", forget_after_s=0.2))
    kitchen = service.conversation("kitchen")
    kitchen.history.append({"role": "user", "content": "hi"})
    assert service.conversation("kitchen") is kitchen and service.conversation("hall") is not kitchen
    time.sleep(0.3)
    assert service.conversation("kitchen") is not kitchen  # a new day, a new conversation


def test_sigterm_during_a_conversation_exits_cleanly(llama_cpp_available):
    port, proc = start()

    async def ask_then_terminate():
        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(Transcript(text="Tell me a long story.").event())
            first = await asyncio.wait_for(client.read_event(), 60)
            proc.terminate()  # the worker is decoding the answer
            return first

    first = asyncio.run(ask_then_terminate())
    assert first is not None
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "crashed" not in err and "Segmentation" not in err, err


def test_the_request_log_shows_the_declarations_put_back_after_a_transcription(tmp_path, llama_cpp_available):
    import json

    log = tmp_path / "requests.jsonl"
    port, proc = start("--log", str(log))
    try:
        pcm = np.concatenate([silence(0.3), speech("Turn on the kitchen light."), silence(0.4)])
        context = {"conversation_id": "kitchen"}
        for question in ("Turn on the kitchen light.", "And the hall light."):
            asyncio.run(exchange(port, list(audio_events(pcm, 16000, 1)), until=Transcript))
            asyncio.run(exchange(port, [Transcript(text=question, context=context).event()], until=ANSWERS))
        asyncio.run(exchange(port, [Synthesize(text="The light is on.").event()], until=AudioStop))
    finally:
        stop(proc)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    kinds = [r["kind"] for r in records]
    assert kinds[-5:] == ["transcribe", "handle", "transcribe", "handle", "synthesize"]
    first, heard, again = records[-5], records[-4], records[-2]
    assert first["audio_tokens"] > 20 and first["tokens"] > 0 and first["seconds"] > 0
    # The transcription used the cache in between, yet the system turn with HA's intents was put back.
    assert again["prompt_reused"] > 1000 and again["prompt_reused"] >= heard["prompt_reused"]
    assert records[-1]["audio_seconds"] > 0.5


def test_speech_streamed_as_spoken_is_heard_before_it_ends(tmp_path, llama_cpp_available):
    """A satellite streams its microphone: the model hears each batch of audio tokens as it arrives,
    and the transcription at audio-stop reuses them (the log's audio_tokens_early)."""
    import json

    log = tmp_path / "requests.jsonl"
    port, proc = start("--log", str(log))
    try:
        pcm = np.concatenate([silence(0.3), speech("Please turn on the light in the kitchen."), silence(0.4)])
        events = [Transcribe(language="en").event(), *audio_events(pcm, 16000, 1)]
        received = asyncio.run(exchange(port, events, until=Transcript, pace_s=0.05))
        assert Transcript.is_type(received[-1].type)
    finally:
        stop(proc)
    [record] = [json.loads(line) for line in log.read_text().splitlines()][-1:]
    assert record["kind"] == "transcribe" and record["audio_seconds"] > 2
    # Every whole batch (24 tokens) heard before the last one arrived was prefilled early.
    assert 24 <= record["audio_tokens_early"] < record["audio_tokens"]
