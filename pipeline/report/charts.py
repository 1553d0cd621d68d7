"""The report's charts (matplotlib, written as PNG files) and the CSV curves `dvc plots show`
draws: bars of a headline metric with their intervals and the data row, training losses."""

from __future__ import annotations

import math
from pathlib import Path

from gen import stats
from gen.evaluation import metric
from pipeline.curves import write_curve
from pipeline.report.collection import Collected, Curve, safe_name
from pipeline.report.tables import UNCONDITIONAL, by_space, summary

# (label, families, per feature space?, metric key, file stem): the bar charts. A chart of a
# feature-space figure is drawn once per space, so two spaces never share one.
CHARTS = [
    ("bits/dim", UNCONDITIONAL, False, "bpd", "bpd"),
    ("FID, unconditional models", UNCONDITIONAL, True, "fid", "fid"),
    ("FID, conditional models", ("conditional",), True, "fid", "fid_conditional"),
    ("FID, translation", ("translation",), True, "fid", "fid_translation"),
]


def draw_charts(
    c: Collected, order: list[str], figs: Path, panels: list[tuple[str, list[Curve]]]
) -> list[tuple[str, Path]]:
    """The report's charts drawn into `figs`: (label, file) of each one that has data."""
    df = c.runs
    fam = {m: df[df.model == m].family.iloc[0] for m in order}
    out = []
    for label, families, split, key, stem in CHARTS:
        groups = by_space(df, [m for m in order if fam[m] in families], split)
        for space, models in groups.items():
            # one chart per feature space: fid.png, or fid_<space>.png beside another space's
            name = stem if len(groups) == 1 else f"{stem}_{safe_name(str(space))}"
            title = f"{label} [{space}]" if space else label
            p = _bar(c, models, key, space, title, figs / f"{name}.png")
            if p:
                out.append((title, p))
    p = _curves(panels, figs / "losses.png")
    if p:
        out.append(("training losses", p))
    return out


def curve_files(panels: list[tuple[str, list[Curve]]], folder: Path) -> None:
    """One CSV per model and curve (step, mean over seeds): the DVC plots `dvc plots show`
    draws from `reports/curves` (dvc.yaml declares them)."""
    folder.mkdir(parents=True, exist_ok=True)
    for model, lines in panels:
        for term in dict.fromkeys(name for name, _, _ in lines):
            by_step: dict[int, list[float]] = {}
            for name, _, hist in lines:
                if name == term:
                    for step, value in hist:
                        by_step.setdefault(step, []).append(value)
            points = [(step, sum(v) / len(v)) for step, v in sorted(by_step.items())]
            write_curve(folder / f"{safe_name(model)}.{term.replace('/', '-')}.csv", points)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bar(c: Collected, models: list[str], key: str, space: str | None, label: str, path: Path):
    """Horizontal bars, best at the top, with 95% intervals; the data row as a dashed line."""
    plt = _plt()
    rows = []
    for m in models:
        s = summary(c.runs, m, key)
        if s is not None:
            rows.append((m, s))
    if not rows:
        return None
    lower = metric(key).better != "higher"
    rows.sort(key=lambda r: r[1].mean, reverse=not lower)
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(rows) + 1.4))
    ys = list(range(len(rows)))[::-1]
    means = [s.mean for _, s in rows]
    err = [
        [s.mean - s.low if s.low is not None else 0 for _, s in rows],
        [s.high - s.mean if s.high is not None else 0 for _, s in rows],
    ]
    colors = [
        "#999999" if c.runs[c.runs.model == m].family.iloc[0] == "baseline" else "#3b6ea5"
        for m, _ in rows
    ]
    ax.barh(ys, means, xerr=err, color=colors, capsize=3, ecolor="#333333")
    ax.set_yticks(ys, [f"{m} (n={s.n})" for m, s in rows], fontsize=9)
    for y, (_, s) in zip(ys, rows, strict=True):
        ax.text(
            s.high if s.high is not None else s.mean, y, f"  {s.mean:.3g}", va="center", fontsize=8
        )
    ref = stats.summarise(c.reference.get(space or "", {}).get(key, []))
    if ref is not None:
        ax.axvline(ref.mean, color="#c0392b", linestyle="--", linewidth=1.2)
        ax.text(ref.mean, -0.65, f" data {ref.mean:.3g}", color="#c0392b", fontsize=8, va="bottom")
    positive = [v for v in means if v > 0]
    if (
        positive
        and min(positive) > 0
        and max(positive) / min(positive) > 20
        and len(positive) == len(means)
    ):
        ax.set_xscale("log")
    direction = "lower is better" if metric(key).better == "lower" else "higher is better"
    ax.set_title(f"{label} ({direction}; bars: 95% interval over seeds)", fontsize=10)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _curves(panels: list[tuple[str, list[Curve]]], path: Path) -> Path | None:
    """Loss curves as small multiples: one panel per model, one line per loss term and seed."""
    plt = _plt()
    if not panels:
        return None
    cols = 4
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(12, 2.6 * rows), squeeze=False)
    palette = plt.get_cmap("tab10")
    for ax, (m, lines) in zip(axes.flat, panels, strict=False):
        names = list(dict.fromkeys(name for name, _, _ in lines))
        for name, seed, hist in lines:
            steps, values = zip(*hist, strict=True)
            first = seed == lines[0][1]
            ax.plot(
                steps,
                values,
                color=palette(names.index(name) % 10),
                linewidth=1,
                alpha=0.9 if first else 0.45,
                label=name if first else None,
            )
        ax.set_title(m, fontsize=10)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="upper right")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(
        "training losses per model (each seed a line; val/bpd: validation bits/dim)", fontsize=11
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
