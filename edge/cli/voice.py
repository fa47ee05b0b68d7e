"""The `voice` and `transcribe` commands: click only, the work is in voice.py / voice_loop.py."""

from __future__ import annotations

import contextlib
import queue
import threading
from pathlib import Path

import click

from edge.cli import options
from edge.errors import AudioError, UsageError

_load_options = options.load_options(model_help=options.GEMMA4_MODEL_HELP)


@contextlib.contextmanager
def _conversation(plan, system_prompt=None):
    from edge.launch import ProjectorUse, load_model
    from edge.voice.audio_conversation import DEFAULT_SYSTEM_PROMPT, AudioConversation

    with load_model(plan, ProjectorUse.HEARING) as loaded:
        yield AudioConversation(
            loaded, system_prompt=system_prompt if system_prompt is not None else DEFAULT_SYSTEM_PROMPT
        )


@click.command()
@click.argument("file", type=click.Path(path_type=Path))
@_load_options
@click.option("--language", default="English", show_default=True, help="Language spoken in the file.")
@click.option(
    "--max-seconds", type=click.FloatRange(min=1), default=600, show_default=True, help="Refuse longer files."
)
def transcribe(file, load, language, max_seconds):
    """Write down what is said in an audio file (WAV, FLAC or MP3; any rate or channels).

    Speech is cut into clips of at most 30 s at pauses (the model's limit) and each is transcribed.

    \b
    Examples:
      edge-gemma transcribe meeting.wav
      edge-gemma transcribe --language German interview.mp3 > interview.txt
    """
    from edge.audio.files import load_audio
    from edge.audio.vad import segment

    pcm = load_audio(file, max_seconds=max_seconds)  # check the file before loading the model
    clips = segment(pcm)
    if not clips:
        raise AudioError(f"{file} has no speech in it (only silence or steady noise)")
    with _conversation(options.prepared(load), system_prompt="") as conversation:
        for clip in clips:
            text = conversation.transcribe(clip.pcm, language=language).run()
            click.echo(" ".join(text.split()))


