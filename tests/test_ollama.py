"""`edge-gemma serve` as Ollama's clients see it: the real `ollama` package (what Home Assistant's Ollama
integration is built on) against a real serve process on the tiny Gemma 4 with its projector.

The tiny model's words are noise, so these tests check the API: shapes, streaming, errors, and that a
JSON schema's grammar makes every reply parse and validate whatever the weights say.
"""

import base64
import io
import json

import httpx2 as httpx
import jsonschema
import numpy as np
import ollama
import pytest
from test_serve import KEY, MMPROJ, MODEL, TINY, Server, _photo

from edge.model.tool_calls import ToolCall
from edge.setup.installed import list_installed

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "age": {"type": "integer"},
        "pets": {"type": "array", "items": {"enum": ["cat", "dog", "fish"]}, "maxItems": 3},
        "home": {"type": "object", "properties": {"room": {"enum": ["kitchen", "hall"]}}, "required": ["room"]},
        "awake": {"type": "boolean"},
    },
    "required": ["name", "age", "home", "awake"],
}


@pytest.fixture(scope="module")
def server(llama_cpp_available):
    served = Server("--model", str(MODEL), "--mmproj", str(MMPROJ), "-c", "4096", "--api-key", KEY)
    yield served
    code, err = served.stop()
    assert code == 0 and "Traceback" not in err


def connect(server, key=KEY) -> ollama.Client:
    return ollama.Client(host=server.url, headers={"Authorization": f"Bearer {key}"})


def still_answers(server) -> None:
    reply = connect(server).chat(
        model="gemma4", messages=[{"role": "user", "content": "Hi"}], options={"num_predict": 2}
    )
    assert reply.done and reply.eval_count >= 1


def test_the_ollama_client_lists_shows_and_sees_what_is_loaded(server):
    client = connect(server)
    [listed] = client.list().models
    assert listed.model == "gemma4:e2b" and listed.size == MODEL.stat().st_size
    assert listed.details.format == "gguf" and listed.details.family == "gemma4"
    shown = client.show("gemma4:e2b")
    assert {"completion", "tools", "vision", "audio"} <= set(shown.capabilities)
    assert "<|turn>" in shown.template and shown.modelinfo["general.architecture"] == "gemma4"
    [running] = client.ps().models
    assert running.model == "gemma4:e2b" and running.context_length == 4096 and running.size > listed.size
    headers = {"Authorization": f"Bearer {KEY}"}
    assert httpx.get(server.url + "/api/version", headers=headers).json()["version"]
    assert httpx.get(server.url + "/").text == "Ollama is running"  # how clients probe a base URL


def test_chat_whole_and_streamed_with_ollamas_counts(server):
    client = connect(server)
    asked = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    whole = client.chat(model="gemma4:e2b", messages=asked, options={"num_predict": 6, "temperature": 0})
    assert whole.done and whole.done_reason == "length" and whole.eval_count == 6
    assert whole.message.role == "assistant" and whole.message.content
    assert whole.prompt_eval_count > 10 and whole.total_duration > whole.eval_duration > 0
    parts = list(client.chat(model="gemma4", messages=asked, stream=True, options={"num_predict": 6, "temperature": 0}))
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert "".join(p.message.content for p in parts) == whole.message.content  # greedy: the same words


def test_generate_with_a_system_prompt_raw_and_streamed(server):
    client = connect(server)
    templated = client.generate(model="gemma4:e2b", prompt="Hello", system="Be brief.", options={"num_predict": 4})
    raw = client.generate(model="gemma4:e2b", prompt="Hello", raw=True, options={"num_predict": 4})
    assert templated.done and raw.done and templated.prompt_eval_count > raw.prompt_eval_count
    streamed = list(client.generate(model="gemma4", prompt="Hello", stream=True, options={"num_predict": 3}))
    assert streamed[-1].done and len(streamed) >= 2
    loaded = client.generate(model="gemma4", keep_alive=-1)  # Ollama's "load the model" request
    assert loaded.done and loaded.done_reason == "load"


def test_images_are_seen_as_base64_and_as_bytes(server):
    client = connect(server)
    buffer = io.BytesIO()
    _photo().save(buffer, "PNG")
    asked = [{"role": "user", "content": "What is in this picture?", "images": [buffer.getvalue()]}]
    with_picture = client.chat(model="gemma4", messages=asked, options={"num_predict": 2})
    without = client.chat(model="gemma4", messages=[{"role": "user", "content": "What?"}], options={"num_predict": 2})
    assert with_picture.prompt_eval_count > without.prompt_eval_count + 20  # the picture's tokens
    b64 = base64.b64encode(buffer.getvalue()).decode()
    seen = client.generate(model="gemma4", prompt="Describe it.", images=[b64], options={"num_predict": 2})
    assert seen.prompt_eval_count > 20


