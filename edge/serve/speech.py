"""`POST /v1/audio/speech`: OpenAI's text to speech, in this board's voice (Piper, or espeak-ng).

Any OpenAI client can make the board talk: `model` and `voice` are taken whatever they say (tts-1,
alloy... fall back to the one voice served, as transcriptions take whisper-1); `response_format`
wav, flac, mp3 or pcm (16-bit little-endian mono at 24 kHz, OpenAI's pcm); `speed` 0.25 to 4.
pcm streams sentence by sentence, so playback can start before the whole text is spoken.
Synthesis runs on its own thread: it never waits for the model, nor the model for it.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from typing import Literal

import numpy as np
from fastapi import FastAPI
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from edge.audio.resample import resample
from edge.audio.tts import SentenceSplitter, clean_for_speech
from edge.audio.tts_backends import TTSBackend
from edge.serve.api_error import ApiError

PCM_RATE = 24_000  # what OpenAI's pcm format is
MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg", "pcm": "audio/pcm"}
SOUNDFILE_FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "mp3": ("MP3", "MPEG_LAYER_III")}


class SpeechRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    input: str = Field(min_length=1, max_length=4096)
    voice: str | dict | None = None
    response_format: Literal["wav", "flac", "mp3", "pcm", "opus", "aac"] = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)


def add_speech_route(app: FastAPI, tts: TTSBackend | None) -> None:
    @app.post("/v1/audio/speech")
    async def speech(body: SpeechRequest):
        if tts is None:
            raise ApiError(
                503, "this server has no voice: start it with --tts auto, piper or espeak", type_="server_error"
            )
        if body.response_format not in MEDIA_TYPES:
            raise ApiError(
                400, f"{body.response_format} is not made here; ask for wav, flac, mp3 or pcm", param="response_format"
            )
        text = clean_for_speech(body.input)
        if not text:
            raise ApiError(400, "input has nothing to say", param="input")
        if body.response_format == "pcm":
            return StreamingResponse(_pcm_stream(tts, text, body.speed), media_type=MEDIA_TYPES["pcm"])
        pcm, rate = await asyncio.to_thread(tts.synthesize, text, speed=body.speed)
        return Response(_encode(pcm, rate, body.response_format), media_type=MEDIA_TYPES[body.response_format])


async def _pcm_stream(tts: TTSBackend, text: str, speed: float) -> AsyncIterator[bytes]:
    splitter = SentenceSplitter()
    for sentence in splitter.feed(text + " ") + splitter.flush():
        pcm, rate = await asyncio.to_thread(tts.synthesize, sentence, speed=speed)
        yield _int16(resample(pcm, rate, PCM_RATE) if rate != PCM_RATE else pcm)


def _encode(pcm: np.ndarray, rate: int, fmt: str) -> bytes:
    import soundfile

    container, subtype = SOUNDFILE_FORMATS[fmt]
    out = io.BytesIO()
    soundfile.write(out, np.clip(pcm, -1, 1), rate, format=container, subtype=subtype)
    return out.getvalue()


def _int16(pcm: np.ndarray) -> bytes:
    return (np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes()
