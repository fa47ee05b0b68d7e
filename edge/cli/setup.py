"""The `setup`, `plan` and `models` commands: click only, the work is in edge/setup.py."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edge.cli import options
from edge.errors import UsageError
from edge.model.memory import gb
from edge.profiles import MODELS
from edge.setup.plan import format_plan_table, plan_to_dict

_plan_options = options.apply(
    options.device,
    click.option("--model", "model_id", type=click.Choice(MODELS), help="Force the model."),
    click.option("-q", "--quant", help="Force the quant, e.g. Q4_K_M."),
    options.ctx("Force the context size."),
    click.option("--no-mmproj", is_flag=True, help="Text only: skip the audio/vision projector."),
    options.workers,
    options.root,
)


def _propose(device_name, model_id, quant, n_ctx, no_mmproj, root, workers_text):
    """The plan `plan` shows and `setup` installs, from the options they share."""
    from edge.setup.steps import propose
    from edge.workers.connect import parse_workers

    return propose(
        device_name,
        model=model_id,
        quant=quant,
        n_ctx=n_ctx,
        with_mmproj=not no_mmproj,
        root=root,
        workers=parse_workers(workers_text),
    )


@click.command()
@_plan_options
@options.as_json
def plan(device_name, model_id, quant, n_ctx, no_mmproj, workers_text, root, as_json):
    """Show what setup would install and how it fits in memory; downloads nothing.

    \b
    Examples:
      edge-gemma plan --device pi5
      edge-gemma plan --device pi5-4gb --json
      edge-gemma plan --device orin-nano --quant Q8_0
      edge-gemma plan --device pi5-4gb --workers 192.168.1.20:50052
    """
    proposal = _propose(device_name, model_id, quant, n_ctx, no_mmproj, root, workers_text)
    if as_json:
        click.echo(json.dumps(plan_to_dict(proposal.plan), indent=2))
        return
    for note in proposal.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(format_plan_table(proposal.plan))


@click.command()
@_plan_options
@click.option("--dry-run", is_flag=True, help="Show the plan and stop.")
@click.option("--offline", is_flag=True, help="Use only what is already downloaded.")
@click.option("--gguf", type=click.Path(path_type=Path), help="Import this local model file instead of downloading.")
@click.option("--mmproj", type=click.Path(path_type=Path), help="With --gguf: the local projector file.")
@click.option("--link", is_flag=True, help="With --gguf: link instead of copying.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask before downloading.")
@click.option("--no-smoke-test", is_flag=True, help="Skip loading the model after setup.")
def setup(
    device_name,
    model_id,
    quant,
    n_ctx,
    no_mmproj,
    workers_text,
    root,
    dry_run,
    offline,
    gguf,
    mmproj,
    link,
    yes,
    no_smoke_test,
):
    """Pick, download and verify the right Gemma 4 files for a device; leave it ready to run.

    Running it again is cheap: files already in place are not downloaded again.

    \b
    Examples:
      edge-gemma setup --device pi5
      edge-gemma setup --device pi5 --dry-run
      edge-gemma setup --device orin-nano --quant Q4_0 --yes
      edge-gemma setup --gguf ./gemma-4-E2B-it-Q4_0.gguf --mmproj ./mmproj-F16.gguf   # no network
      edge-gemma setup --device pi5-4gb --workers 192.168.1.20:50052   # E4B, layers on a second board
    """
    from edge.setup import steps

    if mmproj and not gguf:
        raise UsageError("--mmproj goes with --gguf (a local import); without --gguf setup downloads the projector")
    target = None
    if gguf:
        target, config = steps.install_local(device_name, gguf, mmproj, link=link, n_ctx=n_ctx, root=root)
    elif offline:
        config = steps.offline_config()
    else:
        proposal = _propose(device_name, model_id, quant, n_ctx, no_mmproj, root, workers_text)
        target = proposal.target
        for note in proposal.notes:
            click.echo(f"note: {note}", err=True)
        click.echo(format_plan_table(proposal.plan))
        if dry_run:
            return
        to_fetch = sum(f.size for f in proposal.plan.files)
        if not yes and not click.confirm(f"\nDownload or verify {gb(to_fetch)} of files?", default=True, err=True):
            raise click.Abort()
        config = steps.install_proposal(proposal, progress=True)
    changed = steps.save_if_changed(config)
    click.echo(
        f"\n{'Saved' if changed else 'Unchanged'}: {config.profile}, {config.model.filename}"
        + (f" + {config.mmproj.filename}" if config.mmproj else "")
    )
    if target is not None and not target.on_board:
        click.echo(
            f"Files planned for {target.device.board}; copy the model directory to the board or run setup there."
        )
    elif not no_smoke_test and changed:
        click.echo("Smoke test: loading the model and generating a few tokens...", err=True)
        from edge.bench.smoke import smoke_test
        from edge.cli.output import format_stats

        smoke = smoke_test(root)
        click.echo(f"Smoke test passed {format_stats(smoke.stats)} (loaded in {smoke.load_seconds:.1f} s)")
        click.echo(
            "Short bench: "
            + ", ".join(f"{r.spec.name} {r.avg_ts:.1f} ± {r.stddev_ts:.1f} tok/s" for r in smoke.bench)
            + "  (full numbers: edge-gemma bench)"
        )
    click.echo(
        'Next: edge-gemma run "Hello"  |  edge-gemma chat  |  edge-gemma bench'
        + ("  |  edge-gemma voice" if config.mmproj else "")
    )


@click.group(invoke_without_command=True)
@click.pass_context
@options.as_json
def models(ctx, as_json):
    """List installed model files with their sizes.

    \b
    Examples:
      edge-gemma models
      edge-gemma models rm gemma-4-E2B-it-Q4_0.gguf
    """
    if ctx.invoked_subcommand is not None:
        return
    from edge.setup.installed import list_installed

    entries = list_installed()
    if as_json:
        click.echo(json.dumps([e.to_dict() for e in entries], indent=2))
        return
    if not entries:
        click.echo("No models installed. Run `edge-gemma setup` (or use --model demo).")
    for entry in entries:
        click.echo(
            f"{entry.name:<48} {gb(entry.size):>10}  {entry.kind:<8} {entry.where}"
            + ("  (in use)" if entry.in_use else "")
        )


@models.command("rm")
@click.argument("name")
@click.option("--force", is_flag=True, help="Also remove a file the device config uses.")
def models_rm(name, force):
    """Remove an installed model file by name."""
    from edge.setup.installed import remove_installed

    freed = remove_installed(name, force=force)
    click.echo(f"Removed {name} ({gb(freed)} freed)")