def _ha_tool(name: str, description: str) -> dict:
    """A tool as Home Assistant's Ollama integration formats one (probatio's OpenAPI parameters)."""
    target = {"type": "string"}
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {
                    "name": target,
                    "area": target,
                    "floor": target,
                    "domain": {"type": "array", "items": target},
                },
                "required": [],
            },
        },
    }


def test_a_request_shaped_as_home_assistant_sends_it_with_a_tool_round_trip(server):
    """HA's integration: system prompt with the exposed entities, HA's tools, stream=True, keep_alive -1,
    num_ctx, then the tool's result as `role: tool` (no name, no id) after the assistant's call."""
    client = connect(server)
    system = (
        "You are a voice assistant for Home Assistant.\nAn overview of the areas and the devices in this smart home:\n"
        "- names: Kitchen light\n  domain: light\n  state: 'off'\n  areas: Kitchen\n"
    )
    tools = [_ha_tool("HassTurnOn", "Turns on/opens a device or entity"), _ha_tool("GetLiveContext", "Live states")]
    history = [
        {"role": "system", "content": system},
        {"role": "user", "content": "Turn on the kitchen light"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "HassTurnOn", "arguments": {"name": "Kitchen light"}}}],
        },
        {"role": "tool", "content": json.dumps({"data": {"success": [{"name": "Kitchen light"}]}, "error": None})},
    ]
    ask = dict(model="gemma4:e2b", tools=tools, stream=True, keep_alive=-1, options={"num_ctx": 8192, "num_predict": 8})
    parts = list(client.chat(messages=history, **ask))
    assert parts[-1].done and parts[-1].done_reason in ("stop", "length")
    without_result = list(client.chat(messages=history[:2], **ask))
    # The call and its result were rendered into the prompt (Gemma 4's tool turn), not dropped.
    assert parts[-1].prompt_eval_count > without_result[-1].prompt_eval_count + 10


def test_a_call_comes_back_as_ollamas_tool_calls_with_arguments_as_an_object():
    """Random weights never call by themselves and Ollama's API cannot force a call, so the line the
    route writes for a call is parsed here by the `ollama` client's own response type."""
    from edge.serve.ollama_api import chat_line

    call = ToolCall("HassTurnOn", {"name": "Kitchen light", "domain": ["light"]})
    parsed = ollama.ChatResponse(**json.loads(json.dumps(chat_line("gemma4:e2b", calls=[call]))))
    [made] = parsed.message.tool_calls
    assert made.function.name == "HassTurnOn" and made.function.arguments == {
        "name": "Kitchen light",
        "domain": ["light"],
    }


def test_a_json_schema_format_makes_every_reply_validate(server):
    client = connect(server)
    asked = [{"role": "user", "content": "Describe a person as JSON."}]
    for seed in range(1, 11):
        reply = client.chat(model="gemma4", messages=asked, format=PERSON, options={"seed": seed, "num_predict": 300})
        assert reply.done_reason == "stop", reply.message.content
        jsonschema.validate(json.loads(reply.message.content), PERSON)
    # Long fields: llama.cpp takes the bounds as {m,n} repetitions, however large.
    long_text = {
        "type": "object",
        "properties": {"essay": {"type": "string", "maxLength": 8000}},
        "required": ["essay"],
    }
    essay = client.chat(model="gemma4", messages=asked, format=long_text, options={"seed": 1, "num_predict": 40})
    assert essay.message.content.startswith('{"essay"') or essay.message.content.startswith('{ "essay"')
    if essay.done_reason == "stop":
        jsonschema.validate(json.loads(essay.message.content), long_text)
    # "json": any object. Random weights need not close a free-form object, so a reply cut by its
    # token limit is only checked to be an object so far; one that stopped must parse.
    anything = client.generate(
        model="gemma4", prompt="JSON please", format="json", options={"seed": 3, "num_predict": 64}
    )
    assert anything.response.lstrip().startswith("{")
    if anything.done_reason == "stop":
        assert isinstance(json.loads(anything.response), dict)


def test_the_openai_api_takes_the_same_schemas(server):
    from openai import OpenAI

    openai = OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
    schema = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    for seed in (1, 2, 3):
        reply = openai.chat.completions.create(
            model="tiny-gemma-4-E2B.gguf",
            messages=[{"role": "user", "content": "A person, please."}],
            response_format=schema,
            seed=seed,
            max_tokens=300,
        )
        jsonschema.validate(json.loads(reply.choices[0].message.content), PERSON)
    bad = {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "integer", "minimum": 1}}}
    with pytest.raises(Exception) as refused:
        openai.chat.completions.create(
            model="tiny-gemma-4-E2B.gguf", messages=[{"role": "user", "content": "1"}], response_format=bad
        )
    assert refused.value.status_code == 400 and "'minimum'" in str(refused.value)