@click.command()
@_load_options
@click.option("--list-devices", is_flag=True, help="List audio input and output devices and exit.")
@click.option("-i", "--input", "input_device", help="Microphone: index or (part of a) name.")
@click.option("-o", "--output", "output_device", help="Speaker: index or (part of a) name.")
@click.option(
    "--file",
    "input_file",
    type=click.Path(path_type=Path),
    help="Read speech from a file, not the mic, at speaking pace (as a microphone would hear it).",
)
@click.option("--fast", is_flag=True, help="With --file: read it as fast as the model answers, not at speaking pace.")
@options.tts
@options.voice
@click.option("--push-to-talk", is_flag=True, help="Press Enter to start and to stop talking.")
@click.option(
    "--max-seconds",
    type=click.FloatRange(min=1, max=30),
    default=30,
    show_default=True,
    help="Longest clip (the model hears at most 30 s).",
)
@click.option(
    "--pre-roll",
    type=click.FloatRange(min=0, max=2),
    default=0.3,
    show_default=True,
    help="Seconds kept before speech starts.",
)
@click.option(
    "--silence",
    type=click.FloatRange(min=0.05, max=5),
    default=0.7,
    show_default=True,
    help="Seconds of silence that end a turn.",
)
@click.option(
    "--reply-after",
    type=click.FloatRange(min=0, max=5),
    default=0.15,  # edge.voice.loop.SPECULATE_AFTER_S (not imported: it pulls numpy into --help)
    show_default=True,
    help="Start replying after this long a pause; if you go on talking before --silence, that reply is "
    "dropped (0: wait for --silence).",
)
@click.option(
    "--tools",
    "tool_groups",
    default="all",
    show_default=True,
    help="Tools the assistant may use, comma-separated: time, timers, calculator, camera; or all, none.",
)
@click.option(
    "--camera",
    help="Let the assistant look when asked (the camera tool takes one frame per question, never more): "
    "an index (0), /dev/videoN, picamera2, a video file or a folder of images.",
)
@click.option(
    "-w",
    "--wake-word",
    default="none",
    show_default=True,
    help="Answer only after this name: okay_nabu, hey_jarvis, alexa, hey_mycroft, hey_rhasspy, a .tflite, or none; "
    "micro:NAME or open:NAME chooses microWakeWord or openWakeWord.",
)
@click.option(
    "--follow-up",
    type=click.FloatRange(min=0, max=60),
    default=6.0,
    show_default=True,
    help="With a wake word: seconds after a reply in which you can go on without it (0: always say it).",
)
@click.option("--no-chime", is_flag=True, help="With a wake word: no sound when it is heard.")
@click.option(
    "--vad",
    type=click.Choice(["micro", "energy"]),
    default="micro",
    show_default=True,
    help="What hears speech: micro (Home Assistant's trained VAD with the level test; ignores music and "
    "steady noise) or energy (the level over the noise floor alone).",
)
@click.option(
    "--noise-suppression",
    type=click.IntRange(0, 4),
    default=0,
    show_default=True,
    help="WebRTC noise suppression on the microphone, 0 (off) to 4 (strongest): for a mic across the room.",
)
@click.option(
    "--auto-gain",
    type=click.IntRange(0, 31),
    default=0,
    show_default=True,
    help="WebRTC automatic gain on the microphone, target dBFS below full scale (0: off).",
)
@click.option(
    "--barge-in",
    type=click.Choice(["voice", "name", "off"]),
    default="voice",
    show_default=True,
    help="What stops a reply: your voice (headphones, or a loudspeaker with --echo-cancel), the wake word "
    "(a loudspeaker the microphone hears), or nothing.",
)
@click.option("--no-barge-in", is_flag=True, hidden=True, help="The same as --barge-in off.")
@click.option(
    "--echo-cancel",
    type=click.Choice(["auto", "on", "off"]),
    help="Take what the speaker plays out of what the microphone hears (Speex's adaptive filter). auto: on when "
    "replies are played while a live microphone listens. Default: the device profile's (echo_cancel), else auto.",
)
@click.option(
    "--listen-while-speaking/--no-listen-while-speaking",
    default=True,
    show_default=True,
    help="Encode and prefill your speech as it arrives, so only the last second is left when you stop.",
)
@click.option("-s", "--system", "system_prompt", help="System prompt.")
@click.option("--verbose", is_flag=True, help="Print each turn's numbers.")
@click.option("--log", "log_path", type=click.Path(path_type=Path), help="Append each turn's numbers (JSONL).")
@click.option("--max-turns", type=click.IntRange(min=1), help="Stop after this many replies.")
@click.option(
    "-n", "--max-tokens", type=click.IntRange(min=1), default=256, show_default=True, help="Longest reply, in tokens."
)
@click.option(
    "--forget-after",
    type=click.FloatRange(min=0),
    default=300,
    show_default=True,
    help="Start a fresh conversation after this many seconds of quiet (0: never).",
)
@click.option(
    "--device-wait",
    type=click.FloatRange(min=0),
    default=600,
    show_default=True,
    help="When the microphone goes away, wait this long for it to come back (0: exit at once, non-zero).",
)
def voice(
    load,
    list_devices,
    input_device,
    output_device,
    input_file,
    fast,
    tts,
    tts_voice,
    push_to_talk,
    max_seconds,
    pre_roll,
    silence,
    reply_after,
    tool_groups,
    camera,
    wake_word,
    follow_up,
    no_chime,
    vad,
    noise_suppression,
    auto_gain,
    barge_in,
    no_barge_in,
    echo_cancel,
    listen_while_speaking,
    system_prompt,
    verbose,
    log_path,
    max_turns,
    max_tokens,
    forget_after,
    device_wait,
):
    """Talk to Gemma offline: it hears your voice natively and speaks its replies.

    Hands-free by default: a turn starts when you speak and ends after a pause. Ctrl-C quits.
    It can tell the time and date, keep several named timers (announced aloud when they ring)
    and do arithmetic; --tools chooses which.

    \b
    Examples:
      edge-gemma voice
      edge-gemma voice --push-to-talk --input USB
      edge-gemma voice --tts none --verbose --log turns.jsonl
      edge-gemma voice --file question.wav --tts none
      edge-gemma voice --tools timers,time
      edge-gemma voice --wake-word hey_jarvis --voice joe
    """
    from edge.audio.capture import FileSource, MicrophoneSource
    from edge.audio.devices import list_input_devices, list_output_devices
    from edge.audio.playback import SoundDeviceSink
    from edge.audio.reconnect import ReconnectingMicrophone
    from edge.audio.tts import Speaker, make_tts_backend
    from edge.audio.vad import EndpointConfig, Endpointer, PushToTalk
    from edge.model.engine import GEMMA_SAMPLING
    from edge.voice.loop import VoiceLoop

    if list_devices:
        for kind, devices in (("input", list_input_devices()), ("output", list_output_devices())):
            for d in devices:
                click.echo(f"{kind:<6} {d.index:>3}  {d.name}")
        return
    from edge.assist.toolbox import Toolbox
    from edge.audio.wake import WakeWord, check_wake_word

    toolbox = Toolbox(tool_groups, camera=camera)  # an unknown name fails here, before the model loads
    if camera is not None:
        from edge.vision.camera import open_camera

        with open_camera(camera):  # a camera that is not there fails now, not at the first question
            pass
    if barge_in == "name" and wake_word == "none":
        raise UsageError("--barge-in name stops a reply when the wake word is heard: choose one with --wake-word")
    wake = None
    if wake_word != "none":
        check_wake_word(wake_word)
        if push_to_talk:
            raise AudioError("--wake-word and --push-to-talk both decide when you speak: use one of them")
        wake = WakeWord(wake_word)
    config = EndpointConfig(pre_roll_s=pre_roll, trailing_silence_s=silence, max_seconds=max_seconds, detector=vad)
    backend = make_tts_backend(tts, voice=tts_voice)  # checks the voice before the model loads

    def say(message: str) -> None:
        click.echo(f"\nnote: {message}", err=True)

    plan = options.prepared(load)  # before any device opens: the profile may choose the echo canceller
    if echo_cancel is None:  # the profile's choice holds where it applies: a file needs no canceller
        echo_cancel = plan.choice.profile.echo_cancel if input_file is None and tts != "none" else "auto"
    reference = _echo_reference(echo_cancel, live=not input_file, speaking=tts != "none")
    wake_audio = None
    if input_file:
        source = FileSource(input_file, realtime=not fast)  # a recording is heard as it is: no cleanup
    else:
        source = ReconnectingMicrophone(MicrophoneSource(input_device), wait_s=device_wait or 0, on_event=say)
        if reference is not None:  # the echo out first, then noise and gain (WebRTC's own order)
            from edge.audio.echo import EchoCanceller, echo_cancelled
            from edge.audio.echo_memory import device_key, remember_delay, remembered_delay

            devices = device_key(input_device, output_device)  # the last session's delay: no search at the start
            canceller = EchoCanceller(reference, remembered_delay(devices), lambda d: remember_delay(devices, d))
            source = echo_cancelled(source, canceller)
            wake_audio = lambda: canceller.linear  # noqa: E731 - the wake word hears the linear filter's output
        if noise_suppression or auto_gain:
            from edge.audio.cleanup import NoiseCleaner, cleaned

            source = cleaned(source, NoiseCleaner(noise_suppression, auto_gain))
    sink = SoundDeviceSink(output_device, reference=reference) if tts != "none" else None
    with (
        _conversation(plan, system_prompt) as conversation,
        contextlib.nullcontext() if verbose else native_stderr_silenced(),
        source,
        sink or contextlib.nullcontext(),
    ):
        loop = VoiceLoop(
            conversation,
            source,
            endpointer=Endpointer(config),
            sink=sink,
            speaker_factory=(lambda s: Speaker(backend, s)) if sink else None,
            barge_in="off" if no_barge_in else barge_in,
            on_text=lambda piece: click.echo(piece, nl=False),
            on_turn=lambda stats: _show_turn(stats, verbose),
            on_note=say,
            log_path=log_path,
            sampling=GEMMA_SAMPLING.with_(max_tokens=max_tokens),
            forget_after_s=forget_after or None,
            speculate_after_s=reply_after if 0 < reply_after < silence else None,
            toolbox=toolbox or None,
            wake=wake,
            follow_up_s=follow_up,
            chime=not no_chime,
            listen_while_speaking=listen_while_speaking,
            wake_audio=wake_audio,
        )
        ptt = PushToTalk(pre_roll_s=pre_roll, max_seconds=max_seconds) if push_to_talk else None
        toggles: queue.SimpleQueue = queue.SimpleQueue()
        if ptt is not None:
            threading.Thread(target=_enter_toggles, args=(toggles,), daemon=True).start()
        hint = " (Enter to talk, Enter to stop)" if ptt else f' (say "{wake.phrase}" first)' if wake else ""
        click.echo(f"Listening{hint}. Ctrl-C quits.", err=True)
        loop.run(max_turns=max_turns, push_to_talk=ptt, toggles=toggles)


