"""Options more than one command takes, defined once so that a flag means the same thing everywhere.

The model-loading options arrive as one typed LoadRequest (`load_options`); the rest are single
options: --json, --image-tokens, --tts, --voice, and -d/--device and the hidden --root for
commands that load nothing.
"""

from __future__ import annotations

import functools
from pathlib import Path

import click

EXIT_INTERRUPTED = 130  # what a shell reports for Ctrl-C
# llama.cpp pads contexts to 256 cells; Gemma 4 E2B/E4B are trained to 128K.
CTX_RANGE = click.IntRange(min=256, max=131072)

root = click.option(
    "--root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default="/",
    hidden=True,
    help="Read device facts below this directory (tests).",
)
device = click.option(
    "-d",
    "--device",
    "device_name",
    default="auto",
    show_default=True,
    help="Device profile: auto, a family (pi5, orin-nano, ...) or a profile name.",
)
as_json = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
llama_log = click.option("--llama-log", is_flag=True, help="Show llama.cpp's own log on stderr.")


def ctx(help_text: str = "Context size (tokens)."):
    return click.option("-c", "--ctx", "n_ctx", type=CTX_RANGE, help=help_text)


def model(help_text: str):
    return click.option("-m", "--model", help=help_text)


threads = click.option(
    "-t", "--threads", "n_threads", type=click.IntRange(min=0), help="Decode threads (0 = physical performance cores)."
)
threads_batch = click.option(
    "--threads-batch", "n_threads_batch", type=click.IntRange(min=0), help="Prompt-processing threads."
)
no_tune = click.option("--no-tune", is_flag=True, help="Ignore the threads `edge-gemma tune` stored.")


def apply(*options):
    """Stack click options on a command in the order given."""

    def decorate(func):
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def mmproj():
    return click.option(
        "--mmproj", type=click.Path(path_type=Path), help="Audio/vision projector .gguf (default: setup's)."
    )


TEXT_MODEL_HELP = "'demo' (embedded Gemma 3 270M), or a .gguf path. Default: the model `setup` installed, else demo."
GEMMA4_MODEL_HELP = "Gemma 4 E2B/E4B .gguf, or 'demo' (default: the one `setup` installed)."


workers = click.option(
    "--workers",
    "workers_text",
    metavar="HOST:PORT[,...]|auto",
    help="Put the layers this board cannot hold on llama.cpp RPC workers (`edge-gemma worker` on another "
    "board); 'auto': the ones zeroconf finds. Default: the device config's list.",
)
worker_layers = click.option(
    "--worker-layers",
    type=click.IntRange(0, 512),
    help="Exactly this many layers on the workers (default: only what this board cannot hold).",
)


def load_options(
    *, with_mmproj: bool = True, model_help: str = TEXT_MODEL_HELP, ctx_help: str = "Context size (tokens)."
):
    """The options of every command that loads a model, handed to it as one `load: LoadRequest`:
    -m/--model, [--mmproj], -d/--device, -c/--ctx, -t/--threads, --threads-batch, --no-tune,
    --llama-log, --workers, --worker-layers and the hidden --root."""
    shared = [model(model_help), *([mmproj()] if with_mmproj else []), device, ctx(ctx_help)]
    shared += [threads, threads_batch, no_tune, llama_log, workers, worker_layers, root]

    def decorate(func):
        @functools.wraps(func)
        def with_request(*args, **kwargs):
            from edge.launch import LoadRequest, SettingsOverrides
            from edge.workers.connect import parse_workers

            workers_text = kwargs.pop("workers_text")

            request = LoadRequest(
                model=kwargs.pop("model"),
                mmproj=kwargs.pop("mmproj", None),
                device=kwargs.pop("device_name"),
                overrides=SettingsOverrides(
                    n_ctx=kwargs.pop("n_ctx"),
                    n_threads=kwargs.pop("n_threads"),
                    n_threads_batch=kwargs.pop("n_threads_batch"),
                ),
                no_tune=kwargs.pop("no_tune"),
                llama_log=kwargs.pop("llama_log"),
                root=kwargs.pop("root"),
                workers=parse_workers(workers_text) if workers_text is not None else None,
                worker_layers=kwargs.pop("worker_layers"),
            )
            return func(*args, load=request, **kwargs)

        return apply(*shared)(with_request)

    return decorate


def prepared(load):
    """The load request's RunPlan (launch.prepare_run: cheap checks, before any load), its notes on stderr."""
    from edge.launch import prepare_run

    plan = prepare_run(load)
    for note in plan.notes:
        click.echo(f"note: {note}", err=True)
    return plan


# Image tokens per picture: ask and serve.
image_tokens = click.option(
    "--image-tokens",
    type=click.IntRange(1, 1120),
    help="Image tokens per picture (Gemma 4: 70, 140, 280, 560, 1120); more sees finer detail and costs "
    "more time. Default: the device profile's.",
)


# The voice the board speaks with: voice, serve (/v1/audio/speech) and wyoming (TTS) alike.
tts = click.option(
    "--tts",
    type=click.Choice(["auto", "piper", "espeak", "none"]),
    default="auto",
    show_default=True,
    help="Speech engine: auto is Piper's natural voice when installed (the voice extra), else espeak-ng.",
)
voice = click.option(
    "--voice", "tts_voice", help="Piper voice: joe (bundled) or a .onnx path; or an espeak-ng voice name."
)
