"""The budget section's charts (matplotlib, PNG): validation quality against training FLOPs and
train seconds (a line and a min-max band over seeds per model, the data row as a floor), and
final test quality against total training FLOPs with the Pareto front marked."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from gen import budget
from gen.evaluation import metric

if TYPE_CHECKING:
    from pipeline.report.budget import RunCurves

FLOOR = "#c0392b"  # the data row, as in the report's other charts
# Panel: (label, model -> (mean FLOPs, mean value, min, max over seeds), front, floor or None).
Panel = tuple[str, dict[str, tuple[float, float, float, float]], list[str], float | None]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(order: list[str]) -> dict[str, tuple]:
    """A colour per model by its place in `order`: tab10, or past ten models tab20's dark
    shades before its light ones."""
    plt = _plt()
    if len(order) <= 10:
        return {m: plt.get_cmap("tab10")(i) for i, m in enumerate(order)}
    shades = list(range(0, 20, 2)) + list(range(1, 20, 2))
    return {m: plt.get_cmap("tab20")(shades[i % 20]) for i, m in enumerate(order)}


def _wide(values: list[float]) -> bool:
    """Whether values span enough (20x, all positive) that a log axis reads them better."""
    positive = [v for v in values if v > 0]
    return bool(positive) and len(positive) == len(values) and max(values) / min(values) > 20


def _readable_log_x(ax) -> None:
    """On a log x axis spanning under two decades matplotlib labels every minor tick (2..9
    times a power of ten) and the labels run into each other: label 2 and 5 times a power of
    ten there, only the powers of ten on a wider axis, and on an axis within one decade (one
    model or two of about the same cost) four evenly spaced ticks."""
    from matplotlib.ticker import LogFormatterSciNotation, LogLocator, MaxNLocator, NullFormatter

    low, high = ax.get_xlim()
    if 0 < low and high / low < 10:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.xaxis.set_major_formatter(LogFormatterSciNotation(labelOnlyBase=False))
        ax.xaxis.set_minor_formatter(NullFormatter())
        return
    ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    ax.xaxis.set_minor_formatter(
        LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(2, 2))
    )


def quality_curves(
    curves: dict[str, list[RunCurves]],
    key: str,
    label: str,
    floor: float | None,
    order: list[str],
    path: Path,
    floor_label: str = "data (test)",
) -> Path:
    """Two panels, FLOPs and seconds on log axes: per model its mean over seeds and a band
    (colours by the model's place in `order`, so a model keeps its colour across charts)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    colors = _colors(order)
    seen: list[float] = [] if floor is None else [floor]
    for ax, axis, xlabel in (
        (axes[0], "flops", "training FLOPs (log scale)"),
        (axes[1], "seconds", "train seconds (log scale)"),
    ):
        for m, runs in curves.items():
            color = colors[m]
            points = budget.band([getattr(r, axis).get(key, []) for r in runs])
            if not points:
                continue
            xs, mean, low, high = (list(v) for v in zip(*points, strict=True))
            ax.fill_between(xs, low, high, color=color, alpha=0.22, linewidth=0)
            name = f"{m} (n={len(runs)})" if axis == "flops" else None
            ax.plot(xs, mean, color=color, marker="o", markersize=3, linewidth=1.4, label=name)
            seen += low + high
        ax.set_xscale("log")
        _readable_log_x(ax)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel(label.split(",")[0], fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes:
        if _wide(seen):
            ax.set_yscale("log")
        if floor is not None and floor > 0:
            ax.axhline(floor, color=FLOOR, linestyle="--", linewidth=1.2)
            ax.annotate(
                f"{floor_label} {floor:.3g}",
                (0.01, floor),
                xycoords=("axes fraction", "data"),
                color=FLOOR,
                fontsize=8,
                va="bottom",
            )
    axes[0].set_title("against training FLOPs", fontsize=10)
    axes[1].set_title("against train seconds", fontsize=10)
    direction = "lower is better" if metric(key).better == "lower" else "higher is better"
    fig.suptitle(
        f"{label} ({direction}; line: mean over seeds, band: min to max over seeds)", fontsize=11
    )
    fig.legend(loc="center left", bbox_to_anchor=(0.84, 0.5), fontsize=8, frameon=False)
    # A fixed layout: tight_layout draws the figure once more to measure it, which doubles
    # the time of these charts (seconds each on a loaded 2-core machine).
    fig.subplots_adjust(left=0.06, right=0.83, bottom=0.12, top=0.86, wspace=0.22)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def pareto(panels: list[Panel], path: Path) -> Path:
    """One panel per metric: each model's final test value against its total training FLOPs
    (bars: min to max over seeds), the front in red joined by a step line, the data row's floor.
    A model with zero FLOPs stands one decade left of the cheapest other one."""
    plt = _plt()
    cols = min(2, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 4.8 * rows), squeeze=False)
    for ax, (label, points, front, floor) in zip(axes.flat, panels, strict=False):
        positive = [p[0] for p in points.values() if p[0] > 0]
        zero_at = min(positive) / 10 if positive else 1.0
        where = {m: (p[0] if p[0] > 0 else zero_at) for m, p in points.items()}
        for m, (x, mean, low, high) in points.items():
            on = m in front
            ax.errorbar(
                where[m],
                mean,
                yerr=[[max(0.0, mean - low)], [max(0.0, high - mean)]],  # fmean may round past
                fmt="o",
                markersize=6 if on else 5,
                color=FLOOR if on else "#555555",
                markerfacecolor=FLOOR if on else "white",
                capsize=2,
                linewidth=1,
            )
            name = m if x > 0 else f"{m} (0 FLOPs)"
            ax.annotate(
                name,
                (where[m], mean),
                textcoords="offset points",
                xytext=(5, 4),
                fontsize=7,
                color=FLOOR if on else "#333333",
            )
        if positive and len(positive) < len(points):  # zero-FLOP models, left of a dotted line
            ax.axvline(zero_at * 10**0.5, color="#999999", linestyle=":", linewidth=1)
        steps = sorted((where[m], points[m][1]) for m in front)
        if len(steps) > 1:
            xs, ys = zip(*steps, strict=True)
            ax.step(xs, ys, where="post", color=FLOOR, linewidth=1, alpha=0.6)
        ax.set_xscale("log")
        values = [v for p in points.values() for v in p[1:]]
        if _wide(values + ([floor] if floor else [])):
            ax.set_yscale("log")
        if floor is not None and floor > 0:
            ax.axhline(floor, color=FLOOR, linestyle="--", linewidth=1)
            ax.annotate(
                f"data {floor:.3g}",
                (0.01, floor),
                xycoords=("axes fraction", "data"),
                color=FLOOR,
                fontsize=8,
                va="bottom",
            )
        ax.margins(y=0.1)
        logs = [math.log10(x) for x in where.values()]
        span = max(logs) - min(logs)  # room on the right for the labels of the costliest
        ax.set_xlim(10 ** (min(logs) - 0.1 * span - 0.1), 10 ** (max(logs) + 0.3 * span + 0.15))
        _readable_log_x(ax)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("total training FLOPs (log scale; mean over seeds)", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(True, which="major", alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(
        "final test quality against training compute (red: Pareto front; lower is better on "
        "both axes; bars: min to max over seeds)",
        fontsize=11,
    )
    height = 4.8 * rows  # inches: room for the title above and the axis label below
    fig.subplots_adjust(
        left=0.07, right=0.95, bottom=0.55 / height, top=1 - 0.75 / height, hspace=0.4, wspace=0.18
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
