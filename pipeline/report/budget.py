"""The report's budget section: quality against training compute, models compared at equal
budgets, the compute each needs to reach a stated quality, and final quality against total
compute with its Pareto front. Reads the runs' compute (`compute/flops`, `compute/seconds`) and
validation curves (`val/fid`, `val/bpd`) from MLflow; the arithmetic is gen.budget's."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gen import budget, stats
from gen.budget import Point
from gen.evaluation import metric
from pipeline import tracking
from pipeline.report import budget_charts
from pipeline.report.collection import DATA, Collected
from pipeline.report.tables import UNCONDITIONAL, Table, cell, ranked_lines

# The validation curves the section reads: report key -> MLflow metric logged along training.
CURVE_KEYS = {"fid": "val/fid", "bpd": "val/bpd"}
# Groups whose FIDs share a chart and a table (one feature space each, as the rankings split
# them): (title, families, feature space, figure file stem).
GROUPS = [
    ("unconditional models [classifier]", UNCONDITIONAL, "classifier", "unconditional"),
    ("conditional models [classifier]", ("conditional",), "classifier", "conditional"),
    ("translation [domain-classifier]", ("translation",), "domain-classifier", "translation"),
]
REACH_FACTOR = 2.0  # compute to reach a validation FID within this factor of the data row's
NOT_THAT_FAR = "n/a (not trained that far)"
NOT_THAT_EARLY = "n/a (first measured later)"
NEVER = "n/a (never reached)"
NO_CURVES = (
    "No compute curves in these runs: they were trained before genbench logged compute "
    "(compute/flops, compute/seconds) and validation quality (val/fid) along training, so "
    "there is nothing to compare at equal budgets. Rerun the benchmark to get this section."
)


@dataclass
class RunCurves:
    """One run's validation curves against its compute, and its total training FLOPs."""

    model: str
    seed: str
    flops: dict[str, list[Point]] = field(default_factory=dict)  # key -> [(FLOPs, value)]
    seconds: dict[str, list[Point]] = field(default_factory=dict)  # key -> [(s, value)]
    total_flops: float | None = None
    final: dict[str, float | None] = field(default_factory=dict)  # key -> its test value


@dataclass
class Figure:
    label: str
    path: Path


@dataclass
class Ranking:
    title: str
    lines: list[str]  # "1. model: cell (n=...); verdict", as the report's rankings


Block = str | Figure | Table | Ranking  # a paragraph, a chart, a table, a ranking


@dataclass
class Part:
    """One subsection: a title and its blocks, shown in order."""

    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Section:
    """The budget section: what it shows and how to read it, then its parts."""

    intro: list[str]
    parts: list[Part]


def collect_curves(c: Collected, order: list[str]) -> list[RunCurves]:
    """Each run's curves: two metric histories for its compute and one per validation metric.
    A run without `compute/flops` (trained before compute was logged) has no curves."""
    out = []
    for _, r in c.runs[c.runs.model.isin(order)].iterrows():
        flops = tracking.metric_history(r.run_id, "compute/flops")
        rc = RunCurves(r.model, str(r.seed), total_flops=_number(r.get("train_flops")))
        rc.final = {key: _number(r.get(key)) for key in CURVE_KEYS}
        if flops:
            seconds = tracking.metric_history(r.run_id, "compute/seconds")
            for key, mlflow_key in CURVE_KEYS.items():
                values = tracking.metric_history(r.run_id, mlflow_key)
                rc.flops[key] = [(x, v) for _, x, v in budget.on_steps(values, flops)]
                rc.seconds[key] = [(x, v) for _, x, v in budget.on_steps(values, seconds)]
            if rc.total_flops is None:
                rc.total_flops = float(max(flops)[1])
        out.append(rc)
    return out


def _number(v: Any) -> float | None:
    """A metric cell as a float; None where the run has none (pandas reads None as NaN)."""
    if v is None:
        return None
    number = float(v)
    return None if math.isnan(number) else number


def make_section(c: Collected, order: list[str], figs: Path) -> Section:
    """The section from the runs' curves (charts drawn into `figs`); one line when no run of
    this report logged compute."""
    runs = collect_curves(c, order)
    if not any(r.flops for r in runs):
        return Section([NO_CURVES], [])
    intro = [
        "Quality along training against the compute spent on it: every model draws samples "
        "(eval.curve_samples, fewer than the final evaluation's) and scores them against the "
        "validation split (val/fid, and val/bpd for likelihood models) at points geometric in "
        "its steps, plus its last, each logged with the "
        "training FLOPs (forward and backward of every phase, counted once per model with "
        "torch.utils.flop_counter) and train seconds spent so far. The test split is read only "
        "by the final evaluation (the Pareto chart).",
        "Lines: mean over seeds; band: min to max over seeds (where every seed has a point; a "
        "seed is read between its points linearly in log-compute). Dashed red: the data row's "
        "test FID, the floor. A curve scores fewer samples than the final evaluation and FID is "
        "biased upward at small n, so a curve cannot quite reach that floor.",
        "A model's value at a budget is read from each seed's curve linearly in log-FLOPs "
        f"between the two points around it, never extrapolated: '{NOT_THAT_FAR}' when its "
        f"curve ends before the budget, '{NOT_THAT_EARLY}' when its first point is past it. "
        "Budgets of a table, from the FLOPs at which its models finish (their last curve "
        "point): the cheapest model's, the median over models, and the second largest (the "
        "most that two models reach). Cells and rankings as in the tables above.",
    ]
    parts = []
    for group in GROUPS:
        part = _fid_part(c, runs, order, group, figs)
        if part is not None:
            parts.append(part)
    part = _bpd_part(c, runs, order, figs / "budget_bpd.png")
    if part is not None:
        parts.append(part)
    parts.append(_pareto_part(c, runs, order, figs / "budget_pareto.png"))
    return Section(intro, parts)


