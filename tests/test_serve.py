"""`edge-gemma serve` as other programs see it: the real `openai` client and raw HTTP on 127.0.0.1.

Servers run as real `edge-gemma serve` processes: the demo model for text, the tiny Gemma 4 with its
audio projector for audio in. Raw HTTP (httpx2, which the openai client is built on) covers what the
client would never send.
"""

import base64
import os
import signal
import subprocess
import sys
import threading
import time

import httpx2 as httpx  # the HTTP library the openai client is built on
import numpy as np
import pytest
from audio_support import require_espeak, silence, speech
from cli_helpers import free_port
from conftest import FIXTURES

from edge.audio.files import save_wav

TINY = FIXTURES / "gemma4-tiny"
MODEL, MMPROJ = TINY / "tiny-gemma-4-E2B.gguf", TINY / "mmproj-tiny-gemma-4-E2B.gguf"
KEY = "test-key-123"


class Server:
    def __init__(self, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "serve", "--port", str(self.port), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            assert self.proc.poll() is None, self.proc.stderr.read()
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("the server did not become ready")

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, err


@pytest.fixture(scope="module")
def text_server(demo_gguf, llama_cpp_available):
    server = Server(
        "--model", "demo", "-c", "2048", "--max-queue", "2", "--max-body-mb", "1", "--max-audio-seconds", "5"
    )
    yield server
    code, err = server.stop()
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def audio_server(llama_cpp_available):
    server = Server("--model", str(MODEL), "--mmproj", str(MMPROJ), "-c", "4096", "--api-key", KEY)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory):
    require_espeak()
    path = tmp_path_factory.mktemp("serve") / "question.wav"
    save_wav(path, np.concatenate([silence(0.3), speech("What is the capital of France?"), silence(0.5)]))
    return path


def client(server, key="unused"):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def test_the_openai_client_streams_a_chat_reply_and_lists_the_model(text_server):
    openai = client(text_server)
    assert [m.id for m in openai.models.list().data] == ["gemma-3-270m-q4_k_m.gguf"]
    stream = openai.chat.completions.create(
        model="gemma-3-270m-q4_k_m.gguf",
        max_tokens=16,
        temperature=0,
        messages=[{"role": "user", "content": "Name a colour."}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].usage.completion_tokens >= 1 and chunks[-1].usage.prompt_tokens > 5
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")


def test_a_plain_reply_has_usage_and_its_seed_repeats_after_other_requests(text_server):
    openai = client(text_server)
    ask = dict(
        model="gemma-3-270m-q4_k_m",
        max_tokens=24,
        temperature=0.9,
        seed=7,
        messages=[
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Count from one to ten in words."},
        ],
    )
    first = openai.chat.completions.create(**ask)
    # Other requests fill the cache with a longer prompt sharing this one's prefix, and other draws.
    longer = dict(
        ask,
        messages=ask["messages"] + [{"role": "assistant", "content": "One."}, {"role": "user", "content": "Go on."}],
    )
    openai.chat.completions.create(**dict(longer, seed=None))
    openai.chat.completions.create(**dict(ask, seed=8))
    second = openai.chat.completions.create(**ask)
    assert first.choices[0].message.content == second.choices[0].message.content  # same seed, same text
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    completion = openai.completions.create(
        model="gemma-3-270m-q4_k_m.gguf", prompt="The capital of France is", max_tokens=8, temperature=0
    )
    assert completion.choices[0].text.strip() and completion.usage.prompt_tokens >= 5


def test_a_stop_string_ends_the_reply_and_is_not_returned(text_server):
    openai = client(text_server)
    ask = dict(model="gemma-3-270m-q4_k_m.gguf", max_tokens=16, temperature=0, prompt="1, 2, 3, 4, 5,")
    free = openai.completions.create(**ask).choices[0].text
    assert " 8" in free
    stopped = openai.completions.create(**ask, stop=[" 8"]).choices[0]
    assert stopped.text == free[: free.index(" 8")] and stopped.finish_reason == "stop"


def test_an_input_audio_reply_repeats_with_its_seed_and_differs_across_seeds(audio_server, question_wav):
    openai = client(audio_server, KEY)
    audio = base64.b64encode(question_wav.read_bytes()).decode()

    def ask(seed: int, instruction: str = "Answer the question.") -> str:
        parts = [
            {"type": "text", "text": instruction},
            {"type": "input_audio", "input_audio": {"data": audio, "format": "wav"}},
        ]
        reply = openai.chat.completions.create(
            model="tiny-gemma-4-E2B.gguf",
            max_tokens=12,
            temperature=1.0,
            seed=seed,
            messages=[{"role": "user", "content": parts}],
        )
        return reply.choices[0].message.content

    first = ask(21)
    ask(22, "Say what you heard.")  # another audio turn fills the cache in between
    assert ask(21) == first
    assert len({first, ask(1), ask(2), ask(3)}) > 1


def test_an_input_audio_turn_and_a_transcription_on_gemma_4(audio_server, question_wav):
    openai = client(audio_server, KEY)
    audio = base64.b64encode(question_wav.read_bytes()).decode()
    reply = openai.chat.completions.create(
        model="tiny-gemma-4-E2B.gguf",
        max_tokens=8,
        temperature=0,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Answer the question."},
                    {"type": "input_audio", "input_audio": {"data": audio, "format": "wav"}},
                ],
            }
        ],
    )
    assert reply.choices[0].message.content is not None and reply.usage.prompt_tokens > 50  # 2.5 s = 60+ audio tokens
    with question_wav.open("rb") as f:
        transcript = openai.audio.transcriptions.create(
            model="whisper-1", file=f, response_format="verbose_json", language="en"
        )
    assert transcript.duration > 2 and len(transcript.segments) == 1
    with question_wav.open("rb") as f:
        srt = openai.audio.transcriptions.create(model="tiny-gemma-4-E2B.gguf", file=f, response_format="srt")
    assert srt.startswith("1\n00:00:00,")
    metrics = httpx.get(audio_server.url + "/metrics").text
    assert "edge_gemma_audio_seconds_total" in metrics and 'status="200"' in metrics


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert set(body) == {"message", "type", "param", "code"} and body["message"]
    assert "Traceback" not in response.text and "/work" not in response.text and "/tmp" not in response.text
    return body


