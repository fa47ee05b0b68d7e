"""Gemma 4 tool calls: the syntax parser on documented outputs, the schema checks, and grammar-forced
calls on the tiny Gemma 4 (random weights, real tokenizer and chat template)."""

import json
from dataclasses import replace

import pytest
from conftest import FIXTURES

from edge.model.engine import GEMMA_SAMPLING, Grammar, LoadedModel
from edge.model.reply_events import CallEvent
from edge.model.tool_calls import CallSplitter, ToolCall, ToolSchemaError, parse_call, split_reply, tool_specs
from edge.model.tool_grammar import clamp_to_schema
from edge.model.tool_turn import ToolSetup, ToolTurn, results_text, with_results
from edge.settings import RunSettings

TINY = FIXTURES / "gemma4-tiny" / "tiny-gemma-4-E2B.gguf"
Q = '<|"|>'


def fn(name, properties=None, required=(), description="does a thing"):
    params = {"type": "object", "properties": properties or {}, "required": list(required)}
    return {"type": "function", "function": {"name": name, "description": description, "parameters": params}}


LIGHT = fn(
    "set_light",
    {
        "room": {"type": "string", "description": "where"},
        "on": {"type": "boolean"},
        "level": {"type": "integer", "minimum": 0, "maximum": 100},
        "color": {"type": "string", "enum": ["warm", "cold"]},
        "scene": {"type": "object", "properties": {"name": {"type": "string"}, "fade": {"type": "number"}}},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    required=("room", "on"),
)
TIMER = fn("start_timer", {"seconds": {"type": "integer", "minimum": 1, "maximum": 86400}}, required=("seconds",))
CLOCK = fn("get_time")
TOOLS = tuple(tool_specs([LIGHT, TIMER, CLOCK]))


# --- the parser, on outputs in Gemma 4's documented syntax -------------------------------------


@pytest.mark.parametrize(
    "body, name, arguments",
    [
        (f"call:get_weather{{location:{Q}London, UK{Q}}}", "get_weather", {"location": "London, UK"}),
        (
            f'call:note{{text:{Q}a {{brace}}, a [bracket], a "quote" and a comma,{Q}}}',
            "note",
            {"text": 'a {brace}, a [bracket], a "quote" and a comma,'},
        ),
        (
            "call:set{n:3,x:-2.5,e:1e3,ok:true,no:false,nothing:null}",
            "set",
            {"n": 3, "x": -2.5, "e": 1000.0, "ok": True, "no": False, "nothing": None},
        ),
        (
            f"call:plan{{steps:[{Q}a{Q},{Q}b{Q}],where:{{room:{Q}hall{Q},floor:2}},empty:{{}},none:[]}}",
            "plan",
            {"steps": ["a", "b"], "where": {"room": "hall", "floor": 2}, "empty": {}, "none": []},
        ),
        (f"call:quoted_keys{{{Q}key{Q}:1}}", "quoted_keys", {"key": 1}),
        ("call:get_time{}", "get_time", {}),
    ],
)
def test_documented_calls_parse(body, name, arguments):
    call = parse_call(body)
    assert call.name == name and call.arguments == arguments


@pytest.mark.parametrize(
    "body", ["get_time{}", "call:get_time", f"call:x{{a:{Q}open}}", "call:x{a:1", "call:x{a:1}tail", "call:x{a:}"]
)
def test_malformed_calls_are_refused(body):
    from edge.model.tool_calls import CallSyntaxError

    with pytest.raises(CallSyntaxError):
        parse_call(body)


def test_a_reply_with_text_and_several_calls_splits_and_no_markup_reaches_the_text():
    text = (
        f"Sure.<|tool_call>call:set_light{{on:true,room:{Q}kitchen{Q}}}<tool_call|>"
        f"<|tool_call>call:start_timer{{seconds:600}}<tool_call|>"
    )
    reply = split_reply(text)
    assert reply.content == "Sure." and reply.malformed == 0
    assert [c.name for c in reply.calls] == ["set_light", "start_timer"]
    assert reply.calls[0].arguments == {"on": True, "room": "kitchen"}
    assert all(c.id.startswith("call_") for c in reply.calls) and reply.calls[0].id != reply.calls[1].id
    # Streamed in pieces that cut through the markup, the same split comes out, and never markup.
    splitter, shown = CallSplitter(), ""
    for i in range(0, len(text), 3):
        out, _ = splitter.feed(text[i : i + 3])
        shown += out
    shown += splitter.finish()[0]
    assert shown == "Sure." and [c.name for c in splitter.calls] == ["set_light", "start_timer"]
    broken = split_reply("Hi <|tool_call>call:x{a:<tool_call|> there")
    assert broken.content == "Hi  there" and broken.calls == [] and broken.malformed == 1


def test_bad_tool_schemas_are_one_clear_line():
    for tools, says in [
        ([{"type": "function", "function": {"name": "has space"}}], "name"),
        ([fn("a", {"x": {"type": "strnig"}})], "strnig"),
        ([fn("a", {"x": {"type": "string"}}, required=("y",))], "required"),
        ([fn("a"), fn("a")], "second function"),
        ([{"type": "retrieval"}], "type: function"),
        ([fn("a", {"x": {"type": "string", "enum": []}})], "enum"),
    ]:
        with pytest.raises(ToolSchemaError, match=says) as err:
            tool_specs(tools)
        assert "\n" not in str(err.value)
    with pytest.raises(ToolSchemaError, match="not among the tools"):
        ToolSetup(TOOLS, "open_door")


def test_numbers_outside_a_large_range_are_clamped():
    call = clamp_to_schema(ToolCall("start_timer", {"seconds": 999999}), TOOLS)
    assert call.arguments == {"seconds": 86400}


# --- the grammar on the tiny Gemma 4: random weights, valid calls --------------------------------


@pytest.fixture(scope="module")
def tiny(llama_cpp_available):
    with LoadedModel(TINY, RunSettings(n_ctx=4096, n_batch=256, n_ubatch=256)) as loaded:
        yield loaded


ASK = [{"role": "system", "content": "You control a home."}, {"role": "user", "content": "Kitchen light on, please."}]


def valid(call: ToolCall) -> bool:
    """The call matches its declaration: required keys, types, enums, ranges."""
    spec = next(t for t in TOOLS if t.name == call.name)
    props, args = spec.parameters["properties"], call.arguments
    if not set(spec.parameters["required"]) <= set(args) or not set(args) <= set(props):
        return False
    for key, value in args.items():
        kind = props[key]["type"]
        types = {"string": str, "boolean": bool, "integer": int, "number": (int, float), "object": dict, "array": list}
        if not isinstance(value, types[kind]) or (kind == "integer" and isinstance(value, bool)):
            return False
        if "enum" in props[key] and value not in props[key]["enum"]:
            return False
        if kind == "integer" and not props[key].get("minimum", value) <= value <= props[key].get("maximum", value):
            return False
    return True


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_named_choice_gives_a_valid_call_from_random_weights(tiny, seed):
    turn = ToolTurn.chat(tiny, ASK, ToolSetup(TOOLS, "set_light"), GEMMA_SAMPLING.with_(max_tokens=400, seed=seed))
    events = list(turn)
    reply = turn.reply
    assert reply.malformed == 0 and reply.calls and all(c.name == "set_light" and valid(c) for c in reply.calls)
    assert [e for e in events if isinstance(e, CallEvent)] == [CallEvent(c) for c in reply.calls]
    assert "<|" not in reply.content and "call:" not in reply.content


@pytest.mark.parametrize("seed", [4, 5])
def test_a_required_choice_calls_some_declared_tool(tiny, seed):
    turn = ToolTurn.chat(
        tiny, ASK, ToolSetup(TOOLS, "required", parallel=False), GEMMA_SAMPLING.with_(max_tokens=400, seed=seed)
    )
    reply = turn.run()
    assert len(reply.calls) == 1 and valid(reply.calls[0]) and reply.malformed == 0


def test_auto_and_none_never_show_markup(tiny):
    for choice in ("auto", "none"):
        for seed in (6, 7):
            turn = ToolTurn.chat(tiny, ASK, ToolSetup(TOOLS, choice), GEMMA_SAMPLING.with_(max_tokens=48, seed=seed))
            reply = turn.run()
            assert "<|tool_call>" not in reply.content and "<tool_call|>" not in reply.content
            assert all(valid(c) for c in reply.calls)
            if choice == "none":
                assert reply.calls == []


def test_declarations_and_a_tool_result_are_rendered_by_the_template(tiny):
    setup = ToolSetup(TOOLS, "auto")
    prompt = tiny.chat_prompt(ASK, tools=setup.declarations()).text
    assert "<|tool>declaration:set_light{description:" in prompt and prompt.count("<|tool>") == 3
    call = ToolCall("start_timer", {"seconds": 600}, "call_1")
    after = ASK + [with_results([call], [{"started": True, "name": "pasta"}])]
    text = tiny.chat_prompt(after, tools=setup.declarations()).text
    assert "<|tool_call>call:start_timer{seconds:600}<tool_call|>" in text
    assert f"<|tool_response>response:start_timer{{name:{Q}pasta{Q},started:true}}<tool_response|>" in text
    assert not text.rstrip().endswith("<|turn>model")  # the model goes on in the same turn
    turn = ToolTurn.chat(tiny, after, setup, GEMMA_SAMPLING.with_(max_tokens=8, seed=1))
    assert turn.run() is not None and turn.stats.prompt_tokens > 0


def test_results_continue_the_model_turn_in_the_cache_as_the_template_writes_them(tiny):
    setup = ToolSetup(TOOLS, "start_timer", parallel=False)
    first = ToolTurn.chat(tiny, ASK, setup, GEMMA_SAMPLING.with_(max_tokens=300, seed=2))
    [call] = first.run().calls
    before = len(tiny.engine.cached)
    text = results_text(tiny, [call], [{"started": True}])
    assert text.startswith("<|tool_response>response:start_timer{started:true}<tool_response|>")
    assert text.endswith("<|channel>thought\n<channel|>")  # thinking off, the model goes on
    more = ToolTurn.after_results(tiny, [call], [{"started": True}], replace(setup, choice="none"), GEMMA_SAMPLING)
    reply = more.run()
    assert more.stats.prefill.reused == before  # nothing before the results was evaluated again
    assert reply.calls == [] and "<|" not in reply.content


# --- offering tools costs nothing until a call starts; a grammar checks the drawn token first -----


@pytest.mark.parametrize("seed", [5, 8])
def test_offered_tools_leave_every_token_as_it_would_be_without_them(tiny, seed):
    # The lazy call grammar is inert until its trigger token: the same seed writes the same reply.
    prompt = tiny.chat_prompt(ASK, tools=ToolSetup(TOOLS).declarations()).text
    sampling = GEMMA_SAMPLING.with_(max_tokens=200, seed=seed)
    plain = tiny.complete(prompt, sampling, special=True)
    offered = tiny.complete(prompt, ToolSetup(TOOLS).sampling(sampling), special=True)
    assert plain.run() == offered.run() and len(plain.text) > 50
    assert "<|tool_call>" not in offered.text and tiny.engine.last_refusals == 0


def test_a_lazy_grammar_holds_from_its_trigger_token_on(tiny):
    # Greedy text without a grammar; then the same text with a grammar triggered by one of its tokens.
    # From that token on, the grammar must hold although the weights never write what it asks.
    prompt = tiny.chat_prompt(ASK).text
    greedy = GEMMA_SAMPLING.with_(temperature=0, max_tokens=12)
    free = tiny.complete(prompt, greedy, special=True)
    pieces = list(free)
    trigger_at = next(i for i, p in enumerate(pieces) if i >= 3 and len(tiny.engine.tokenize(p, bos=False)) == 1)
    trigger = pieces[trigger_at]
    grammar = Grammar(f"root ::= {json.dumps(trigger)} {json.dumps(' sunny day')}", trigger=trigger)
    held = tiny.complete(prompt, greedy.with_(grammar=grammar, max_tokens=64), special=True)
    assert held.run() == "".join(pieces[: trigger_at + 1]) + " sunny day"
    assert held.stats.finish_reason == "stop"  # the grammar, complete, allowed only the end
    assert tiny.engine.last_refusals >= 1  # the weights' own choices were refused and drawn again


def test_tools_on_a_model_without_the_call_token_are_refused_in_one_line(demo_gguf, llama_cpp_available):
    from edge.errors import UsageError

    with LoadedModel(demo_gguf, RunSettings(n_ctx=512)) as demo:
        for choice in ("auto", "required"):  # the lazy grammar's trigger; a forced call's markup tokens
            setup = ToolSetup(tool_specs([LIGHT]), choice=choice)
            with pytest.raises(UsageError, match="Gemma 4"):
                demo.complete("Hello", setup.sampling(GEMMA_SAMPLING.with_(max_tokens=4))).run()
