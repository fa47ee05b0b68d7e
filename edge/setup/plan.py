"""The plan: which model/quant/context/projector a profile wants that fits this device, before
anything is downloaded (sizes from hub listings when given, else from the catalog). The memory
arithmetic itself is model/memory.py's, shared with the run-time check (`check_fits`).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from edge.device.info import DeviceInfo
from edge.errors import MemoryFitError, UsageError
from edge.model.kv_size import KNOWN_SHAPES, AttentionShape, ModelDims
from edge.model.memory import (
    MIB,
    MemoryLine,
    context_buffers,
    device_budget,
    gb,
    lazy_effective,
    memory_lines,
    mib,
)
from edge.profiles import Profile
from edge.settings import RunSettings
from edge.setup import catalog
from edge.workers.split import earliest_start

CTX_FLOOR = 2048  # a voice turn (30 s of audio = 750 tokens) plus a reply fits in 2K


@dataclass(frozen=True)
class PlannedFile:
    role: str  # "model" or "mmproj"
    repo: str
    name: str | None  # None: not recorded; the downloader finds it in the repo listing
    size: int
    size_source: str
    precision: str


@dataclass(frozen=True)
class Plan:
    model: str
    quant: str
    mmproj_precision: str | None
    lazy_ple: bool
    files: tuple[PlannedFile, ...]
    lines: tuple[MemoryLine, ...]
    total_bytes: int
    budget_bytes: int
    settings: RunSettings
    reasons: tuple[str, ...]
    profile: str

    @property
    def headroom_bytes(self) -> int:
        return self.budget_bytes - self.total_bytes


@dataclass(frozen=True)
class _Candidate:
    quant: str
    lazy: bool
    mmproj: catalog.ResolvedFile | None
    n_ctx: int
    model_file: catalog.ResolvedFile
    lines: tuple[MemoryLine, ...]

    @property
    def total(self) -> int:
        return sum(line.bytes for line in self.lines)


def _dims_from_card(card: catalog.ModelCard) -> ModelDims:
    return ModelDims(card.n_vocab, card.n_embd, card.n_head, card.n_ff_max, card.n_embd_per_layer)


def _ctx_ladder(start: int, floor: int) -> list[int]:
    out, n = [start], start // 2
    while n >= min(floor, start):
        out.append(n)
        n //= 2
    return out


def choose_plan(
    profile: Profile,
    device: DeviceInfo,
    *,
    model: str | None = None,
    quant: str | None = None,
    n_ctx: int | None = None,
    with_mmproj: bool = True,
    listings: Mapping[str, Sequence[catalog.ListedFile]] | None = None,
    settings: RunSettings | None = None,
    swa_full: bool = False,
    ctx_floor: int = CTX_FLOOR,
    workers_room: int = 0,
) -> Plan:
    """The best fitting model/quant/context/projector for this profile and device.

    Order of sacrifice, cheapest first within the profile's quant preference: turn lazy PLE on
    (no quality cost, 8-11% slower decode; it only changes the fit when the model is locked or
    copied into memory, see MAPPED_LOAD_MODES), then step the projector down its precision list
    (F16/BF16 keep audio quality, Q8_0 saves ~430 MB), then halve n_ctx down to `ctx_floor`; only
    then take the next quant. Forced values (model/quant/n_ctx) never change: if they cannot fit,
    MemoryFitError says by how much.

    `workers_room`: bytes RPC workers can hold (workers/split.py). Then E4B is tried first, at the
    profile's first quant, when the profile's model is E2B and no model is forced (a 2-bit E4B is not
    worth more than E2B); a choice that does not fit this board alone may put layers on the workers
    (an "on workers" line); the run-time split picks the exact layers.
    """
    if workers_room and model is None and profile.model == "e2b":
        try:
            plan = choose_plan(
                profile,
                device,
                model="e4b",
                quant=quant or profile.quants[0],
                n_ctx=n_ctx,
                with_mmproj=with_mmproj,
                listings=listings,
                settings=settings,
                swa_full=swa_full,
                ctx_floor=ctx_floor,
                workers_room=workers_room,
            )
            return replace(plan, reasons=(*plan.reasons, "E4B instead of the profile's E2B: the workers make room"))
        except (MemoryFitError, UsageError):
            pass
    model = model or profile.model
    card = catalog.card(model)
    base = settings or RunSettings(**{f.name: getattr(profile, f.name) for f in fields(RunSettings)})
    budget, budget_why = device_budget(device, profile)
    shape, dims = KNOWN_SHAPES[model], _dims_from_card(card)
    forced = [
        f"--{k} {v}"
        for k, v in (("model", model if model != profile.model else None), ("quant", quant), ("ctx", n_ctx))
        if v
    ]
    reasons = [f"profile {profile.name}: {card.title}, quants {' > '.join(profile.quants)}; budget {budget_why}"]

    quants = [quant] if quant else list(profile.quants)
    files = {q: catalog.resolve_model_file(model, q, listings) for q in quants}
    missing = [q for q, f in files.items() if f is None]
    if quant and missing:
        raise UsageError(
            f"no listed repo has {model} {quant}; pick another --quant (profile quants: {', '.join(profile.quants)})"
        )
    for q in missing:
        reasons.append(f"{q}: no listed repo has it, skipped")
    mm_options: list[catalog.ResolvedFile | None] = [None]
    if with_mmproj:
        found = [catalog.resolve_mmproj_file(model, p, listings) for p in profile.mmproj_quants]
        mm_options = [m for m in found if m is not None] or [None]
        if mm_options == [None]:
            reasons.append("no projector (mmproj) in the listed repos: text only, no audio or images")
    start = min(n_ctx or profile.n_ctx, 131072)
    ladder = [start] if n_ctx else _ctx_ladder(start, ctx_floor)
    lazy_options = [True] if base.lazy_mode == "on" else [False, True]

    evaluate = functools.partial(
        _candidate, files, profile, base, shape, dims, swa_full, _Offload(budget, workers_room, card, shape)
    )

    usable = [q for q in quants if files[q] is not None]
    smallest_mm = min(mm_options, key=lambda m: m.size if m else 0)
    # product() varies the last factor fastest: n_ctx, then projector, then lazy PLE, then quant.
    tries = (evaluate(*k) for k in itertools.product(usable, lazy_options, mm_options, ladder))
    chosen = next((c for c in tries if c.total <= budget), None)
    if chosen is None:
        raise _no_fit(model, usable, evaluate, lazy_options[-1], smallest_mm, ladder, budget, forced, with_mmproj)
    for q in usable[: usable.index(chosen.quant)]:
        smallest = evaluate(q, True, smallest_mm, ladder[-1])
        reasons.append(
            f"{q} does not fit: even with lazy PLE, the smallest projector and n_ctx "
            f"{ladder[-1]} it needs {gb(smallest.total)} of {gb(budget)}"
        )

    reasons += _why(chosen, evaluate, base, profile, mm_options, ladder, budget)
    out_settings = replace(base, n_ctx=chosen.n_ctx, lazy_mode="on" if chosen.lazy else base.lazy_mode)
    planned = _planned_files(chosen)
    if any(p.size_source not in ("hub listing", "recorded") for p in planned):
        reasons.append("some sizes are estimates: the plan is redone with the hub's real sizes before downloading")
    plan = Plan(
        model,
        chosen.quant,
        chosen.mmproj.precision if chosen.mmproj else None,
        chosen.lazy,
        tuple(planned),
        chosen.lines,
        chosen.total,
        budget,
        out_settings,
        (),
        profile.name,
    )
    reasons.append(f"{gb(plan.headroom_bytes)} left over after everything, OS headroom included")
    return replace(plan, reasons=tuple(reasons))


@dataclass(frozen=True)
class _Offload:
    """What RPC workers can take off this board: the repeating layers' weights, not the per-layer
    embeddings or the token embedding (the output matrix stays here, workers/split.py)."""

    budget: int
    room: int
    card: catalog.ModelCard
    shape: AttentionShape

    def line(self, lines: list[MemoryLine]) -> MemoryLine | None:
        over = sum(line.bytes for line in lines) - self.budget
        if self.room <= 0 or over <= 0:
            return None
        weights = next(line.bytes for line in lines if line.label == "model weights")
        embedding = self.card.n_vocab * self.card.n_embd * 9 // 16  # ~4.5 bits a weight (Q4_0's size)
        movable = max(weights - embedding, 0)
        # The shortest tail a split can have: the layers whose cache the last ones reuse go with them.
        n = self.shape.n_layer
        shortest = movable * (n - earliest_start(self.shape, n - 1)) // n
        moved = min(self.room, movable, max(over, shortest))
        layers = round(n * moved / movable) if movable else 0
        return MemoryLine(
            "on workers", -moved, f"~{layers} of {n} layers over RPC ({gb(self.room)} free there); the run picks them"
        )


def _candidate(
    files: dict,
    profile: Profile,
    base: RunSettings,
    shape,
    dims: ModelDims,
    swa_full: bool,
    offload: _Offload,
    q: str,
    lazy: bool,
    mm: catalog.ResolvedFile | None,
    ctx: int,
) -> _Candidate:
    """One combination of quant, lazy PLE, projector and context, with its memory lines."""
    mf = files[q]
    ple = catalog.estimate_ple_bytes(mf.size)
    is_lazy = (lazy and ple > 0) or lazy_effective(base.lazy_mode, ple)
    kv, compute = context_buffers(shape, dims, ctx, base, swa_full=swa_full)
    where = "GPU (shared memory)" if profile.mmproj_gpu and base.n_gpu_layers != 0 else "CPU"
    lines = memory_lines(
        weights=mf.size,
        ple=ple,
        lazy=is_lazy,
        kv=kv,
        compute=compute,
        mmproj=mm.size if mm else 0,
        mmproj_note=f"{mm.precision}, on the {where}" if mm else "",
        os_headroom=profile.os_headroom_mb * MIB,
        load_mode=base.load_mode,
        image_tokens=base.image_tokens,
    )
    if (moved := offload.line(lines)) is not None:
        lines.append(moved)
    return _Candidate(q, is_lazy, mm, ctx, mf, tuple(lines))


def _planned_files(chosen: _Candidate) -> list[PlannedFile]:
    m = chosen.model_file
    planned = [PlannedFile("model", m.repo, m.name, m.size, m.size_source, chosen.quant)]
    if chosen.mmproj:
        p = chosen.mmproj
        planned.append(PlannedFile("mmproj", p.repo, p.name, p.size, p.size_source, p.precision))
    return planned


def _why(
    chosen: _Candidate, evaluate, base: RunSettings, profile: Profile, mm_options, ladder, budget: int
) -> list[str]:
    """One human line per decision the planner made."""
    out = [f"{chosen.quant}: {gb(chosen.model_file.size)} ({chosen.model_file.repo})"]
    if chosen.lazy and base.lazy_mode != "on":
        eager = evaluate(chosen.quant, False, chosen.mmproj, chosen.n_ctx)
        if eager.lazy:
            out.append("lazy PLE on: llama.cpp's auto mode reads a per-layer table above 4 GiB lazily")
        else:
            out.append(
                f"lazy PLE turned on: without it this plan needs {gb(eager.total)}, "
                f"{gb(eager.total - budget)} over; decode is 8-11% slower"
            )
    elif chosen.lazy:
        ple = next(line for line in chosen.lines if line.label == "per-layer embeddings")
        out.append(f"lazy PLE on (profile): {ple.note}")
    first_mm = mm_options[0]
    if chosen.mmproj is not None and first_mm is not None and chosen.mmproj.precision != first_mm.precision:
        best = evaluate(chosen.quant, chosen.lazy, first_mm, chosen.n_ctx)
        out.append(
            f"projector {chosen.mmproj.precision} instead of {first_mm.precision}: {first_mm.precision} "
            f"needs {gb(best.total - budget)} more than fits (audio is better at F16/BF16)"
        )
    elif chosen.mmproj is not None:
        out.append(f"projector {chosen.mmproj.precision}: {gb(chosen.mmproj.size)} ({chosen.mmproj.repo})")
    if chosen.n_ctx != ladder[0]:
        full = evaluate(chosen.quant, chosen.lazy, chosen.mmproj, ladder[0])
        out.append(
            f"n_ctx {chosen.n_ctx} instead of {ladder[0]}: {ladder[0]} needs {gb(full.total - budget)} more than fits"
        )
    return out


def _no_fit(model, usable, evaluate, lazy, smallest_mm, ladder, budget, forced, with_mmproj):
    if not usable:
        return MemoryFitError(
            f"no file for {model} in any quant the profile allows; list the repos again or pass --quant"
        )
    smallest = min((evaluate(q, lazy, smallest_mm, ladder[-1]) for q in usable), key=lambda c: c.total)
    what = f"{model} {smallest.quant} at n_ctx {smallest.n_ctx}" + (" with lazy PLE" if smallest.lazy else "")
    if smallest.mmproj:
        what += f" and the {smallest.mmproj.precision} projector"
    short = smallest.total - budget
    headroom = next(line.bytes for line in smallest.lines if line.label == "OS and other programs")
    msg = (
        f"{what} needs {gb(smallest.total)} (OS headroom {gb(headroom)} included) but this device "
        f"has {gb(budget)}: {gb(short)} short"
        f" ({'forced by ' + ', '.join(forced) if forced else 'the smallest choice the profile allows'})"
    )
    if with_mmproj and smallest.mmproj:
        projector = sum(line.bytes for line in smallest.lines if line.label.startswith("projector"))
        text_only = smallest.total - projector
        msg += f"; text only (no projector) would need {gb(text_only)}"
    return MemoryFitError(msg + "; pick a smaller --quant/--model/--ctx or a profile with less OS headroom")


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """A JSON-ready dict (bytes as integers) for `--json`."""
    return {
        "profile": plan.profile,
        "model": plan.model,
        "quant": plan.quant,
        "mmproj_precision": plan.mmproj_precision,
        "lazy_ple": plan.lazy_ple,
        "files": [asdict(f) for f in plan.files],
        "memory": [asdict(line) for line in plan.lines],
        "total_bytes": plan.total_bytes,
        "budget_bytes": plan.budget_bytes,
        "headroom_bytes": plan.headroom_bytes,
        "settings": plan.settings.to_dict(),
        "reasons": list(plan.reasons),
    }


def format_plan_table(plan: Plan) -> str:
    """Plain text: files, the memory budget line by line, headroom, reasons."""
    out = [f"Plan for {plan.profile}: {plan.model} {plan.quant}, n_ctx {plan.settings.n_ctx}", "", "Files"]
    for f in plan.files:
        where = f"{f.repo}/{f.name}" if f.name else f"{f.repo} ({f.precision}, name found when listed)"
        out.append(
            f"  {f.role:<7} {where}  {gb(f.size)}"
            + {"hub listing": "", "recorded": "  [catalog size, not listed now]"}.get(
                f.size_source, f"  [{f.size_source}]"
            )
        )
    out += ["", "Memory"]
    width = max(len(line.label) for line in plan.lines)
    for line in plan.lines:
        out.append(f"  {line.label:<{width}}  {mib(line.bytes):>11}  {line.note}")
    rule = "  " + "-" * (width + 13)
    out += [
        rule,
        f"  {'total':<{width}}  {mib(plan.total_bytes):>11}",
        f"  {'budget':<{width}}  {mib(plan.budget_bytes):>11}",
        f"  {'left over':<{width}}  {mib(plan.headroom_bytes):>11}",
        "",
        "Why",
    ]
    out += [f"  - {reason}" for reason in plan.reasons]
    return "\n".join(out)
