"""What the assistant can do on its own: the calculator, timers, the clock, and the voice loop using
them on the tiny Gemma 4 (a forced call from random weights), with a timer that rings aloud."""

import json
import time

import numpy as np
import pytest
from audio_support import Recorder, frame_levels, silence, speech
from conftest import FIXTURES

from edge.assist.ha_intents import HA_INTENTS
from edge.assist.toolbox import TOOL_GROUPS, Toolbox, calculate, spoken_duration
from edge.audio.capture import ArraySource
from edge.audio.playback import NullSink
from edge.audio.tts import Speaker
from edge.audio.tts_backends import EspeakBackend
from edge.errors import UsageError
from edge.model.engine import GREEDY, LoadedModel
from edge.model.tool_calls import ToolCall
from edge.model.tool_grammar import call_grammar
from edge.settings import RunSettings
from edge.voice.audio_conversation import AudioConversation
from edge.voice.loop import VoiceLoop

TINY = FIXTURES / "gemma4-tiny"


@pytest.mark.parametrize(
    "expression, value",
    [("2 + 3 * 4", 14), ("(2 + 3) * 4", 20), ("17.5 * 3 + 2", 54.5), ("2^10", 1024), ("-7 % 3", 2), ("sqrt(16)", 4)],
)
def test_the_calculator_does_arithmetic(expression, value):
    assert calculate(expression) == value


@pytest.mark.parametrize("expression", ["__import__('os')", "open('x')", "a + 1", "2 ** 1000", "1 if 1 else 2", ""])
def test_the_calculator_refuses_anything_else(expression):
    with pytest.raises(ValueError):
        calculate(expression)


def test_tools_answer_calls_and_explain_bad_ones():
    now = [100.0]
    box = Toolbox("all", clock=lambda: now[0])
    assert {s.name for s in box.specs} == {"get_time", "start_timer", "list_timers", "cancel_timer", "calculate"}
    assert box.run(ToolCall("calculate", {"expression": "6 * 7"})) == {"result": 42}
    assert "error" in box.run(ToolCall("calculate", {"expression": "1/0"}))
    assert set(box.run(ToolCall("get_time", {}))) == {"time", "weekday", "date"}
    assert box.run(ToolCall("start_timer", {"minutes": 10, "name": "pasta"})) == {
        "started": "pasta",
        "duration": "10 minutes",
    }
    box.run(ToolCall("start_timer", {"seconds": 30}))
    now[0] = 110.0
    listed = box.run(ToolCall("list_timers", {}))["timers"]
    assert listed == [{"name": "timer 1", "left": "20 seconds"}, {"name": "pasta", "left": "9 minutes and 50 seconds"}]
    assert [t.name for t in box.timers.due(131.0)] == ["timer 1"] and box.timers.due(131.0) == []
    assert box.run(ToolCall("cancel_timer", {"name": "pasta"})) == {"cancelled": ["pasta"]}
    assert "error" in box.run(ToolCall("cancel_timer", {"name": "pasta"}))
    assert "error" in box.run(ToolCall("start_timer", {}))  # no duration
    assert "error" in box.run(ToolCall("open_door", {}))
    assert spoken_duration(3725) == "1 hour and 2 minutes and 5 seconds"


def test_tool_groups_are_chosen_by_name():
    assert [s.name for s in Toolbox("calculator").specs] == ["calculate"]
    assert not Toolbox("none") and Toolbox("time,timers")
    with pytest.raises(UsageError, match="choose from " + ", ".join(TOOL_GROUPS)):
        Toolbox("weather")


def test_every_tool_and_intent_makes_a_grammar():
    for specs in (Toolbox("all").specs, HA_INTENTS):
        grammar = call_grammar(specs, lazy=False)
        assert all(f'<|tool_call> "call:{s.name}"' in grammar.gbnf for s in specs)


# --- in the voice loop, on the tiny Gemma 4 -------------------------------------------------------


@pytest.fixture(scope="module")
def conversation(llama_cpp_available):
    settings = RunSettings(n_ctx=4096, n_threads=2, n_threads_batch=2, n_batch=256, n_ubatch=256)
    with LoadedModel(TINY / "tiny-gemma-4-E2B.gguf", settings) as loaded:
        loaded.attach_projector(TINY / "mmproj-tiny-gemma-4-E2B.gguf")
        yield AudioConversation(loaded, system_prompt="You are a kitchen assistant.")