def _members(c: Collected, order: list[str], families: tuple, space: str) -> list[str]:
    df = c.runs
    return [
        m
        for m in order
        if df[df.model == m].family.iloc[0] in families
        and (df[df.model == m].feature_extractor == space).all()
    ]


def _floor(c: Collected, space: str | None) -> float | None:
    """The data row's mean FID over its draws in `space`, if it has one."""
    s = stats.summarise(c.reference.get(space or "", {}).get("fid", []))
    return None if s is None else s.mean


def _with_curve(runs: list[RunCurves], models: list[str], key: str) -> dict[str, list[RunCurves]]:
    """Each of `models` that has a curve of `key` at positive compute -> its runs with one."""
    out: dict[str, list[RunCurves]] = {}
    for m in models:
        have = [r for r in runs if r.model == m and any(x > 0 for x, _ in r.flops.get(key, []))]
        if have:
            out[m] = have
    return out


def _fid_part(
    c: Collected, runs: list[RunCurves], order: list[str], group: tuple, figs: Path
) -> Part | None:
    """One group's validation FID: its chart, the equal-budget table and rankings, and the
    compute each model needs to come within REACH_FACTOR of the data row."""
    title, families, space, stem = group
    models = _members(c, order, families, space)
    curves = _with_curve(runs, models, "fid")
    if not curves:
        return None
    floor = _floor(c, space)
    part = Part(f"Validation FID against training compute, {title}")
    missing = [m for m in models if m not in curves]
    if missing:
        part.blocks.append(f"No validation FID curve beyond 0 FLOPs: {', '.join(missing)}.")
    label = f"validation FID, {title}"
    path = figs / f"budget_fid_{stem}.png"
    drawn = budget_charts.quality_curves(curves, "fid", label, floor, models, path)
    part.blocks.append(Figure(f"{label} against training FLOPs and train seconds", drawn))
    data_row = None
    ref = c.reference.get(space, {}).get("fid", [])
    if ref:
        data_row = [f"{DATA} (real images, test FID)", str(len(ref))]
        data_row.append(cell(stats.summarise(ref), metric("fid").fmt))
    part.blocks += _equal_budget(curves, "fid", "validation FID", f", {title}", data_row)
    if floor is None:
        part.blocks.append("No data row in this protocol: compute to reach a quality not shown.")
    else:
        part.blocks.append(_reach(curves, floor, title))
    return part


def _bpd_part(c: Collected, runs: list[RunCurves], order: list[str], path: Path) -> Part | None:
    curves = _with_curve(runs, order, "bpd")
    if not curves:
        return None
    exact = c.runs["exact_test_bpd"].dropna()
    floor = float(exact.iloc[0]) if len(exact) else None
    part = Part("Validation bits/dim against training compute (likelihood models)")
    label = "validation bits/dim (likelihood models)"
    _, families, space, _ = GROUPS[0]  # colours as in the unconditional models' FID chart
    palette = _members(c, order, families, space)
    palette += [m for m in curves if m not in palette]
    drawn = budget_charts.quality_curves(
        curves, "bpd", label, floor, palette, path, "exact NLL of the data"
    )
    part.blocks.append(Figure(f"{label} against training FLOPs and train seconds", drawn))
    part.blocks += _equal_budget(curves, "bpd", "validation bits/dim", "", None)
    return part


def _equal_budget(
    curves: dict[str, list[RunCurves]],
    key: str,
    what: str,
    group: str,
    data_row: list[str] | None,
) -> list[Block]:
    """Every model's value at the table's budgets (per seed, then over seeds) and, per budget,
    the models that reach it ranked as the report's rankings are."""
    finishes = {m: min(max(x for x, _ in r.flops[key]) for r in rs) for m, rs in curves.items()}
    chosen = budget.budgets(finishes)
    head = ["model", "n"] + [f"at {x:.3g} FLOPs ({rule})" for rule, x in chosen]
    body = [data_row[:2] + data_row[2:] * len(chosen)] if data_row else []
    values = {
        m: [[budget.interpolate(r.flops[key], x) for r in rs] for _, x in chosen]
        for m, rs in curves.items()
    }
    for m, rs in curves.items():
        row = [m, str(len(rs))]
        for (_, x), per_seed in zip(chosen, values[m], strict=True):
            row.append(_budget_cell(per_seed, [r.flops[key] for r in rs], x, key))
        body.append(row)
    notes = [
        f"{metric(key).label} read from each seed's validation curve linearly in log-FLOPs; "
        "n = seeds with a curve (fewer in a cell: only those seeds reach that budget)."
    ]
    if data_row:
        notes.append(
            "data row: the final evaluation's floor (test split, the full sample count), the "
            "same at every budget."
        )
    blocks: list[Block] = [(f"{what} at equal training FLOPs{group}", head, body, notes)]
    for i, (rule, x) in enumerate(chosen):
        groups = {m: v[i] for m, v in values.items() if any(y is not None for y in v[i])}
        if len(groups) >= 2:
            name = f"{what} at {x:.3g} FLOPs ({rule}){group}"
            blocks.append(Ranking(name, ranked_lines(groups, key)))
    return blocks