def _show_turn(stats, verbose: bool) -> None:
    click.echo()
    if stats.heard:
        click.echo(f"  (heard: {stats.heard})", err=True)
    for call in stats.tool_calls:
        click.echo(f"  (used {call})", err=True)
    if stats.image_tokens:
        click.echo(
            f"  (looked: {stats.image_tokens} image tokens, encoded in {stats.image_encode_ms:.0f} ms)", err=True
        )
    if verbose:
        sound = f"{stats.first_sound_s:.2f} s" if stats.first_sound_s is not None else "-"
        click.echo(
            f"  [speech {stats.speech_s:.1f} s | end-point {stats.endpoint_delay_s * 1000:.0f} ms | "
            f"encode {stats.audio_encode_ms:.0f} ms, {stats.audio_tokens} audio tok "
            f"({stats.audio_tokens_early} heard while you spoke) | "
            f"prompt {stats.prompt_tokens} tok ({stats.prompt_reused} cached){_rate(stats.prompt_tps)} | "
            f"first token {_seconds(stats.first_token_s)} after you stopped | decode{_rate(stats.decode_tps)} | "
            f"first sound {sound}"
            + (f" | context: dropped {stats.dropped_turns} old turns" if stats.dropped_turns else "")
            + "]",
            err=True,
        )
        if stats.timeline:  # when each stage happened, in ms after you stopped talking
            stages = " > ".join(f"{name} {s * 1000:.0f}" for name, s in stats.timeline.items())
            share = f" | pipeline {stats.pipeline_s * 1000:.0f} ms" if stats.pipeline_s is not None else ""
            click.echo(f"  [ms after speech end: {stages}{share}]", err=True)