def test_bad_requests_get_their_status_and_an_openai_error(text_server):
    url = text_server.url + "/v1/chat/completions"
    good = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    error_of(httpx.post(url, content=b"{not json", headers={"content-type": "application/json"}), 400)
    error_of(httpx.post(url, json={"messages": "hi"}), 422)
    error_of(httpx.post(url, json={**good, "max_tokens": "many"}), 422)
    error_of(httpx.post(url, json={**good, "temperature": 9}), 422)
    assert error_of(httpx.post(url, json={**good, "model": "gpt-4o"}), 404)["code"] == "model_not_found"
    assert error_of(httpx.post(url, json={**good, "model": "/etc/passwd"}), 404)["param"] == "model"
    part = {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}
    error_of(httpx.post(url, json={"messages": [part]}), 400)
    part["content"][0]["input_audio"]["data"] = base64.b64encode(b"this is not audio").decode()
    error_of(httpx.post(url, json={"messages": [part]}), 400)
    part["content"][0]["input_audio"]["data"] = "%%%not-base64%%%"
    error_of(httpx.post(url, json={"messages": [part]}), 400)
    error_of(httpx.post(url, json={"messages": [{"role": "user", "content": [{"type": "video"}]}]}), 400)
    error_of(httpx.post(url, content=b"x" * (2 * 2**20), headers={"content-type": "application/json"}), 413)
    error_of(httpx.post(text_server.url + "/v1/nothing-here", json={}), 404)
    # The model is text only: audio gets a clear 400, and a long clip is refused by its length first.
    wav = base64.b64encode(_wav_bytes(np.zeros(16000 * 8, dtype=np.float32))).decode()
    part["content"][0]["input_audio"]["data"] = wav
    assert error_of(httpx.post(url, json={"messages": [part]}), 413)["code"] == "audio_too_long"
    huge = {"messages": [{"role": "user", "content": "word " * 5000}], "max_tokens": 4}
    assert error_of(httpx.post(url, json=huge, timeout=60), 400)["code"] == "context_length_exceeded"
    assert httpx.post(url, json=good, timeout=60).status_code == 200  # and the server is fine


