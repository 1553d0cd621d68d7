"""Aggregation over training seeds and a stated test, so a report says how sure a ranking is.

One training run is one draw: two models' scores differ by seed as well as by model. These
functions summarise each model's scores over its seeds (mean, sample std, a 95% t interval) and
say whether two models are distinguishable by Welch's t-test, naming the test in every verdict.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _scipy_stats

WELCH = "Welch t-test"
IDENTICAL = "identical across seeds"


@dataclass(frozen=True)
class Summary:
    """A model's score over seeds: std and the 95% interval of the mean are None for one seed."""

    n: int
    mean: float
    std: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True)
class Comparison:
    """Model a against model b over seeds: diff = mean_a - mean_b and the test that judged it."""

    a: str
    b: str
    diff: float
    p: float | None
    distinguishable: bool
    test: str


def _clean(values: Sequence[float | None]) -> np.ndarray:
    """The scores left after dropping missing runs (None) and failed ones (NaN)."""
    kept = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return np.asarray(kept, dtype=np.float64)


def _all_equal(x: np.ndarray) -> bool:
    """True when every value is the same, so the spread is exactly zero (not a rounding residue)."""
    return len(x) > 0 and bool(np.all(x == x[0]))


def summarise(values: Sequence[float | None]) -> Summary | None:
    """Mean, sample std (ddof=1) and a Student-t 95% interval of the mean over seeds.

    None and NaN (a run that is missing or failed) are dropped; None when nothing is left. With one
    seed there is no spread to estimate, so std/low/high are None rather than a made-up zero.
    Identical values give std 0 and low = high = mean exactly.
    """
    x = _clean(values)
    n = len(x)
    if n == 0:
        return None
    if n < 2:
        return Summary(n, float(x[0]), None, None, None)
    if _all_equal(x):
        mean = float(x[0])
        return Summary(n, mean, 0.0, mean, mean)
    mean = float(np.mean(x))
    std = float(np.std(x, ddof=1))
    half = float(_scipy_stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


def welch(
    a_name: str,
    a_values: Sequence[float | None],
    b_name: str,
    b_values: Sequence[float | None],
    alpha: float = 0.05,
) -> Comparison:
    """Compare two models' scores over seeds with Welch's unequal-variance t-test.

    None/NaN are dropped first. Edge cases, each stated in `test` rather than hidden:
    - fewer than 2 values on either side: no variance to test against, so p is None and the pair
      is not distinguishable ("too few seeds (n=... vs ...)");
    - both sides constant over seeds: the t statistic is undefined (0/0); the scores are exact, so
      differing means are distinguishable (p = 0.0) and equal ones are not (p = 1.0);
    - otherwise Welch's t-test, distinguishable when p < alpha.
    """
    a, b = _clean(a_values), _clean(b_values)
    diff = float(np.mean(a) - np.mean(b)) if len(a) and len(b) else math.nan
    if len(a) < 2 or len(b) < 2:
        reason = f"too few seeds (n={len(a)} vs {len(b)})"
        return Comparison(a_name, b_name, diff, None, False, reason)
    if _all_equal(a) and _all_equal(b):
        differ = bool(a[0] != b[0])
        return Comparison(a_name, b_name, diff, 0.0 if differ else 1.0, differ, IDENTICAL)
    with warnings.catch_warnings():
        if _all_equal(a) or _all_equal(b):  # scipy flags "precision loss"; a zero spread is exact
            warnings.simplefilter("ignore", RuntimeWarning)
        p = float(_scipy_stats.ttest_ind(a, b, equal_var=False).pvalue)
    return Comparison(a_name, b_name, diff, p, p < alpha, WELCH)


def rank(
    groups: dict[str, Sequence[float | None]], lower_is_better: bool, alpha: float = 0.05
) -> list[tuple[str, Summary, Comparison | None]]:
    """Models best first by mean score, each compared with the next one down (None for the last).

    Adjacent comparisons say whether each step of the ranking is supported by the seeds. Models
    with no usable score (all None/NaN) cannot be placed and are left out. Ties keep name order.
    """
    summaries = {name: s for name, vals in groups.items() if (s := summarise(vals)) is not None}
    sign = 1.0 if lower_is_better else -1.0
    order = sorted(summaries, key=lambda name: (sign * summaries[name].mean, name))
    out: list[tuple[str, Summary, Comparison | None]] = []
    for i, name in enumerate(order):
        nxt = order[i + 1] if i + 1 < len(order) else None
        comp = welch(name, groups[name], nxt, groups[nxt], alpha) if nxt is not None else None
        out.append((name, summaries[name], comp))
    return out


def _format_p(p: float) -> str:
    """p to two significant figures, with tiny values as a bound rather than noise digits."""
    if 0.0 < p < 0.001:
        return "p < 0.001"
    return f"p = {p:.2g}"


def verdict(c: Comparison, lower_is_better: bool) -> str:
    """One English sentence that a report can print as is, naming the test and its p-value."""
    if c.p is None:
        return f"{c.a} and {c.b} cannot be told apart: {c.test}"
    test = f"{c.test} over seeds" if c.test == WELCH else c.test
    why = f"({test}, {_format_p(c.p)})"
    if not c.distinguishable:
        return f"{c.a} and {c.b} are not distinguishable {why}"
    a_better = (c.diff < 0) == lower_is_better
    better, worse = (c.a, c.b) if a_better else (c.b, c.a)
    return f"{better} is better than {worse} {why}"