def test_a_forced_timer_call_starts_a_timer_and_the_reply_goes_on(conversation):
    conversation.forget()
    box = Toolbox("timers,time")
    stream = np.concatenate([silence(0.5), speech("Set a timer for ten minutes for the pasta."), silence(1.5)])
    loop = VoiceLoop(conversation, ArraySource(stream), sampling=GREEDY.with_(max_tokens=200), toolbox=box)
    loop.settings.tool_choice = "start_timer"  # random weights would rarely call it by themselves
    [turn] = loop.run()
    assert turn.tool_calls and all(c.startswith("start_timer(") for c in turn.tool_calls)
    for made in turn.tool_calls:  # each call's arguments are valid; one with a duration started a timer
        args = json.loads(made[len("start_timer(") : -1])
        seconds = 3600 * args.get("hours", 0) + 60 * args.get("minutes", 0) + args.get("seconds", 0)
        assert set(args) <= {"hours", "minutes", "seconds", "name"}
        if seconds:
            assert any(t.seconds == seconds for t in box.timers.running())
    # The call and its result stay in the history, as the template writes a model turn.
    answer = conversation.history[-1]
    assert answer["role"] == "assistant" and answer["tool_calls"][0]["function"]["name"] == "start_timer"
    assert answer["tool_responses"][0]["name"] == "start_timer" and answer["content"]
    prompt = conversation.loaded.chat_prompt(conversation.history + [{"role": "user", "content": "and?"}]).text
    assert "<|tool_call>call:start_timer{" in prompt and "<|tool_response>response:start_timer{" in prompt


def test_a_timer_rings_aloud_even_between_turns(conversation, tmp_path):
    conversation.forget()
    box = Toolbox("timers")
    box.run(ToolCall("start_timer", {"seconds": 2, "name": "tea"}))  # as the model would, at stream time 0
    sink = NullSink(realtime=True)
    notes: list[str] = []
    loop = VoiceLoop(
        conversation,
        ArraySource(silence(4.0), realtime=True),
        sink=sink,
        speaker_factory=lambda s: Speaker(EspeakBackend(), s),
        sampling=GREEDY.with_(max_tokens=4),
        toolbox=box,
        on_note=notes.append,
    )
    with sink:
        assert loop.run() == []  # no turn: nobody spoke
    assert loop.rung == ["tea"] and any("timer rang: tea" in n for n in notes)
    assert loop.speaker.spoken == ["Your tea timer is done."] and sink.played_seconds > 0.5
    assert box.timers.running() == []


def test_a_ringing_timer_reaches_the_pulseaudio_null_sink(conversation, null_sink):
    from edge.audio.capture import MicrophoneSource
    from edge.audio.playback import SoundDeviceSink

    box = Toolbox("timers")
    box.run(ToolCall("start_timer", {"seconds": 1, "name": "eggs"}))
    with MicrophoneSource() as mic, Recorder(mic) as rec, SoundDeviceSink() as out:
        rec.wait_for_audio(0.3)
        start = len(rec.audio)
        loop = VoiceLoop(
            conversation,
            ArraySource(silence(5.0), realtime=True),
            sink=out,
            speaker_factory=lambda s: Speaker(EspeakBackend(), s),
            toolbox=box,
        )
        loop.run()
        time.sleep(0.5)
    assert loop.rung == ["eggs"]
    loud = np.nonzero(frame_levels(rec.audio[start:]) > -35)[0]
    assert len(loud) > 50  # half a second and more of speech came out of the sink


def test_the_camera_tool_needs_a_camera_and_all_leaves_it_out_without_one(tmp_path):
    assert "look" not in [s.name for s in Toolbox("all").specs]
    assert "look" in [s.name for s in Toolbox("all", camera=str(tmp_path)).specs]
    with pytest.raises(UsageError, match="--camera"):
        Toolbox("camera")
    result = Toolbox("camera", camera=str(tmp_path / "gone")).run(ToolCall("look", {}))
    assert "no camera" in result["error"]  # the model hears what went wrong; nothing crashes


def test_a_forced_look_shows_one_frame_to_the_model_in_the_same_turn(conversation, tmp_path):
    from PIL import Image

    from edge.model.engine.cache_record import picture_keys
    from edge.model.tool_turn import SHOWN_BELOW
    from edge.vision.images import read_image

    conversation.forget()
    rng = np.random.default_rng(3)
    Image.fromarray((rng.random((240, 320, 3)) * 255).astype(np.uint8)).save(tmp_path / "frame.png")
    box = Toolbox("camera", camera=str(tmp_path))  # a folder of images stands in for the camera
    stream = np.concatenate([silence(0.5), speech("What am I holding?"), silence(1.5)])
    loop = VoiceLoop(conversation, ArraySource(stream), sampling=GREEDY.with_(max_tokens=24), toolbox=box)
    loop.settings.tool_choice = "look"
    [turn] = loop.run()
    assert turn.tool_calls and all(c == "look({})" for c in turn.tool_calls)
    assert turn.image_tokens == 19 * 14 * len(turn.tool_calls) and turn.image_encode_ms > 0  # 4:3 at 280 tokens
    # The frame went into the KV cache after the call's result, whole, in the same model turn.
    loaded = conversation.loaded
    frame = loaded.fit_image(read_image(tmp_path / "frame.png"))
    keys = picture_keys(frame.digest, loaded.projector.image_tokens(frame))
    cached = loaded.engine.cached
    start = cached.index(keys[0])
    assert cached[start : start + len(keys)] == keys
    # The history names the picture; it is not kept (the next question does not pay for it again).
    answer = conversation.history[-1]
    assert answer["tool_responses"][0]["response"] == {"picture": SHOWN_BELOW}
    assert "images" not in answer