def _budget_cell(
    per_seed: list[float | None], seed_curves: list[list[Point]], x: float, key: str
) -> str:
    """A model's value at budget `x` over its seeds, or why there is none."""
    s = stats.summarise(per_seed)
    if s is None:
        ends = [max(px for px, _ in pts if px > 0) for pts in seed_curves]
        return NOT_THAT_FAR if all(end < x for end in ends) else NOT_THAT_EARLY
    text = cell(s, metric(key).fmt)
    return text if s.n == len(per_seed) else f"{text} (n={s.n})"


def _reach(curves: dict[str, list[RunCurves]], floor: float, title: str) -> Table:
    """The FLOPs and train seconds at which each model's validation FID first falls within
    REACH_FACTOR x the data row's, over the seeds that got there."""
    threshold = REACH_FACTOR * floor
    body = []
    for m, rs in curves.items():
        flops = [budget.first_reach(r.flops["fid"], threshold) for r in rs]
        secs = [budget.first_reach(r.seconds["fid"], threshold) for r in rs]
        reached = sum(f is not None for f in flops)
        row = [m, f"{reached} of {len(rs)}"]
        for values in (flops, secs):
            s = stats.summarise(values)
            row.append(NEVER if s is None else cell(s, "{:.3g}"))
        body.append(row)
    head = ["model", "seeds that reached it", "training FLOPs", "train s"]
    notes = [
        "The first point of each seed's validation curve at or below the threshold, with the "
        "crossing interpolated linearly in log-FLOPs (log-seconds) from the point before it; "
        "mean ± sd [95% interval] over the seeds that reached it."
    ]
    name = f"Compute to reach a validation FID at most {REACH_FACTOR:g}x the data row's"
    name += f" ({threshold:.2f})"
    return (f"{name}, {title}", head, body, notes)


def _pareto_part(c: Collected, runs: list[RunCurves], order: list[str], path: Path) -> Part:
    """Final test quality against total training FLOPs, mean over seeds, and the front."""
    part = Part("Final test quality against total training compute (Pareto front)")
    panels, fronts = [], []
    wanted = [
        (f"test FID, {title}", "fid", _members(c, order, families, space), _floor(c, space))
        for title, families, space, _ in GROUPS
    ]
    wanted.append(("test bits/dim (likelihood models)", "bpd", order, None))
    for label, key, models, floor in wanted:
        points = _final_points(runs, models, key)
        if not points:
            continue
        front = budget.pareto_front({m: (p[0], p[1]) for m, p in points.items()})
        panels.append((label, points, front, floor))
        fmt = metric(key).fmt
        listed = [f"{m} ({points[m][0]:.3g} FLOPs, {fmt.format(points[m][1])})" for m in front]
        fronts.append(f"Front, {label}, cheapest first: {', '.join(listed)}.")
    if not panels:
        part.blocks.append("No run of this report logged its total training FLOPs (train_flops).")
        return part
    unknown = [m for m in order if not any(r.total_flops is not None for r in runs if r.model == m)]
    if unknown:
        fronts.append(f"No total training FLOPs logged (not drawn): {', '.join(unknown)}.")
    part.blocks.append(
        "Each point: a model's final test metric and total training FLOPs, both mean over "
        "seeds (bars: min to max over seeds). On the front (red): no other model is both at "
        "most as costly and at least as good, and better in one; lower is better in both. A "
        "model fitted without gradient steps (0 FLOPs) is drawn at the left edge.",
    )
    drawn = budget_charts.pareto(panels, path)
    part.blocks.append(Figure("final test quality against total training FLOPs", drawn))
    part.blocks += fronts
    return part


def _final_points(
    runs: list[RunCurves], models: list[str], key: str
) -> dict[str, tuple[float, float, float, float]]:
    """model -> (mean total FLOPs, mean test `key`, min, max over seeds) where both are known."""
    out = {}
    for m in models:
        pairs = [
            (r.total_flops, float(v))
            for r in runs
            if r.model == m and r.total_flops is not None and (v := r.final.get(key)) is not None
        ]
        if pairs:
            ys = [v for _, v in pairs]
            out[m] = (statistics.fmean(f for f, _ in pairs), statistics.fmean(ys), min(ys), max(ys))
    return out
