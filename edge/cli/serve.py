"""The `serve` and `service` commands: click only; the work is in edge/serve/."""

from __future__ import annotations

import os
from pathlib import Path

import click

from edge.cli import options

API_KEY_ENV = "EDGE_GEMMA_API_KEY"


@click.command()
@options.load_options(model_help=options.GEMMA4_MODEL_HELP)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: the LAN).")
@click.option("-p", "--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--api-key", envvar=API_KEY_ENV, help=f"Require Authorization: Bearer KEY (or set {API_KEY_ENV}).")
@click.option(
    "--max-queue",
    type=click.IntRange(1, 1000),
    default=8,
    show_default=True,
    help="Requests that may wait for the model; more are answered 503.",
)
@click.option("--max-body-mb", type=click.IntRange(1, 2048), default=50, show_default=True)
@click.option("--max-audio-seconds", type=click.FloatRange(1, 3600), default=600, show_default=True)
@options.image_tokens
@click.option(
    "-n",
    "--max-tokens",
    type=click.IntRange(min=1),
    default=512,
    show_default=True,
    help="Reply length when a request does not say.",
)
@options.tts
@options.voice
def serve(
    load,
    host,
    port,
    api_key,
    max_queue,
    max_body_mb,
    max_audio_seconds,
    image_tokens,
    max_tokens,
    tts,
    tts_voice,
):
    """Serve the model over an OpenAI-compatible HTTP API, audio and pictures in, audio out.

    Endpoints: /v1/chat/completions (text, image_url as data: URLs, input_audio, tool calls, streaming),
    /v1/completions, /v1/audio/transcriptions (Gemma 4 writes down the speech), /v1/audio/speech
    (the board's voice), /v1/models, /health, /metrics.
    One model, one worker: requests queue for it; a full queue answers 503.

    \b
    Examples:
      edge-gemma serve
      edge-gemma serve --model demo --port 8000
      EDGE_GEMMA_API_KEY=secret edge-gemma serve --host 0.0.0.0
    """
    from edge.audio.tts import make_tts_backend
    from edge.network import is_loopback
    from edge.serve.app import ServeConfig
    from edge.serve.server import check_port_free
    from edge.serve.server import serve as run_server

    check_port_free(host, port)  # before the model loads
    voice_backend = make_tts_backend(tts, voice=tts_voice) if tts != "none" else None
    plan = options.prepared(load.with_overrides(image_tokens=image_tokens))
    if not is_loopback(host) and not api_key:
        click.echo(
            f"warning: listening on {host} without an API key: anyone on the network can use the model; "
            f"set --api-key or {API_KEY_ENV}",
            err=True,
        )
    config = ServeConfig(
        model_name=plan.model_path.name,
        api_key=api_key or None,
        max_body_bytes=max_body_mb * 2**20,
        max_audio_seconds=max_audio_seconds,
        default_max_tokens=max_tokens,
        tts=voice_backend,
        model_path=plan.model_path,
        n_ctx=plan.resolved.settings.n_ctx,
        memory_bytes=plan.memory.needed_now_bytes if plan.memory is not None else 0,
    )
    shown = f"[{host}]" if ":" in host else host
    click.echo(
        f"Serving {plan.model_path.name} at http://{shown}:{port}/v1 (OpenAI API) and http://{shown}:{port} "
        "(Ollama API). Ctrl-C stops.",
        err=True,
    )
    run_server(plan, host=host, port=port, config=config, max_queue=max_queue)


@click.group()
def service():
    """Run `serve`, `voice` or `worker` as a systemd service that starts at boot and restarts on failure.

    \b
    Examples:
      sudo edge-gemma service install serve -- --host 0.0.0.0
      sudo edge-gemma service install worker -- --host 0.0.0.0 --allow 192.168.1.0/24
      edge-gemma service install voice --user
      edge-gemma service status serve
      edge-gemma service uninstall serve
    """


_user = click.option("--user", "user_mode", is_flag=True, help="A unit in your own systemd (no root needed).")
_kind = click.argument("kind", type=click.Choice(["serve", "voice", "worker"]))


