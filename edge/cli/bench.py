"""The `edge-gemma bench` and `edge-gemma tune` commands: parse, call the library, print.

Results go to stdout in the chosen format; progress, notes and warnings go to stderr.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, replace

import click

from edge.bench.report import FORMATS
from edge.cli import options
from edge.cli.options import EXIT_INTERRUPTED

TUNE_CTX = 1024


def _progress(message: str) -> None:
    """One updating line on a terminal; plain lines when stderr is a file or a pipe."""
    if sys.stderr.isatty():
        click.echo(f"\r\033[K{message}", err=True, nl=False)
    else:
        click.echo(message, err=True)


def _end_progress() -> None:
    if sys.stderr.isatty():
        click.echo("\r\033[K", err=True, nl=False)


@click.command()
@options.model(options.TEXT_MODEL_HELP)
@options.device
@click.option("-p", "--n-prompt", default="512", show_default=True, help="Prompt sizes, e.g. 128,512.")
@click.option("-n", "--n-gen", default="128", show_default=True, help="Generated token counts.")
@click.option("--depth", default="0", show_default=True, help="KV cache depths to measure at (llama-bench's -d).")
@click.option("-t", "--threads", help="Thread counts, e.g. 1,2,4 (default: profile/tuned).")
@click.option("-tb", "--threads-batch", help="Prompt thread counts (default: the same as -t).")
@click.option("-b", "--batch-size", help="n_batch values (default: the profile's).")
@click.option("-ub", "--ubatch-size", help="n_ubatch values (default: the profile's/tuned).")
@click.option("-r", "--repetitions", type=int, default=5, show_default=True)
@options.ctx("Context size (default: what the tests need).")
@click.option("--only", type=click.Choice(["pp", "tg"]), help="Run only prompt or only generation tests.")
@click.option("-o", "--output", "fmt", type=click.Choice(FORMATS), default="md", show_default=True)
@options.as_json
@click.option("--save", is_flag=True, help="Append the results to the saved results file.")
@click.option("--list", "list_saved", is_flag=True, help="List saved runs and exit.")
@click.option("--compare", nargs=2, metavar="A B", help="Compare two saved runs (ids, or latest, latest~1).")
@click.option(
    "--duration",
    type=click.FloatRange(min=0),
    default=0,
    help="Also decode for S seconds without pause: sustained vs first-minute speed.",
)
@click.option("--cold", is_flag=True, help="Drop the model file from the page cache first (cold load).")
@click.option("--no-warmup", is_flag=True, help="Skip the warmup run (not llama-bench's default).")
@click.option(
    "--pictures",
    metavar="BUDGETS",
    help="Measure pictures instead: vision encode and prefill at these image-token budgets "
    "(e.g. 70,140,280, or 'all' for 70 to 1120). Gemma 4 E2B/E4B with a projector.",
)
@options.mmproj()
@options.no_tune
@options.workers
@options.worker_layers
@options.root
def bench(
    model,
    device_name,
    n_prompt,
    n_gen,
    depth,
    threads,
    threads_batch,
    batch_size,
    ubatch_size,
    repetitions,
    n_ctx,
    only,
    fmt,
    as_json,
    save,
    list_saved,
    compare,
    duration,
    cold,
    no_warmup,
    pictures,
    mmproj,
    no_tune,
    workers_text,
    worker_layers,
    root,
):
    """Measure prompt (pp) and generation (tg) tokens/s the llama-bench way.

    Random-token prompt and single-token decode tests, one warmup, -r repetitions with an empty
    cache each, mean ± sample stdev. Lists run every combination. Also reports load time, peak
    RSS, time to first token, CPU temperature and throttling.

    \b
    Examples:
      edge-gemma bench --model demo
      edge-gemma bench -m demo -t 1,2 -p 128,512 -n 64 -r 3
      edge-gemma bench -m model.gguf --depth 0,2048 -o json
      edge-gemma bench --save --duration 300
      edge-gemma bench --list
      edge-gemma bench --compare latest~1 latest
      edge-gemma bench --pictures 70,140,280 -r 3
      edge-gemma bench -m e4b.gguf --workers 192.168.1.20:50052
    """
    from edge.bench import report

    if list_saved or compare:
        _show_saved(list_saved, compare)
        return
    if pictures is not None:
        _bench_pictures(pictures, model, mmproj, device_name, n_ctx, repetitions, "json" if as_json else fmt, root)
        return

    from edge.bench.run import bench_model, plan_bench
    from edge.device.thermal import ThermalReader
    from edge.workers.connect import parse_workers

    fmt = "json" if as_json else fmt
    lists = _sweep_lists(
        p=(n_prompt, "-p/--n-prompt"),
        n=(n_gen, "-n/--n-gen"),
        d=(depth, "--depth"),
        t=(threads, "-t/--threads"),
        tb=(threads_batch, "-tb/--threads-batch"),
        b=(batch_size, "-b/--batch-size"),
        ub=(ubatch_size, "-ub/--ubatch-size"),
    )
    planned = plan_bench(
        lists,
        only=only,
        repetitions=repetitions,
        warmup=not no_warmup,
        n_ctx=n_ctx,
        model=model,
        device_name=device_name,
        root=root,
        no_tune=no_tune,
        workers=parse_workers(workers_text) if workers_text is not None else None,
        worker_layers=worker_layers,
    )
    plan = planned.run
    for line in [f"note: {note}" for note in plan.notes] + [f"warning: {w}" for w in planned.warnings]:
        click.echo(line, err=True)
    click.echo(
        f"{len(planned.tests)} test(s) x {repetitions} run(s) on {plan.model_path.name} "
        f"({plan.choice.profile.name}{', ' + plan.tuned_note if plan.tuned_note else ''})",
        err=True,
    )
    run = bench_model(
        plan,
        planned.tests,
        repetitions,
        thermal=ThermalReader(root, board_kind=plan.device.kind),
        warmup=not no_warmup,
        cold=cold,
        duration_s=duration,
        progress=_progress,
    )
    _end_progress()
    click.echo(report.render(run, fmt))
    if save and run.results:
        click.echo(f"saved run {run.run_id} to {report.save_run(run)}", err=True)
    if run.interrupted:
        click.echo(f"interrupted: printed the {len(run.results)} test(s) that finished", err=True)
        sys.exit(EXIT_INTERRUPTED)


def _bench_pictures(budgets, model, mmproj, device_name, n_ctx, repetitions, fmt, root) -> None:
    """`bench --pictures`: a test photo at each budget, through the model's projector."""
    from edge.bench.measure import parse_int_list
    from edge.bench.pictures import bench_pictures, render_pictures
    from edge.errors import UsageError
    from edge.launch import LoadRequest, ProjectorUse, SettingsOverrides, load_model, prepare_run
    from edge.vision.images import IMAGE_TOKEN_BUDGETS, check_budget

    if fmt not in ("md", "json"):
        raise UsageError("--pictures prints md or json (-o md, -o json)")
    chosen = list(IMAGE_TOKEN_BUDGETS) if budgets.strip() == "all" else parse_int_list(budgets, "--pictures")
    for budget in chosen:
        check_budget(budget)
    if repetitions < 1:
        raise UsageError("-r/--repetitions must be at least 1")
    # Room for the largest picture and its question, whatever the profile's context.
    overrides = SettingsOverrides(n_ctx=n_ctx or max(2048, 2 * max(chosen)))
    plan = prepare_run(LoadRequest(model=model, mmproj=mmproj, device=device_name, overrides=overrides, root=root))
    with load_model(plan, ProjectorUse.MEDIA) as loaded:
        loaded.projector.require_vision()
        click.echo(f"{len(chosen)} budget(s) x {repetitions} run(s) on {plan.model_path.name}", err=True)
        results = bench_pictures(loaded, chosen, repetitions, progress=_progress)
        _end_progress()
        click.echo(render_pictures(results, fmt, model=plan.model_path.name, projector=loaded.projector.path.name))


