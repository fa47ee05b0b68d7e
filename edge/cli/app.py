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

from edge import __version__
from edge.cli import options
from edge.cli.options import EXIT_INTERRUPTED
from edge.cli.output import format_device, format_profiles_table, format_stats
from edge.errors import EdgeError


class EdgeGroup(click.Group):
    """Every failure is one line on stderr and a non-zero exit; EDGE_DEBUG=1 shows the traceback.

    EdgeError: its message and exit code. Ctrl-C: exit 130. click's own usage errors pass through.
    Anything else is a bug: still one line, naming the exception, exit 1.
    """

    def invoke(self, ctx):
        debug = os.environ.get("EDGE_DEBUG") == "1"
        try:
            return super().invoke(ctx)
        except click.exceptions.UsageError as exc:  # a bad flag value: one line too, not click's three
            command = exc.ctx.command_path if exc.ctx else "edge-gemma"
            click.echo(f"error: {exc.format_message()} (see `{command} --help`)", err=True)
            sys.exit(exc.exit_code)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except EdgeError as exc:
            if debug:
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except Exception as exc:  # the last resort: never a traceback for a user
            if debug:
                raise
            command = ctx.invoked_subcommand or ctx.info_name
            click.echo(
                f"error: `edge-gemma {command}` failed unexpectedly ({type(exc).__name__}: "
                f"{str(exc)[:300]}). This is a bug: please report it with the output of "
                "EDGE_DEBUG=1 edge-gemma ...",
                err=True,
            )
            sys.exit(1)


@click.group(cls=EdgeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="edge-gemma")
def cli():
    """Run Google's Gemma 4 edge models (E2B, E4B) well on a Raspberry Pi 5, a Jetson or a laptop."""


@cli.command()
@options.as_json
def devices(as_json):
    """List the device profiles, one line each.

    \b
    Examples:
      edge-gemma devices
      edge-gemma devices --json | jq '.[].name'
    """
    from edge.profiles import load_profiles, profile_to_dict

    profiles = load_profiles()
    if as_json:
        click.echo(json.dumps([profile_to_dict(p) for p in profiles.values()], indent=2))
    else:
        click.echo(format_profiles_table(profiles.values()))


@cli.command()
@options.device
@options.as_json
@options.root
def detect(device_name, as_json, root):
    """Show what this machine is, the profile it maps to, and why.

    \b
    Examples:
      edge-gemma detect
      edge-gemma detect --json
      edge-gemma detect --device pi5
    """
    from edge.device.info import detect as detect_device
    from edge.device.info import to_dict
    from edge.model.backend import backend_choice
    from edge.profiles import choose_profile, load_profiles, profile_to_dict

    info = detect_device(root)
    choice = choose_profile(device_name, load_profiles(), info)
    backend = backend_choice()
    workers = _workers_on_the_lan()
    if as_json:
        payload = {
            "device": to_dict(info),
            "profile": profile_to_dict(choice.profile),
            "reasons": list(choice.reasons),
            "cpu_kernels": backend.to_dict(),
            "rpc": {"built": workers is not None, "workers": [vars(w) for w in workers or []]},
        }
        click.echo(json.dumps(payload, indent=2))
    else:
        click.echo(format_device(info, choice, backend))
        if workers is None:
            click.echo("RPC workers: this llama.cpp build has no RPC backend (see `edge-gemma worker --help`)")
        else:
            found = ", ".join(f"{w.endpoint} ({w.memory_bytes / 1e9:.1f} GB, {w.backend})" for w in workers)
            click.echo(f"RPC workers on the LAN: {found or 'none found'}")


def _workers_on_the_lan():
    """The workers zeroconf finds in a browse ([] without zeroconf); None without the RPC backend."""
    from edge.errors import UsageError
    from edge.model.rpc import supports_rpc
    from edge.workers.discovery import find

    if not supports_rpc():
        return None
    try:
        return find()
    except UsageError:  # zeroconf not installed: no LAN discovery, still a build with RPC
        return []
    except OSError:  # no multicast here (a container without a LAN)
        return []


@cli.command()
@options.load_options(with_mmproj=False)
@click.option("-n", "--max-tokens", type=click.IntRange(min=1), default=128, show_default=True)
@click.option(
    "--temperature", type=click.FloatRange(min=0.0), help="Sampling temperature (default: Gemma's recommended 1.0)."
)
@click.option("--seed", type=int, help="Sampling seed, for repeatable output.")
@click.argument("prompt")
def run(load, max_tokens, temperature, seed, prompt):
    """Complete PROMPT, streaming the text, then print tokens/s.

    \b
    Examples:
      edge-gemma run --model demo "The capital of France is"
      edge-gemma run -m ~/models/gemma-4-E2B-it-Q4_K_M.gguf -t 3 "Write a haiku about a Pi"
    """
    from edge.launch import load_model
    from edge.model.engine import GEMMA_SAMPLING

    plan = options.prepared(load)
    with load_model(plan) as loaded:
        generation = loaded.complete(
            prompt, GEMMA_SAMPLING.with_(max_tokens=max_tokens, temperature=temperature, seed=seed)
        )
        click.echo(prompt, nl=False)
        try:
            for piece in generation:
                click.echo(piece, nl=False)
        except KeyboardInterrupt:
            click.echo("", err=False)
            click.echo(format_stats(generation.stats, loaded, plan.tuned_note), err=True)
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        click.echo()
        click.echo(format_stats(generation.stats, loaded, plan.tuned_note), err=True)


