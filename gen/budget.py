"""Quality against training compute: the pure arithmetic behind comparing models at equal budgets.

A quality curve is a run's validation metric at a few points of its training, each point with the
compute spent to get there (cumulative FLOPs, or seconds). Models finish at very different
budgets, so a comparison reads each curve at common budgets: linear in log-compute between the
two points around a budget (the curve points are geometric in steps, so log-compute spaces them
evenly), never beyond a curve's ends. No pandas, no MLflow: lists of numbers in, numbers out.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

Point = tuple[float, float]  # (compute: FLOPs or seconds, quality)


def on_steps(
    values: Sequence[tuple[int, float]], compute: Sequence[tuple[int, float]]
) -> list[tuple[int, float, float]]:
    """Each (step, value) with the compute spent through its step: (step, compute, value).

    Compute is taken as logged at that step, else linear in steps between the logged steps
    around it (compute grows by the same amount every step of a phase), with nothing spent at
    step 0. A step past the last logged one is dropped: no extrapolation.
    """
    known = dict(sorted({0: 0.0, **{int(s): float(c) for s, c in compute}}.items()))
    steps = list(known)
    out = []
    for step, value in sorted(values):
        if step in known:
            out.append((step, known[step], float(value)))
            continue
        after = next((s for s in steps if s > step), None)
        if after is None:
            continue
        before = max(s for s in steps if s < step)
        share = (step - before) / (after - before)
        spent = known[before] + share * (known[after] - known[before])
        out.append((step, spent, float(value)))
    return out


def _positive(points: Sequence[Point]) -> list[Point]:
    """The points a log axis can hold (compute > 0), in order of compute."""
    return sorted((float(x), float(y)) for x, y in points if x > 0 and not math.isnan(y))


def interpolate(points: Sequence[Point], x: float) -> float | None:
    """The quality at compute `x`: linear in log-compute between the points around it.

    None when `x` lies outside the curve (before its first point or past its last one): a curve
    is never extrapolated. Points at zero compute are ignored (log 0 is not a place).
    """
    pts = _positive(points)
    if not pts or x <= 0 or x < pts[0][0] or x > pts[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        if x0 <= x <= x1:
            if x1 == x0:
                return y1
            share = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + share * (y1 - y0)
    return pts[-1][1]  # a curve of one point, read at that point


def first_reach(points: Sequence[Point], threshold: float) -> float | None:
    """The compute at which quality first falls to `threshold` or below (lower is better).

    Between the last point above the threshold and the first one at or below it, the crossing
    is interpolated linearly in log-compute; a curve whose first point is already there reaches
    it at that point (it was not measured earlier); None when no point gets there.
    """
    pts = _positive(points)
    for i, (x, y) in enumerate(pts):
        if y > threshold:
            continue
        if i == 0 or y == threshold:
            return x
        x0, y0 = pts[i - 1]
        share = (y0 - threshold) / (y0 - y)
        return math.exp(math.log(x0) + share * (math.log(x) - math.log(x0)))
    return None


def band(curves: Sequence[Sequence[Point]]) -> list[tuple[float, float, float, float]]:
    """(compute, mean, min, max) over several seeds' curves, at every compute one of them was
    measured at, within the range all of them cover (each read by `interpolate`)."""
    kept = [_positive(c) for c in curves]
    kept = [c for c in kept if c]
    if not kept:
        return []
    low = max(c[0][0] for c in kept)
    high = min(c[-1][0] for c in kept)
    xs = sorted({x for c in kept for x, _ in c if low <= x <= high})
    out = []
    for x in xs:
        ys = [interpolate(c, x) for c in kept]
        values = [y for y in ys if y is not None]
        if len(values) == len(kept):
            out.append((x, statistics.fmean(values), min(values), max(values)))
    return out


def budgets(finishes: dict[str, float]) -> list[tuple[str, float]]:
    """Common budgets from the compute at which each model finishes (its curve's last point):
    the cheapest model's, the median of all, and the second largest (the most any two models
    reach). Each as (how it was chosen, compute); a budget two rules give is listed once."""
    ends = sorted((x, m) for m, x in finishes.items() if x > 0)
    if not ends:
        return []
    rules = [(f"cheapest finish: {ends[0][1]}", ends[0][0])]
    mid = statistics.median(x for x, _ in ends)
    at = [m for x, m in ends if x == mid]  # the median is a model's own finish (odd count)
    rules.append((f"median finish: {at[0]}" if at else "median finish", mid))
    if len(ends) >= 2:
        rules.append((f"second-largest finish: {ends[-2][1]}", ends[-2][0]))
    out: list[tuple[str, float]] = []
    for label, x in rules:
        if all(not math.isclose(x, seen, rel_tol=1e-9) for _, seen in out):
            out.append((label, x))
    return sorted(out, key=lambda r: r[1])


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """The names no other one dominates, cheapest first: (cost, quality) with both lower is
    better; b dominates a when it is no worse in both and strictly better in one. Equal points
    do not dominate each other, so ties are all on the front."""
    front = []
    for name, (cost, value) in points.items():
        dominated = any(
            c <= cost and v <= value and (c < cost or v < value)
            for other, (c, v) in points.items()
            if other != name
        )
        if not dominated:
            front.append(name)
    return sorted(front, key=lambda n: (points[n][0], points[n][1], n))


def settled_step(
    curves: Sequence[Sequence[tuple[int, float]]], tolerance: float
) -> tuple[int, float, float] | None:
    """The first step at which the mean over seeds comes within `tolerance` (a share of it) of
    the best mean the curves reach, lower being better: past it, more steps buy less than the
    tolerance. Only steps every seed measured (and none of them NaN) count, so the seeds are
    compared point for point. (step, mean there, best mean); None without such a step."""
    measured = [{int(s): float(v) for s, v in c if not math.isnan(v)} for c in curves]
    if not measured:
        return None
    common = sorted(set.intersection(*(set(m) for m in measured)))
    if not common:
        return None
    means = {s: statistics.fmean(m[s] for m in measured) for s in common}
    best = min(means.values())
    limit = best + tolerance * abs(best)
    step = next(s for s in common if means[s] <= limit)
    return step, means[step], best