@service.command("install")
@_kind
@_user
@click.option("--print", "print_only", is_flag=True, help="Print the unit and write nothing.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def service_install(kind, user_mode, print_only, args):
    """Write, enable and start the unit; ARGS after -- go to the command (e.g. -- --port 8000)."""
    from edge.serve.systemd_units import install, unit_for

    unit = unit_for(kind, user_mode=user_mode or (os.geteuid() != 0 and print_only), args=tuple(args))
    if print_only:
        click.echo(unit.text, nl=False)
        return
    for line in install(unit):
        click.echo(line)


@service.command("status")
@_kind
@_user
def service_status(kind, user_mode):
    """Whether the unit is installed and running."""
    from edge.serve.systemd_units import status, unit_for

    click.echo(status(unit_for(kind, user_mode=user_mode)))


@service.command("uninstall")
@_kind
@_user
def service_uninstall(kind, user_mode):
    """Stop, disable and remove the unit."""
    from edge.serve.systemd_units import uninstall, unit_for

    for line in uninstall(unit_for(kind, user_mode=user_mode)):
        click.echo(line)


@click.command()
@options.load_options(model_help=options.GEMMA4_MODEL_HELP)
@click.option(
    "--uri",
    default="tcp://127.0.0.1:10700",
    show_default=True,
    help="Where to listen; tcp://0.0.0.0:10700 lets Home Assistant on another machine connect.",
)
@click.option(
    "--zeroconf",
    "zeroconf_name",
    is_flag=False,
    flag_value="edge-gemma",
    default=None,
    help="Announce _wyoming._tcp on the LAN (optionally under NAME) so Home Assistant finds it.",
)
@options.tts
@options.voice
@click.option("--max-audio-seconds", type=click.FloatRange(1, 3600), default=120, show_default=True)
@click.option(
    "--home-control",
    type=click.Choice(["auto", "always", "off"]),
    default="auto",
    show_default=True,
    help="Offer Home Assistant's intents (lights, timers, lists...) to the model: it decides (auto), every "
    "request is a command (always: a control-only satellite), or only talk (off).",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(1, 86400),
    default=120,
    show_default=True,
    help="Drop a connection that sends nothing for this long (seconds).",
)
@click.option("--log", "log_path", type=click.Path(path_type=Path), help="Append each request's numbers (JSONL).")
@click.option(
    "-n", "--max-tokens", type=click.IntRange(min=1), default=512, show_default=True, help="Longest answer, in tokens."
)
@click.option("--transcript-tokens", type=click.IntRange(min=1), default=512, hidden=True)  # measurements
def wyoming(
    load,
    uri,
    zeroconf_name,
    tts,
    tts_voice,
    max_audio_seconds,
    home_control,
    idle_timeout,
    log_path,
    max_tokens,
    transcript_tokens,
):
    """Be Home Assistant's speech-to-text and conversation agent over Wyoming, with Gemma 4.

    Speech to text is Gemma 4 hearing the audio natively; conversations are kept per satellite
    within the context budget; text to speech with espeak-ng. The conversation agent controls the
    home: the model calls Home Assistant's built-in intents (turn on, set brightness, start a timer,
    add to a list...), which Home Assistant carries out. Add it in Home Assistant as a Wyoming
    integration at this machine's address and port.

    \b
    Examples:
      edge-gemma wyoming
      edge-gemma wyoming --uri tcp://0.0.0.0:10700 --zeroconf
      edge-gemma wyoming --log requests.jsonl
    """
    from edge.audio.tts import make_tts_backend
    from edge.serve.wyoming_service import WyomingSettings, run_wyoming

    backend = make_tts_backend(tts, voice=tts_voice) if tts != "none" else None
    plan = options.prepared(load)
    if plan.mmproj_path is None:
        click.echo(
            "note: no audio projector: speech to text will be refused (run `edge-gemma setup`, or pass --mmproj)",
            err=True,
        )
    settings = WyomingSettings(
        model_name=plan.model_path.name,
        max_audio_seconds=max_audio_seconds,
        idle_timeout_s=idle_timeout,
        tts=backend,
        home_control=home_control,
        log_path=log_path,
        max_tokens=max_tokens,
        transcript_tokens=transcript_tokens,
    )
    click.echo(f"Wyoming service for {plan.model_path.name} at {uri}. Ctrl-C stops.", err=True)
    run_wyoming(
        plan,
        uri=uri,
        settings=settings,
        zeroconf=zeroconf_name is not None,
        zeroconf_name=zeroconf_name,
        on_note=lambda message: click.echo(f"note: {message}", err=True),
    )