@cli.command()
@options.load_options()
@click.option("-s", "--system", help="System prompt.")
@click.option("-n", "--max-tokens", type=click.IntRange(min=1), default=512, show_default=True)
@click.option(
    "--temperature", type=click.FloatRange(min=0.0), help="Sampling temperature (default: Gemma's recommended 1.0)."
)
@click.option("--resume", type=click.Path(path_type=Path), help="Continue a conversation saved with /save.")
@click.option("-v", "--verbose", is_flag=True, help="Say when old turns leave the context.")
def chat(load, system, max_tokens, temperature, resume, verbose):
    """Chat in the terminal; tokens/s after each reply. Ctrl-C stops a reply, Ctrl-D quits.

    The conversation never outgrows the context: when it would, the oldest turns go (the system
    prompt stays). /clear forgets every turn, /save FILE keeps the conversation for --resume.
    /image FILE shows a picture with your next message (Gemma 4 with its projector).

    \b
    Examples:
      edge-gemma chat
      edge-gemma chat --model demo --system "Answer in one sentence."
      edge-gemma chat --resume talk.json
    """
    from edge.launch import ProjectorUse, load_model
    from edge.model.conversation import Conversation, load_history

    history = load_history(resume) if resume else None  # a bad file fails before the model loads
    plan = options.prepared(load)
    sees = plan.model_info.architecture == "gemma4"  # a projector is only for Gemma 4 (for /image)
    with load_model(plan, ProjectorUse.OPTIONAL if sees else ProjectorUse.NONE) as loaded:
        session = Conversation(loaded, system=system, history=history)
        notice = loaded.chat_prompt(session.history + [{"role": "user", "content": "hi"}]).notice
        if notice:
            click.echo(f"note: {notice}", err=True)
        click.echo(
            f"{plan.model_path.name} on {plan.choice.profile.name}"
            + (f", {session.turns} turns resumed" if history else "")
            + ". Ctrl-C stops a reply; /clear, /save FILE"
            + (", /image FILE" if loaded.projector is not None else "")
            + "; Ctrl-D or /exit quits.",
            err=True,
        )
        pictures = []  # shown with the next message
        while True:
            try:
                line = input(">>> ")
            except (EOFError, KeyboardInterrupt):
                click.echo()
                return
            command, _, argument = line.strip().partition(" ")
            if command in ("/exit", "/quit", "/bye"):
                return
            if command == "/clear":
                session.clear()
                click.echo("(conversation cleared)", err=True)
                continue
            if command == "/save":
                if not argument.strip():
                    click.echo("error: /save needs a file name, e.g. /save talk.json", err=True)
                    continue
                try:
                    click.echo(f"(saved {session.turns} turns to {session.save(Path(argument.strip()))})", err=True)
                except OSError as exc:
                    click.echo(f"error: could not save ({exc}); try another path", err=True)
                continue
            if command == "/image":
                _attach(loaded, argument.strip(), pictures)
                continue
            if not line.strip():
                continue
            _chat_turn(session, line, max_tokens, temperature, verbose, plan.tuned_note, pictures)
            pictures = []


def _attach(loaded, path: str, pictures: list) -> None:
    """/image FILE: the picture, fitted to the budget, waits for the next message."""
    from edge.vision.images import read_image

    if not path:
        click.echo("error: /image needs a file name, e.g. /image photo.jpg", err=True)
        return
    try:
        picture = loaded.fit_image(read_image(Path(path).expanduser()))
    except EdgeError as exc:
        click.echo(f"error: {exc}", err=True)
        return
    pictures.append(picture)
    tokens = loaded.projector.image_tokens(picture)
    click.echo(f"(picture {len(pictures)} attached: {tokens} image tokens; it goes with your next message)", err=True)


def _chat_turn(
    session, line: str, max_tokens: int, temperature: float | None, verbose: bool, tuned_note, pictures=()
) -> None:
    """One reply; a failure is reported and the conversation goes on as it was."""
    from edge.model.engine import GEMMA_SAMPLING

    try:
        sampling = GEMMA_SAMPLING.with_(max_tokens=max_tokens, temperature=temperature)
        generation = session.reply(line, sampling, images=pictures)
        if verbose and session.last_fit and session.last_fit.note:
            click.echo(f"[{session.last_fit.note}]", err=True)
        try:
            for piece in generation:
                click.echo(piece, nl=False)
        except KeyboardInterrupt:
            click.echo("\n[stopped]", err=True)
    except EdgeError as exc:
        click.echo(f"\nerror: {exc}", err=True)
        return
    click.echo()
    session.remember(generation.text)
    click.echo(format_stats(generation.stats, session.loaded, tuned_note), err=True)


# One module per group of verbs, registered after the core commands.
from edge.cli.ask import ask  # noqa: E402
from edge.cli.bench import bench, tune  # noqa: E402
from edge.cli.serve import serve, service, wyoming  # noqa: E402
from edge.cli.setup import models, plan, setup  # noqa: E402
from edge.cli.voice import transcribe, voice  # noqa: E402
from edge.cli.worker import worker  # noqa: E402

for command in (setup, plan, models, bench, tune, voice, transcribe, ask, serve, service, wyoming, worker):
    cli.add_command(command)


def main() -> None:
    import signal

    from edge.cli.crash_report import run_guarded

    # A shell starts background jobs with SIGINT ignored, and Python then keeps it ignored; but
    # Ctrl-C (or kill -INT) is how a reply or a bench is stopped here, so always take it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    command = " ".join(sys.argv[1:2]) or "(no command)"
    run_guarded(lambda: cli(prog_name="edge-gemma"), command)


if __name__ == "__main__":
    main()
