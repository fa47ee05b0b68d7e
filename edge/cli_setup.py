"""The `setup`, `plan` and `models` commands: click only, the work is in edge/setup.py."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .errors import UsageError
from .plan import format_plan_table, gb, plan_to_dict

ROOT_OPTION = click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path), default="/",
                           hidden=True, help="Read device facts below this directory (tests).")


def _plan_options(func):
    options = [
        click.option("-d", "--device", "device_name", default="auto", show_default=True,
                     help="auto, a family (pi5, orin-nano, ...) or a profile name."),
        click.option("--model", "model_id", type=click.Choice(["e2b", "e4b"]), help="Force the model."),
        click.option("-q", "--quant", help="Force the quant, e.g. Q4_K_M."),
        click.option("-c", "--ctx", "n_ctx", type=click.IntRange(min=256, max=131072), help="Force the context size."),
        click.option("--no-mmproj", is_flag=True, help="Text only: skip the audio/vision projector."),
        ROOT_OPTION,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _target(device_name, root):
    from .device import detect
    from .profiles import choose_profile, load_profiles
    from .setup import target_for

    detected = detect(root)
    return target_for(choose_profile(device_name, load_profiles(), detected), detected)


def _planned(device_name, model_id, quant, n_ctx, no_mmproj, root):
    from .setup import gather_listings, make_plan

    target = _target(device_name, root)
    model = model_id or target.choice.profile.model
    listings, notes = gather_listings(model)
    plan = make_plan(target, listings, model=model_id, quant=quant, n_ctx=n_ctx, with_mmproj=not no_mmproj)
    return target, listings, plan, notes


@click.command()
@_plan_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan(device_name, model_id, quant, n_ctx, no_mmproj, root, as_json):
    """Show what setup would install and how it fits in memory; downloads nothing.

    \b
    Examples:
      edge-gemma plan --device pi5
      edge-gemma plan --device pi5-4gb --json
      edge-gemma plan --device orin-nano --quant Q8_0
    """
    target, _, chosen, notes = _planned(device_name, model_id, quant, n_ctx, no_mmproj, root)
    if as_json:
        click.echo(json.dumps(plan_to_dict(chosen), indent=2))
        return
    for note in target.choice.reasons + tuple(notes):
        click.echo(f"note: {note}", err=True)
    click.echo(format_plan_table(chosen))


@click.command()
@_plan_options
@click.option("--dry-run", is_flag=True, help="Show the plan and stop.")
@click.option("--offline", is_flag=True, help="Use only what is already downloaded.")
@click.option("--gguf", type=click.Path(path_type=Path), help="Import this local model file instead of downloading.")
@click.option("--mmproj", type=click.Path(path_type=Path), help="With --gguf: the local projector file.")
@click.option("--link", is_flag=True, help="With --gguf: link instead of copying.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask before downloading.")
@click.option("--no-smoke-test", is_flag=True, help="Skip loading the model after setup.")
def setup(device_name, model_id, quant, n_ctx, no_mmproj, root, dry_run, offline, gguf, mmproj, link, yes,
          no_smoke_test):
    """Pick, download and verify the right Gemma 4 files for a device; leave it ready to run.

    Running it again is cheap: files already in place are not downloaded again.

    \b
    Examples:
      edge-gemma setup --device pi5
      edge-gemma setup --device pi5 --dry-run
      edge-gemma setup --device orin-nano --quant Q4_0 --yes
      edge-gemma setup --gguf ./gemma-4-E2B-it-Q4_0.gguf --mmproj ./mmproj-F16.gguf   # no network
    """
    from .setup import build_config, download_plan, import_files, model_id_of, plan_for_local, quant_of, \
        save_if_changed
    from .gguf_file import inspect_gguf

    if mmproj and not gguf:
        raise UsageError("--mmproj goes with --gguf (a local import); without --gguf setup downloads the projector")
    if gguf:
        target = _target(device_name, root)
        installed = import_files(gguf, mmproj, link=link)
        settings = plan_for_local(target, installed, n_ctx)
        info = inspect_gguf(installed["model"].path)
        config = build_config(target.choice.profile, installed, settings, model_id_of(info),
                              quant_of(installed["model"].filename))
    elif offline:
        config = _offline_config()
        target = None
    else:
        target, listings, chosen, notes = _planned(device_name, model_id, quant, n_ctx, no_mmproj, root)
        for note in target.choice.reasons + tuple(notes):
            click.echo(f"note: {note}", err=True)
        click.echo(format_plan_table(chosen))
        if dry_run:
            return
        to_fetch = sum(f.size for f in chosen.files)
        if not yes and not click.confirm(f"\nDownload or verify {gb(to_fetch)} of files?", default=True, err=True):
            raise click.Abort()
        installed = download_plan(chosen, listings, progress=True)
        config = build_config(target.choice.profile, installed, chosen.settings, chosen.model, chosen.quant)
    changed = save_if_changed(config)
    click.echo(f"\n{'Saved' if changed else 'Unchanged'}: {config.profile}, {config.model.filename}"
               + (f" + {config.mmproj.filename}" if config.mmproj else ""))
    if target is not None and not target.on_board:
        click.echo(f"Files planned for {target.device.board}; copy the model directory to the board "
                   "or run setup there.")
    elif not no_smoke_test and changed:
        _smoke_test(config)
    click.echo("Next: edge-gemma run \"Hello\"  |  edge-gemma chat  |  edge-gemma bench"
               + ("  |  edge-gemma voice" if config.mmproj else ""))


def _offline_config():
    from .device_config import load_device_config
    from .errors import DownloadError

    config = load_device_config()
    if config is None:
        raise DownloadError("offline and nothing set up yet: run `edge-gemma setup` once online, "
                            "or import local files with --gguf PATH [--mmproj PATH]")
    for item in filter(None, (config.model, config.mmproj)):
        if not Path(item.path).is_file():
            raise DownloadError(f"{item.path} is missing; run `edge-gemma setup` online to fetch it again")
    return config


def _smoke_test(config):
    """Load the installed model, generate a few tokens, then a short bench: proves the board runs it."""
    from .bench import BenchTest, run_sweep
    from .output import format_stats
    from .profiles import load_profiles
    from .runner import LoadedModel
    from .settings import resolve_settings

    settings = resolve_settings(load_profiles().get(config.profile), None, config.settings).settings
    click.echo("Smoke test: loading the model and generating a few tokens...", err=True)
    with LoadedModel(config.model_path, settings) as loaded:
        generation = loaded.chat([{"role": "user", "content": "Say hello in five words."}], max_tokens=16,
                                 temperature=0.0)
        generation.run()
        click.echo(f"Smoke test passed {format_stats(generation.stats, loaded)}")
        s = settings
        tests = [BenchTest(n, g, 0, s.n_threads, s.n_threads_batch, s.n_batch, s.n_ubatch)
                 for n, g in ((128, 0), (0, 32))]
        outcome = run_sweep(loaded, tests, repetitions=2)
        click.echo("Short bench: " + ", ".join(f"{r.spec.name} {r.avg_ts:.1f} ± {r.stddev_ts:.1f} tok/s"
                                               for r in outcome.results)
                   + "  (full numbers: edge-gemma bench)")


@click.group(invoke_without_command=True)
@click.pass_context
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models(ctx, as_json):
    """List installed model files with their sizes.

    \b
    Examples:
      edge-gemma models
      edge-gemma models rm gemma-4-E2B-it-Q4_0.gguf
    """
    if ctx.invoked_subcommand is not None:
        return
    from .installed import list_installed

    entries = list_installed()
    if as_json:
        click.echo(json.dumps([e.to_dict() for e in entries], indent=2))
        return
    if not entries:
        click.echo("No models installed. Run `edge-gemma setup` (or use --model demo).")
    for entry in entries:
        click.echo(f"{entry.name:<48} {gb(entry.size):>10}  {entry.kind:<8} {entry.where}"
                   + ("  (in use)" if entry.in_use else ""))


@models.command("rm")
@click.argument("name")
@click.option("--force", is_flag=True, help="Also remove a file the device config uses.")
def models_rm(name, force):
    """Remove an installed model file by name."""
    from .installed import remove_installed

    freed = remove_installed(name, force=force)
    click.echo(f"Removed {name} ({gb(freed)} freed)")