def _seconds(value: float | None) -> str:
    return f"{value:.2f} s" if value is not None else "-"


def _rate(tps: float | None) -> str:
    return f" @ {tps:.1f} tok/s" if tps is not None else ""


def _enter_toggles(toggles: queue.SimpleQueue) -> None:
    """Push-to-talk from the keyboard: each Enter asks the loop to start or stop a recording."""
    while True:
        try:
            input()
        except EOFError:
            return
        toggles.put("toggle")


@contextlib.contextmanager
def native_stderr_silenced():
    """PortAudio and ALSA print to the C-level stderr (three lines when a device vanishes): send that
    to /dev/null for the session, while Python's own messages still reach the terminal."""
    import os
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    python_stderr = sys.stderr
    os.dup2(devnull, 2)
    sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1)
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = python_stderr
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _echo_reference(mode: str, *, live: bool, speaking: bool):
    """The far end the echo canceller needs, or None when it is off. auto: on when replies are
    played while a live microphone listens (headphones or a loudspeaker: with headphones there is no
    echo to find, and the filter costs about 2% of a core); on: the same, or a one-line error."""
    if mode == "off" or not (live and speaking):
        if mode == "on":
            raise UsageError("--echo-cancel on needs a live microphone and spoken replies (not --file or --tts none)")
        return None
    try:
        import pyaec  # noqa: F401
    except (ImportError, AttributeError, OSError):  # AttributeError: pyaec's library did not load
        if mode == "on":
            raise AudioError("echo cancellation needs pyaec: pip install 'edge-gemma[voice]'") from None
        return None
    from edge.audio.echo import EchoReference

    return EchoReference()