def _wav_bytes(pcm: np.ndarray) -> bytes:
    import io
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((pcm * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def test_a_wrong_or_missing_key_is_401(audio_server):
    url = audio_server.url + "/v1/models"
    assert error_of(httpx.get(url), 401)["type"] == "authentication_error"
    error_of(httpx.get(url, headers={"Authorization": "Bearer nope"}), 401)
    assert httpx.get(url, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert httpx.get(audio_server.url + "/health").status_code == 200  # health needs no key


def test_a_client_leaving_mid_stream_stops_its_generation(text_server):
    url = text_server.url + "/v1/chat/completions"
    long = {
        "messages": [{"role": "user", "content": "Write a very long story."}],
        "max_tokens": 2000,
        "temperature": 1.0,
        "stream": True,
    }
    with httpx.stream("POST", url, json=long, timeout=60) as response:
        for n, _ in enumerate(response.iter_lines()):
            if n > 5:
                break  # hang up after a few chunks
    reply = httpx.post(url, json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}, timeout=60)
    assert reply.status_code == 200  # the next request is answered
    metrics = dict(
        line.rsplit(" ", 1)
        for line in httpx.get(text_server.url + "/metrics").text.splitlines()
        if line and not line.startswith("#")
    )
    # The abandoned story was stopped, not written out to its 2,000 tokens behind the client's back.
    assert int(metrics["edge_gemma_cancelled_total"]) >= 1
    assert int(metrics["edge_gemma_completion_tokens_total"]) < 1000


def test_a_full_queue_answers_503_with_retry_after(text_server):
    url = text_server.url + "/v1/chat/completions"
    slow = {"messages": [{"role": "user", "content": "Write a long story."}], "max_tokens": 300, "temperature": 1}
    statuses, lock = [], threading.Lock()

    def call():
        response = httpx.post(url, json=slow, timeout=120)
        with lock:
            statuses.append((response.status_code, response.headers.get("retry-after")))

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (503, "2") in statuses  # --max-queue 2: the rest are refused, not left waiting
    assert sum(1 for s, _ in statuses if s == 200) >= 2
    assert {s for s, _ in statuses} <= {200, 503}


def test_sigterm_drains_and_exits_cleanly(demo_gguf, llama_cpp_available):
    server = Server("--model", "demo", "-c", "1024")
    code, err = server.stop()
    assert code in (0, 128 + signal.SIGTERM) and "Traceback" not in err and "crashed" not in err


def test_sigterm_during_a_streamed_reply_finishes_it_then_exits_cleanly(llama_cpp_available):
    server = Server("--model", str(MODEL), "-c", "2048")
    url = server.url + "/v1/chat/completions"
    story = {"messages": [{"role": "user", "content": "A long story."}], "max_tokens": 400, "seed": 3, "stream": True}
    chunks = []
    with httpx.stream("POST", url, json=story, timeout=120) as response:
        for line in response.iter_lines():
            chunks.append(line)
            if len(chunks) == 5:
                server.proc.send_signal(signal.SIGTERM)  # mid-reply: the worker is decoding
    code, err = server.proc.wait(timeout=120), server.proc.stderr.read()
    assert code == 0 and "Traceback" not in err and "crashed" not in err, err
    assert [c for c in chunks if c][-1] == "data: [DONE]"  # the reply in flight was finished (graceful drain)


def test_a_port_in_use_is_one_line(text_server):
    from cli_helpers import assert_one_line_error, edge_gemma

    assert_one_line_error(
        edge_gemma("serve", "--model", "demo", "--port", str(text_server.port)),
        f"cannot listen on 127.0.0.1:{text_server.port}",
        "--port",
    )


def test_the_systemd_unit_passes_systemd_analyze(tmp_path, monkeypatch):
    import shutil

    from conftest import require

    from edge.serve.systemd_units import unit_for

    require(shutil.which("systemd-analyze") is not None, "systemd-analyze (apt-get install systemd)")
    for kind in ("serve", "voice"):
        unit = unit_for(kind, user_mode=False, args=("--port", "8000"))
        path = tmp_path / unit.name
        path.write_text(unit.text)
        done = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
        problems = [line for line in done.stderr.splitlines() if unit.name in line]
        assert done.returncode == 0 and not problems, done.stderr
        assert "Restart=on-failure" in unit.text and "--port 8000" in unit.text
    assert "SupplementaryGroups=audio" in unit_for("voice", user_mode=False).text


def test_an_api_key_goes_to_a_private_environment_file_not_the_unit(tmp_path, monkeypatch):
    import stat

    from edge.serve import systemd_units as service

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(service, "systemd_running", lambda: False)  # write the files, print the commands
    unit = service.unit_for("serve", user_mode=True, args=("--host", "0.0.0.0", "--api-key", "s3cret"))
    assert "s3cret" not in unit.text and "--host 0.0.0.0" in unit.text
    assert f"EnvironmentFile=-{unit.env_path}" in unit.text and "NoNewPrivileges=yes" in unit.text
    lines = service.install(unit)
    assert any("0600" in line for line in lines)
    assert unit.env_path.read_text() == "EDGE_GEMMA_API_KEY=s3cret\n"
    assert stat.S_IMODE(unit.env_path.stat().st_mode) == 0o600
    assert "s3cret" not in unit.path.read_text()
    assert "ProtectSystem=full" in service.unit_for("serve", user_mode=False).text  # system units are sandboxed
    service.uninstall(unit)
    assert not unit.env_path.exists() and not unit.path.exists()


# --- tool calls through the real openai client ----------------------------------------------------

LIGHTS = {
    "type": "function",
    "function": {
        "name": "set_light",
        "description": "Turn a light on or off",
        "parameters": {
            "type": "object",
            "properties": {"room": {"type": "string"}, "on": {"type": "boolean"}},
            "required": ["room", "on"],
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time", "description": "The time now", "parameters": {}}}
HOME = [{"role": "user", "content": "Turn on the kitchen light."}]


def _call_args(call) -> dict:
    import json

    return json.loads(call.function.arguments)


def test_a_named_tool_choice_returns_a_valid_call_streamed_and_not(audio_server):
    openai = client(audio_server, KEY)
    ask = dict(
        model="tiny-gemma-4-E2B.gguf",
        messages=HOME,
        tools=[LIGHTS, CLOCK],
        tool_choice={"type": "function", "function": {"name": "set_light"}},
        parallel_tool_calls=False,
        max_tokens=300,
        seed=3,
    )
    reply = openai.chat.completions.create(**ask)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    args = _call_args(call)
    assert call.type == "function" and call.function.name == "set_light" and call.id.startswith("call_")
    assert set(args) == {"room", "on"} and isinstance(args["room"], str) and isinstance(args["on"], bool)
    assert not choice.message.content
    chunks = list(openai.chat.completions.create(**ask, stream=True))
    deltas = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    assert len(deltas) == 1 and deltas[0].index == 0 and deltas[0].function.name == "set_light"
    assert _call_args(deltas[0]) == args  # same seed, same call
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ""


def test_required_calls_some_tool_and_a_result_gets_a_text_answer(audio_server):
    openai = client(audio_server, KEY)
    reply = openai.chat.completions.create(
        model="tiny-gemma-4-E2B.gguf",
        messages=HOME,
        tools=[LIGHTS, CLOCK],
        tool_choice="required",
        max_tokens=300,
        seed=5,
    )
    calls = reply.choices[0].message.tool_calls
    assert calls and all(c.function.name in ("set_light", "get_time") for c in calls)
    history = HOME + [
        {"role": "assistant", "content": None, "tool_calls": [c.model_dump() for c in calls]},
        *[{"role": "tool", "tool_call_id": c.id, "content": '{"ok": true}'} for c in calls],
    ]
    answer = openai.chat.completions.create(
        model="tiny-gemma-4-E2B.gguf",
        messages=history,
        tools=[LIGHTS, CLOCK],
        tool_choice="none",
        max_tokens=12,
        seed=1,
    )
    message = answer.choices[0].message
    assert answer.choices[0].finish_reason in ("stop", "length") and not message.tool_calls
    assert "<|" not in (message.content or "") and answer.usage.prompt_tokens > 20


def test_auto_and_none_never_put_call_markup_in_content(audio_server):
    openai = client(audio_server, KEY)
    for choice in ("auto", "none"):
        for seed in (1, 2):
            reply = openai.chat.completions.create(
                model="tiny-gemma-4-E2B.gguf",
                messages=HOME,
                tools=[LIGHTS],
                tool_choice=choice,
                max_tokens=40,
                seed=seed,
                temperature=1.0,
            )
            content = reply.choices[0].message.content or ""
            assert "<|tool_call>" not in content and "<tool_call|>" not in content and "call:set_light{" not in content


def test_bad_tools_and_unknown_forced_names_are_400(audio_server):
    from openai import BadRequestError

    openai = client(audio_server, KEY)
    bad = [
        dict(tools=[{"type": "function", "function": {"name": "bad name"}}]),
        dict(tools=[LIGHTS], tool_choice={"type": "function", "function": {"name": "open_door"}}),
        dict(tools=[{"type": "function", "function": {"name": "x", "parameters": {"type": "strnig"}}}]),
        dict(tool_choice="required"),
    ]
    for extra in bad:
        with pytest.raises(BadRequestError) as err:
            openai.chat.completions.create(model="tiny-gemma-4-E2B.gguf", messages=HOME, max_tokens=4, **extra)
        assert err.value.status_code == 400 and err.value.body["message"]


# --- the board's voice: /v1/audio/speech --------------------------------------------------------------


def test_speech_answers_the_openai_client_with_audio_in_each_format(text_server, tmp_path):
    import io

    import soundfile

    openai = client(text_server)
    for fmt in ("wav", "flac", "mp3"):
        reply = openai.audio.speech.create(
            model="tts-1", voice="alloy", input="The kitchen light is on.", response_format=fmt
        )
        path = tmp_path / f"speech.{fmt}"
        reply.write_to_file(path)
        pcm, rate = soundfile.read(path, dtype="float32")
        assert rate == 22050 and 0.8 < len(pcm) / rate < 5 and np.abs(pcm).max() > 0.05
    slow = openai.audio.speech.create(
        model="tts-1", voice="nova", input="The kitchen light is on.", response_format="wav", speed=0.5
    )
    slow_pcm, _ = soundfile.read(io.BytesIO(slow.content), dtype="float32")
    assert len(slow_pcm) > 1.5 * len(pcm)  # speed 0.5: twice as long
    with openai.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="First sentence here. And a second one.", response_format="pcm"
    ) as streamed:
        pieces = list(streamed.iter_bytes())
    audio = np.frombuffer(b"".join(pieces), dtype="<i2")
    assert len(audio) / 24000 > 1.5 and np.abs(audio).max() > 1000  # 16-bit at 24 kHz, two sentences


def test_speech_refuses_what_it_cannot_make(text_server):
    from openai import APIStatusError

    openai = client(text_server)
    for extra in (dict(response_format="opus"), dict(input=""), dict(speed=9.0)):
        ask = dict(model="tts-1", voice="alloy", input="Hello.") | extra
        with pytest.raises(APIStatusError) as err:
            openai.audio.speech.create(**ask)
        assert err.value.status_code in (400, 422) and err.value.body["message"]


# -- pictures ----------------------------------------------------------------------------------------


def _data_url(image, fmt="PNG") -> str:
    import io

    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def _photo(width=400, height=300):
    from PIL import Image

    rng = np.random.default_rng(7)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8))


def test_image_url_answers_with_its_image_tokens_and_the_picture_stays_cached(audio_server):
    from edge.vision.images import budget_size

    openai = client(audio_server, KEY)
    model = openai.models.list().data[0].id
    shown = {"type": "image_url", "image_url": {"url": _data_url(_photo())}}
    asked = [{"role": "user", "content": [shown, {"type": "text", "text": "What is this?"}]}]
    first = openai.chat.completions.create(model=model, messages=asked, max_tokens=3)
    w, h = budget_size(400, 300, 140, 48)  # the generic profile's budget
    tokens = (w // 48) * (h // 48)
    assert first.usage.prompt_tokens_details.image_tokens == tokens
    assert first.usage.prompt_tokens > tokens
    # The next turn re-sends the picture, as chat clients do: found in the KV cache, not evaluated again.
    follow_up = asked + [
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "And the colours?"},
    ]
    second = openai.chat.completions.create(model=model, messages=follow_up, max_tokens=3)
    assert second.usage.prompt_tokens_details.image_tokens == tokens
    assert second.usage.prompt_tokens_details.cached_tokens > tokens
    low = {"type": "image_url", "image_url": {"url": _data_url(_photo(), "JPEG"), "detail": "low"}}
    stream = openai.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": [low]}],
        max_tokens=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [chunk.usage for chunk in stream if chunk.usage][-1]
    w, h = budget_size(400, 300, 70, 48)
    assert usage.prompt_tokens_details.image_tokens == (w // 48) * (h // 48)
    metrics = httpx.get(audio_server.url + "/metrics").text
    seen = next(line for line in metrics.splitlines() if line.startswith("edge_gemma_image_tokens_total "))
    assert int(seen.split()[1]) >= 2 * tokens + (w // 48) * (h // 48)


def test_a_spoken_question_about_a_picture(audio_server, question_wav):
    from edge.vision.images import budget_size

    openai = client(audio_server, KEY)
    audio = base64.b64encode(question_wav.read_bytes()).decode()
    content = [
        {"type": "image_url", "image_url": {"url": _data_url(_photo())}},
        {"type": "input_audio", "input_audio": {"data": audio, "format": "wav"}},
    ]
    reply = openai.chat.completions.create(
        model="tiny-gemma-4-E2B.gguf", max_tokens=4, messages=[{"role": "user", "content": content}]
    )
    w, h = budget_size(400, 300, 140, 48)
    images = (w // 48) * (h // 48)
    assert reply.usage.prompt_tokens_details.image_tokens == images
    assert reply.usage.prompt_tokens > images + 50  # and 2.5 s of speech: 60+ audio tokens


def test_bad_images_are_400s_that_say_what_to_send(audio_server, text_server):
    url = audio_server.url + "/v1/chat/completions"
    auth = {"Authorization": f"Bearer {KEY}"}

    def ask(image_url, role="user", server_url=url):
        part = {"type": "image_url", "image_url": image_url}
        return httpx.post(server_url, json={"messages": [{"role": role, "content": [part]}]}, headers=auth, timeout=60)

    never = error_of(ask({"url": "https://example.com/cat.jpg"}), 400)
    assert never["code"] == "image_url_not_fetched" and "data URL" in never["message"]
    assert "data URL" in error_of(ask({"url": "file:///etc/passwd"}), 400)["message"]
    text = "data:image/png;base64," + base64.b64encode(b"hello, I am text").decode()
    assert error_of(ask({"url": text}), 400)["code"] == "invalid_image"
    whole = _data_url(_photo())
    header, data = whole.split(",")
    cut = header + "," + data[: len(data) // 2 // 4 * 4]  # valid base64 of half a PNG
    assert "truncated" in error_of(ask({"url": cut}), 400)["message"]
    assert "base64" in error_of(ask({"url": "data:image/png;base64,@@@"}), 400)["message"]
    assert error_of(ask({"url": "data:text/plain;base64,aGk="}), 400)["param"] == "messages[0].content[0]"
    assert "detail" in error_of(ask({"url": whole, "detail": "huge"}), 400)["message"]
    assert "user messages" in error_of(ask({"url": whole}, role="system"), 400)["message"]
    many = [{"type": "image_url", "image_url": {"url": whole}}] * 9
    body = {"messages": [{"role": "user", "content": many}]}
    assert "at most" in error_of(httpx.post(url, json=body, headers=auth), 400)["message"]
    # A text-only model: the picture is refused, not dropped.
    small = _data_url(_photo(40, 30))
    assert (
        "cannot see"
        in error_of(ask({"url": small}, server_url=text_server.url + "/v1/chat/completions"), 400)["message"]
    )
    assert ask({"url": whole}).status_code == 200  # and the server is fine


def test_the_first_request_after_a_restart_finds_its_system_turn_cached(llama_cpp_available):
    """The system turn's state is kept on disk (prefixes.py): a restarted server reports it in
    usage.prompt_tokens_details.cached_tokens on its very first request."""
    system = "You are the assistant of a house with many rooms. " * 30  # well over the 128 tokens kept
    ask = dict(
        model="tiny-gemma-4-E2B.gguf",
        max_tokens=2,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": "Hello."}],
    )
    usages = []
    for _ in range(2):
        served = Server("--model", str(MODEL), "-c", "2048", "--api-key", KEY)
        try:
            usages.append(client(served, KEY).chat.completions.create(**ask).usage)
        finally:  # stopped at once: the state being written is finished before the model is freed
            served.stop()
    first, after_restart = usages
    assert first.prompt_tokens_details.cached_tokens <= 2
    assert after_restart.prompt_tokens_details.cached_tokens > 300  # the system turn, put back