@pytest.mark.parametrize(
    "path, body, status, words",
    [
        (
            "/api/chat",
            {"model": "llama3", "messages": [{"role": "user", "content": "hi"}]},
            404,
            'model "llama3" not found',
        ),
        (
            "/api/chat",
            {
                "model": "gemma4",
                "messages": [{"role": "user", "content": "hi"}],
                "format": {"type": "object", "properties": {"a": {"type": "integer", "multipleOf": 2}}},
            },
            400,
            "'multipleOf'",
        ),
        (
            "/api/chat",
            {"model": "gemma4", "messages": [{"role": "user", "content": "hi"}], "keep_alive": "soon"},
            400,
            "keep_alive",
        ),
        (
            "/api/chat",
            {"model": "gemma4", "messages": [{"role": "user", "content": "hi", "images": ["not base64!"]}]},
            400,
            "base64",
        ),
        ("/api/chat", {"model": "gemma4", "messages": [{"role": "tool", "content": "{}"}]}, 400, "tool message"),
        ("/api/generate", {"model": "gemma4", "prompt": "hi", "context": [1, 2, 3]}, 400, "context is not supported"),
        ("/api/generate", {"model": "gemma4", "prompt": "hi", "suffix": "end"}, 400, "suffix"),
        ("/api/embed", {"model": "gemma4", "input": "hi"}, 501, "not supported"),
        ("/api/embeddings", {"model": "gemma4", "prompt": "hi"}, 501, "not supported"),
        ("/api/show", {"model": "mistral"}, 404, "not found"),
    ],
)
def test_bad_requests_get_ollamas_error_shape_and_the_server_goes_on(server, path, body, status, words):
    answer = httpx.post(server.url + path, json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert answer.status_code == status, answer.text
    assert list(answer.json()) == ["error"] and words in answer.json()["error"]
    still_answers(server)


def test_the_api_key_guards_the_ollama_api_too(server):
    with pytest.raises(ollama.ResponseError) as refused:
        connect(server, key="wrong").list()
    assert refused.value.status_code == 401 and "API key" in refused.value.error
    malformed = httpx.post(
        server.url + "/api/chat",
        content=b"{not json",
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    assert malformed.status_code == 400 and "error" in malformed.json()
    still_answers(server)


def test_pull_fetches_the_planned_files_from_the_hub_with_progress(fake_hub, llama_cpp_available):
    fake_hub.add_repo(
        "ggml-org/gemma-4-E2B-it-GGUF",
        {
            "gemma-4-E2B-it-Q4_0.gguf": TINY / "tiny-gemma-4-E2B.gguf",
            "gemma-4-E2B-it-Q4_K_M.gguf": TINY / "tiny-gemma-4-E2B.gguf",
            "gemma-4-E2B-it-Q8_0.gguf": TINY / "tiny-gemma-4-E2B.gguf",
            "mmproj-gemma-4-E2B-it-F16.gguf": MMPROJ,
            "mmproj-gemma-4-E2B-it-Q8_0.gguf": MMPROJ,
        },
    )
    served = Server("--model", "demo", "-c", "1024")
    try:
        client = ollama.Client(host=served.url)
        lines = list(client.pull("gemma4:e2b", stream=True))
        assert lines[0].status == "pulling manifest" and lines[-1].status == "success"
        progress = [line for line in lines if line.total]
        assert progress and progress[-1].completed == progress[-1].total
        hub_digests = {"sha256:" + f.sha256 for f in fake_hub.repos["ggml-org/gemma-4-E2B-it-GGUF"].files.values()}
        pulled = {line.digest for line in progress}
        assert len(pulled) == 2 and pulled <= hub_digests  # the model and its projector, as setup plans them
        installed = {m.name for m in list_installed()}
        assert any(n.startswith("gemma-4-E2B-it-") for n in installed) and any(
            n.startswith("mmproj") for n in installed
        )
        with pytest.raises(ollama.ResponseError) as unknown:
            client.pull("llama3:8b")
        assert "file does not exist" in unknown.value.error
        assert client.list().models[0].model == "gemma-3-270m-q4_k_m"  # a pull does not swap the served model
    finally:
        code, err = served.stop()
    assert code == 0 and "Traceback" not in err


def test_served_names_cover_what_ollama_users_type():
    from edge.serve.ollama_routes import served_names

    assert served_names("gemma-4-E4B-it-Q4_K_M.gguf")[:3] == ["gemma4:e4b", "gemma4", "gemma4:latest"]
    assert served_names("google_gemma-4-E2B-it-Q4_K_M.gguf")[0] == "gemma4:e2b"
    assert served_names("gemma-3-270m-q4_k_m.gguf") == ["gemma-3-270m-q4_k_m", "gemma-3-270m-q4_k_m.gguf"]
    assert np.all([n.startswith(("gemma4", "tiny")) for n in served_names("tiny-gemma-4-E2B.gguf")[:4]])
