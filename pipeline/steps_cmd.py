"""`genbench steps`: each model's step count read off a benchmark's validation curves by a stated
rule, so the `steps` in params.yaml rest on evidence anyone can recompute from the MLflow store.

The rule: the first curve point at which the mean over seeds of validation FID (and of
validation bits/dim, for likelihood models) comes within a tolerance of the best mean the
curve reaches. The curves run to the steps the benchmark trained, so the rule can shorten a
model, never lengthen it: a model still improving at its last point settles there, and is
marked so (train it longer to learn more).
"""

from __future__ import annotations

import click

from gen import budget
from gen.data import dataset_id
from pipeline import tracking
from pipeline.params import load_params
from pipeline.user_errors import user_errors

FID_TOLERANCE = 0.05  # the example rule: within 5% of the best FID
BPD_TOLERANCE = 0.005  # bits/dim differ by ~0.5% between seeds: 5% would hide real differences


def settled(
    histories: dict[str, list[list[tuple[int, float]]]], tolerances: dict[str, float]
) -> dict[str, tuple[int, float, float] | None]:
    """For each curve (key -> one history per seed) the step the rule settles on."""
    return {
        key: budget.settled_step(seeds, tolerances[key]) if seeds else None
        for key, seeds in histories.items()
    }


def suggestion(found: dict[str, tuple[int, float, float] | None], last: int) -> tuple[int, str]:
    """The step to train to (the latest any curve settles on) and why, in a params.yaml comment."""
    parts, step = [], 0
    for key, hit in found.items():
        if hit is None:
            continue
        at, mean, best = hit
        step = max(step, at)
        parts.append(f"val {key} {mean:.3g} at {at} (best {best:.3g})")
    why = "; ".join(parts)
    if step == last:
        why += "; still improving at the last point: longer may help"
    return step, why


@click.command("steps")
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option("--benchmark", "benchmark_run", default=None, help="default: the newest benchmark")
@click.option("--fid-tolerance", default=FID_TOLERANCE, show_default=True, type=float)
@click.option("--bpd-tolerance", default=BPD_TOLERANCE, show_default=True, type=float)
@user_errors
def steps(
    params_path: str, benchmark_run: str | None, fid_tolerance: float, bpd_tolerance: float
) -> None:
    """Suggest each model's steps from a benchmark's validation curves (mean over its seeds)."""
    from pipeline.report.budget import CURVE_KEYS  # the curves the budget section reads
    from pipeline.report.collection import collect_nonempty

    p = load_params(params_path)
    c = collect_nonempty(dataset_id(p.data), benchmark_run)
    tolerances = {"fid": fid_tolerance, "bpd": bpd_tolerance}
    click.echo(
        f"benchmark {c.benchmark.get('name', '(none)')}: the first curve point whose mean over "
        f"seeds is within {fid_tolerance:.1%} of the best val FID (and {bpd_tolerance:.1%} of "
        "the best val bits/dim, for likelihood models)"
    )
    for model, runs in c.runs.groupby("model", sort=False):
        histories = {
            key: [h for h in (tracking.metric_history(r, name) for r in runs.run_id) if h]
            for key, name in CURVE_KEYS.items()
        }
        last = max((s for seeds in histories.values() for h in seeds for s, _ in h), default=0)
        if not last:
            click.echo(
                f"{model}: no validation curve (it takes no gradient steps, "
                "or its runs predate curves)"
            )
            continue
        step, why = suggestion(settled(histories, tolerances), last)
        seeds = ", ".join(str(s) for s in runs.seed)
        click.echo(f"{model}: steps {step} (trained {last}; seeds {seeds}): {why}")
