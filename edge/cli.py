"""The `edge-gemma` command: click commands only. Parse, call the library, print.

Library errors (EdgeError) become one line on stderr and a non-zero exit; EDGE_DEBUG=1 shows the
traceback instead.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from . import __version__
from .errors import EdgeError
from .output import format_device, format_profiles_table, format_stats

EXIT_INTERRUPTED = 130


class EdgeGroup(click.Group):
    """Maps EdgeError to a one-line message and its exit code; Ctrl-C to exit 130."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgeError as exc:
            if os.environ.get("EDGE_DEBUG") == "1":
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)


@click.group(cls=EdgeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="edge-gemma")
def cli():
    """Run Google's Gemma 4 edge models (E2B, E4B) well on a Raspberry Pi 5, a Jetson or a laptop."""


# Options shared by every command that loads a model.
def model_options(func):
    options = [
        click.option("-m", "--model", help="'demo' (embedded Gemma 3 270M), or a .gguf path. "
                                           "Default: the model `setup` installed, else demo."),
        click.option("-d", "--device", "device_name", default="auto", show_default=True,
                     help="Device profile: auto, a family (pi5, orin-nano, ...) or a profile name."),
        click.option("-c", "--ctx", "n_ctx", type=click.IntRange(min=1), help="Context size (tokens)."),
        click.option("-t", "--threads", "n_threads", type=click.IntRange(min=0),
                     help="Decode threads (0 = physical performance cores)."),
        click.option("--threads-batch", "n_threads_batch", type=click.IntRange(min=0),
                     help="Prompt-processing threads."),
        click.option("--no-tune", is_flag=True, help="Ignore the threads `edge-gemma tune` stored."),
        click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path),
                     default="/", hidden=True, help="Read device facts below this directory (tests)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _prepare(model, device_name, n_ctx, n_threads, n_threads_batch, no_tune, root):
    from .launch import prepare_run

    overrides = {"n_ctx": n_ctx, "n_threads": n_threads, "n_threads_batch": n_threads_batch}
    plan = prepare_run(model, device_name, overrides, root=root, no_tune=no_tune)
    for note in plan.notes:
        click.echo(f"note: {note}", err=True)
    return plan


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def devices(as_json):
    """List the device profiles, one line each.

    \b
    Examples:
      edge-gemma devices
      edge-gemma devices --json | jq '.[].name'
    """
    from .profiles import load_profiles, profile_to_dict

    profiles = load_profiles()
    if as_json:
        click.echo(json.dumps([profile_to_dict(p) for p in profiles.values()], indent=2))
    else:
        click.echo(format_profiles_table(profiles.values()))


@cli.command()
@click.option("-d", "--device", "device_name", default="auto", show_default=True,
              help="Device profile to resolve against this machine.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path), default="/",
              hidden=True, help="Read device facts below this directory (tests).")
def detect(device_name, as_json, root):
    """Show what this machine is, the profile it maps to, and why.

    \b
    Examples:
      edge-gemma detect
      edge-gemma detect --json
      edge-gemma detect --device pi5
    """
    from .device import detect as detect_device, to_dict
    from .profiles import choose_profile, load_profiles, profile_to_dict

    from .model.backend import backend_choice

    info = detect_device(root)
    choice = choose_profile(device_name, load_profiles(), info)
    backend = backend_choice()
    if as_json:
        payload = {"device": to_dict(info), "profile": profile_to_dict(choice.profile),
                   "reasons": list(choice.reasons), "cpu_kernels": backend.to_dict()}
        click.echo(json.dumps(payload, indent=2))
    else:
        click.echo(format_device(info, choice, backend))


@cli.command()
@model_options
@click.option("-n", "--max-tokens", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0.0), default=0.7, show_default=True)
@click.option("--seed", type=int, help="Sampling seed, for repeatable output.")
@click.option("--verbose", is_flag=True, help="Show llama.cpp's own log.")
@click.argument("prompt")
def run(model, device_name, n_ctx, n_threads, n_threads_batch, no_tune, root, max_tokens, temperature, seed,
        verbose, prompt):
    """Complete PROMPT, streaming the text, then print tokens/s.

    \b
    Examples:
      edge-gemma run --model demo "The capital of France is"
      edge-gemma run -m ~/models/gemma-4-E2B-it-Q4_K_M.gguf -t 3 "Write a haiku about a Pi"
    """
    from .launch import load_model

    plan = _prepare(model, device_name, n_ctx, n_threads, n_threads_batch, no_tune, root)
    with load_model(plan, verbose=verbose) as loaded:
        generation = loaded.complete(prompt, max_tokens=max_tokens, temperature=temperature, seed=seed)
        click.echo(prompt, nl=False)
        try:
            for piece in generation:
                click.echo(piece, nl=False)
        except KeyboardInterrupt:
            click.echo("", err=False)
            click.echo(format_stats(generation.stats, loaded), err=True)
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        click.echo()
        click.echo(format_stats(generation.stats, loaded), err=True)


@cli.command()
@model_options
@click.option("-s", "--system", help="System prompt.")
@click.option("-n", "--max-tokens", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0.0), default=0.7, show_default=True)
@click.option("--verbose", is_flag=True, help="Show llama.cpp's own log.")
def chat(model, device_name, n_ctx, n_threads, n_threads_batch, no_tune, root, system, max_tokens, temperature,
         verbose):
    """Chat in the terminal; tokens/s after each reply. Ctrl-C stops a reply, Ctrl-D quits.

    \b
    Examples:
      edge-gemma chat
      edge-gemma chat --model demo --system "Answer in one sentence."
    """
    from .launch import load_model

    plan = _prepare(model, device_name, n_ctx, n_threads, n_threads_batch, no_tune, root)
    with load_model(plan, verbose=verbose) as loaded:
        messages = [{"role": "system", "content": system}] if system else []
        notice = loaded.chat_prompt(messages + [{"role": "user", "content": "hi"}]).notice
        if notice:
            click.echo(f"note: {notice}", err=True)
        click.echo(f"{plan.model_path.name} on {plan.choice.profile.name}. Ctrl-C stops a reply, "
                   "Ctrl-D or /exit quits.", err=True)
        while True:
            try:
                line = input(">>> ")
            except (EOFError, KeyboardInterrupt):
                click.echo()
                return
            if line.strip() in ("/exit", "/quit", "/bye"):
                return
            if not line.strip():
                continue
            messages.append({"role": "user", "content": line})
            generation = loaded.chat(messages, max_tokens=max_tokens, temperature=temperature)
            try:
                for piece in generation:
                    click.echo(piece, nl=False)
            except KeyboardInterrupt:
                click.echo("\n[stopped]", err=True)
            click.echo()
            messages.append({"role": "assistant", "content": generation.text})
            click.echo(format_stats(generation.stats, loaded), err=True)


# One module per group of verbs, registered after the core commands.
from .cli_bench import bench, tune  # noqa: E402
from .cli_setup import models, plan, setup  # noqa: E402
from .cli_voice import ask, transcribe, voice  # noqa: E402

for command in (setup, plan, models, bench, tune, voice, transcribe, ask):
    cli.add_command(command)


def main() -> None:
    from .crash_report import run_guarded

    command = " ".join(sys.argv[1:2]) or "(no command)"
    run_guarded(lambda: cli(prog_name="edge-gemma"), command)


if __name__ == "__main__":
    main()