def _show_saved(list_saved: bool, compare: tuple[str, str] | None) -> None:
    """`bench --list` and `bench --compare A B`: saved runs, no model loaded."""
    from edge.bench import report

    runs = report.load_saved()
    if list_saved:
        click.echo(report.list_runs(runs) if runs else f"no saved runs in {report.results_path()}")
        return
    table, warnings = report.compare_runs(report.find_run(runs, compare[0]), report.find_run(runs, compare[1]))
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(table)


def _sweep_lists(**flags: tuple[str | None, str]) -> dict[str, list[int] | None]:
    """llama-bench style comma lists ("1,2,4") per sweep key; None where the flag was not given."""
    from edge.bench.measure import parse_int_list

    return {key: parse_int_list(value, flag) if value is not None else None for key, (value, flag) in flags.items()}


@click.command()
@options.model(options.TEXT_MODEL_HELP)
@options.device
@click.option(
    "--budget",
    type=click.FloatRange(min=5, max=3600),
    default=60,
    show_default=True,
    help="Seconds to spend measuring (about).",
)
@click.option("--show", is_flag=True, help="Show the stored settings for this device and exit.")
@click.option("--reset", is_flag=True, help="Forget stored settings for this device (and --model, if given).")
@options.as_json
@options.root
def tune(model, device_name, budget, show, reset, as_json, root):
    """Find the fastest thread counts (and ubatch) for this device and model, and keep them.

    Decode threads and prompt threads are raced separately on the real cores within the time
    budget; the winners are stored per device and model file, and `run`, `chat` and `bench` use
    them from then on (their stats show "tuned threads T/TB"). `bench --no-tune` ignores them.

    \b
    Examples:
      edge-gemma tune --model demo
      edge-gemma tune -m ~/models/gemma-4-E2B-it-Q4_K_M.gguf --budget 120
      edge-gemma tune --show
      edge-gemma tune --reset
    """
    from edge import tuned as stored_tuning
    from edge.bench import tune as tuning

    if show or reset:
        _show_or_reset_tuning(model, root, reset=reset, as_json=as_json)
        return

    from edge.launch import LoadRequest, SettingsOverrides, load_model, prepare_run
    from edge.settings import usable_cores

    # 1024 tokens: room for pp512 at every ubatch candidate, little memory.
    overrides = SettingsOverrides(n_ctx=TUNE_CTX)
    plan = prepare_run(LoadRequest(model=model, device=device_name, overrides=overrides, no_tune=True, root=root))
    fast, _ = usable_cores(plan.device)
    click.echo(
        f"tuning {plan.model_path.name} on {plan.choice.profile.name}: threads 1..{fast}, about {budget:.0f} s",
        err=True,
    )
    with load_model(plan) as loaded:
        result = tuning.tune_model(loaded, fast_cores=fast, budget_s=budget, progress=_progress)
    _end_progress()
    stored = None
    if result.tuned and not result.interrupted:
        result.tuned = replace(
            result.tuned,
            device_key=stored_tuning.device_key(plan.device),
            model_key=stored_tuning.model_key(plan.model_path),
        )
        stored = stored_tuning.store(result.tuned)
    if as_json:
        click.echo(json.dumps(_tune_json(result, stored), indent=2))
    else:
        click.echo(_tune_table(result))
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    if result.interrupted:
        click.echo("interrupted: nothing stored", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if stored:
        t = result.tuned
        click.echo(
            f"stored threads {t.n_threads}/{t.n_threads_batch}"
            + (f", ubatch {t.n_ubatch}" if t.n_ubatch else "")
            + f" in {stored}; `edge-gemma run` "
            "and `bench` use them from now on (--no-tune on bench ignores them)",
            err=True,
        )


def _show_or_reset_tuning(model, root, *, reset: bool, as_json: bool) -> None:
    """`tune --show` / `tune --reset`: the stored settings of this device, no model loaded."""
    from edge import tuned as stored_tuning
    from edge.device.info import detect

    info = detect(root)
    if reset:
        from edge.model.files import resolve_model

        removed = stored_tuning.reset(info, resolve_model(model) if model else None)
        click.echo(f"removed {removed} tuned setting(s) for this device from {stored_tuning.tuned_path()}")
        return
    mine = stored_tuning.load_all().get(stored_tuning.device_key(info), {})
    if as_json:
        click.echo(json.dumps(mine, indent=2))
    elif not mine:
        click.echo(f"nothing tuned for this device yet ({stored_tuning.tuned_path()}); run `edge-gemma tune`")
    for key, entry in mine.items():
        ub = f", ubatch {entry['n_ubatch']}" if entry.get("n_ubatch") else ""
        click.echo(
            f"{key.split('|')[0]}: threads {entry['n_threads']}/{entry['n_threads_batch']}{ub} "
            f"(decode {entry['decode_tps']:.2f} t/s, prompt {entry['prefill_tps']:.2f} t/s, "
            f"{entry['tuned_at']})"
        )


def _tune_json(result, stored) -> dict:
    return {
        "tuned": asdict(result.tuned) if result.tuned else None,
        "stored": str(stored) if stored else None,
        "seconds": round(result.seconds, 2),
        "interrupted": result.interrupted,
        "notes": result.notes,
        "races": {
            race.setting: {
                str(c): {"mean_ts": race.mean(c), "stddev_ts": race.stdev(c), "runs": len(v)}
                for c, v in race.samples.items()
            }
            for race in result.races
        },
    }


def _tune_table(result) -> str:
    lines = []
    for race in result.races:
        best = race.best()
        cells = [
            f"{c}: {race.mean(c):.2f} ± {race.stdev(c):.2f} t/s ({len(v)})" + (" <- best" if c == best else "")
            for c, v in sorted(race.samples.items())
        ]
        lines.append(f"{race.setting}:\n  " + "\n  ".join(cells))
    lines.append(f"measured for {result.seconds:.0f} s")
    return "\n".join(lines)
