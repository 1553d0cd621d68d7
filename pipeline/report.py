"""A benchmark's MLflow runs -> pandas -> reports/benchmark.md and a self-contained .html.

Every number is a summary over training seeds (mean ± sd, a 95% interval, n); a `data` row
(real images scored like samples) stands in every quality table and chart; only runs measured
with one protocol fingerprint share a table; a ranking says "better" only where Welch's t-test
over seeds supports it. Columns, formats, directions and notes come from the metric registry.
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from gen import stats
from gen.evaluation import METRICS, metric
from pipeline import tracking
from pipeline.curves import write_curve
from pipeline.errors import ReportError

LABELS_MARK = "(labels)"  # beside a model trained with class labels it need not have used
DATA = "data"  # the real-data row's model name
FAMILY_ORDER = [
    "baseline",
    "autoregressive",
    "latent-variable",
    "adversarial",
    "conditional",
    "translation",
]
UNCONDITIONAL = ("baseline", "autoregressive", "latent-variable", "adversarial")
FAMILY_TITLES = {
    "baseline": "Baseline",
    "autoregressive": "Autoregressive models",
    "latent-variable": "Latent-variable models",
    "adversarial": "Adversarial models",
    "conditional": "Conditional generation",
    "translation": "Image-to-image translation",
}
# (title, families, feature space tag, metric keys): the report's tables of figures.
TABLES = [
    (
        "Likelihood and sample quality",
        UNCONDITIONAL,
        "classifier",
        ["bpd", "elbo_bpd", "fid", "fid_sd", "kid_mean", "is_mean"],
    ),
    (
        "Fidelity, diversity and memorisation",
        UNCONDITIONAL,
        "classifier",
        ["precision", "recall", "density", "coverage", "copy_rate", "reconstruction_error"]
        + ["code_accuracy"],
    ),
    (
        "Conditional generation",
        ("conditional",),
        "classifier",
        ["condition_accuracy", "patch_error", "fid", "fid_sd", "kid_mean", "precision"]
        + ["recall", "density", "coverage", "copy_rate"],
    ),
    (
        "Image-to-image translation",
        ("translation",),
        "domain-classifier",
        ["label_preservation", "domain_accuracy", "cycle_error", "fid", "kid_mean"]
        + ["precision", "recall", "density", "coverage"],
    ),
    (
        "Cost",
        tuple(FAMILY_ORDER),
        None,
        ["train_seconds", "train_images_per_s", "sample_images_per_s", "params"],
    ),
]
# The headline metric of each ranking: (title, families, key, feature space).
RANKINGS = [
    ("bits/dim (likelihood models)", UNCONDITIONAL, "bpd", None),
    ("FID, unconditional models [classifier]", UNCONDITIONAL, "fid", "classifier"),
    ("FID, conditional models [classifier]", ("conditional",), "fid", "classifier"),
    ("FID, translation [domain-classifier]", ("translation",), "fid", "domain-classifier"),
]
# Figures a run may carry (MLflow artifact path, caption), in the order they are shown.
RUN_FIGURES = [
    ("samples/samples.png", "samples"),
    ("figures/interpolation.png", "latent interpolation between two samples (rows: pairs)"),
    ("figures/traversal.png", "traversal (rows: categorical code, columns: continuous code)"),
    ("figures/codes.png", "codes of the test images against samples of the prior"),
    ("figures/conditions.png", "inputs beside outputs (test conditions)"),
]


# ------------------------------------------------------------------------------ collection
@dataclass
class Collected:
    """What one report is built from: the runs of one protocol and what was kept out."""

    runs: pd.DataFrame  # one row per (model, seed): tags + metric columns
    reference: dict[str, dict[str, list[float]]]  # feature space -> key -> values over draws
    protocol: dict[str, str]  # protocol.* tags of the report's fingerprint
    benchmark: dict[str, str] = field(default_factory=dict)  # name, run id, status
    excluded: list[str] = field(default_factory=list)  # runs of another protocol
    failed: list[str] = field(default_factory=list)  # (model, seed) runs that did not finish
    pending: list[str] = field(default_factory=list)  # planned by a benchmark part still running


def _value(r: pd.Series, column: str) -> Any:
    v = r.get(column)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v


def _rows(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, r in runs.iterrows():
        row: dict[str, Any] = {
            "model": r["tags.model"],
            "family": _value(r, "tags.family") or "",
            "seed": _value(r, "tags.seed") or "",
            "feature_extractor": _value(r, "tags.feature_extractor") or "",
            "bpd_kind": _value(r, "tags.bpd_kind") or "",
            "commit": str(_value(r, "tags.git_commit") or "")[:8],
            "dvc_exp": _value(r, "tags.dvc_exp_name") or "",
            "run_id": r["run_id"],
            "protocol": _value(r, "tags.protocol") or "",
            "class_labels": r.get("tags.class_labels") == "yes",
            "status": r.get("status", "FINISHED"),
        }
        for m in METRICS:
            row[m.key] = _value(r, f"metrics.{m.key}")
        row["exact_test_bpd"] = _value(r, "metrics.exact_test_bpd")
        rows.append(row)
    return pd.DataFrame(rows)


def _reference(dataset: str, protocol: str) -> tuple[dict[str, dict[str, list[float]]], str]:
    """The data row of `protocol`: per feature space, each metric's values over the draws."""
    runs = tracking.search(dataset, f"tags.model = '{DATA}' and tags.protocol = '{protocol}'")
    if runs.empty:
        return {}, ""
    run_id = runs.iloc[0]["run_id"]
    out: dict[str, dict[str, list[float]]] = {}
    for key in tracking.metric_keys(run_id):
        space, _, name = key.partition("/")
        history = sorted(tracking.metric_history(run_id, key))
        out.setdefault(space, {})[name] = [v for _, v in history]
    return out, run_id


def _planned(parent: pd.Series) -> list[str]:
    """The (model, seed) labels a benchmark set out to run (its `models` and `seeds` params)."""
    models, seeds = parent.get("params.models"), parent.get("params.seeds")
    if not isinstance(models, str) or not isinstance(seeds, str):
        return []
    return [f"{m}-s{s}" for s in seeds.split(",") for m in models.split(",") if m and s]


def _overall(statuses: list[str]) -> str:
    """One status for the parts of a benchmark: running while any part runs."""
    if "RUNNING" in statuses:
        return "running"
    return "finished" if set(statuses) == {"FINISHED"} else "failed"


def _benchmark_parents(dataset: str, benchmark: str | None) -> pd.DataFrame:
    """The parent runs a report is built from, newest first: the one whose run id is
    `benchmark`, else every part of the benchmark named `benchmark` (one per host that ran
    some of its models), else every part of the newest benchmark's name."""
    parents = tracking.benchmarks(dataset)
    if parents.empty:
        if benchmark is not None:
            raise ReportError(f"no benchmark run or name '{benchmark}' in data set '{dataset}'")
        return parents
    names = parents[f"tags.{tracking.BENCHMARK_TAG}"]
    if benchmark is not None and (parents.run_id == benchmark).any():
        return parents[parents.run_id == benchmark]
    if benchmark is None:
        benchmark = str(names.iloc[0])
    match = parents[names == benchmark]
    if match.empty:
        raise ReportError(f"no benchmark run or name '{benchmark}' in data set '{dataset}'")
    return match


def _common_protocol(df: pd.DataFrame, parents: pd.DataFrame) -> str:
    """The fingerprint of a report's tables: its benchmark's; where parts of a benchmark (on
    hosts with, say, another torch) differ, the one most finished runs have (ties: the newest
    part's); without a benchmark, the newest run's. Runs of any other are listed, never mixed."""
    tags = [str(t) for t in parents.get("tags.protocol", pd.Series(dtype=str)).dropna() if t]
    candidates = list(dict.fromkeys(tags))
    if len(candidates) <= 1:
        return candidates[0] if candidates else str(df.iloc[0].protocol)
    counts = df.protocol.value_counts()
    return max(candidates, key=lambda t: int(counts.get(t, 0)))  # max keeps the first of ties


def collect(dataset: str, benchmark: str | None = None) -> Collected:
    """The runs of one benchmark (a run id or a name; default: the newest benchmark's name),
    merged over its parts, latest per (model, seed), of one protocol; without any benchmark,
    every finished run."""
    if not tracking.store_exists():  # reading must not create an empty store
        raise ReportError(
            f"no MLflow store at {tracking.tracking_uri()}: nothing has been tracked here yet; "
            "run `genbench benchmark` first (the report was left as it was)"
        )
    bench: dict[str, str] = {}
    parents = _benchmark_parents(dataset, benchmark)
    planned: list[str] = []
    pending: list[str] = []  # planned by a part still running (on another host, say)
    if not parents.empty:
        statuses = [str(s) for s in parents.status]
        bench = {
            "name": str(parents.iloc[0].get(f"tags.{tracking.BENCHMARK_TAG}")),
            "run_id": ", ".join(r[:8] for r in parents.run_id),
            "status": _overall(statuses),
            "parts": str(len(parents)),
        }
        for _, parent in parents.iterrows():
            if parent.status == "RUNNING":
                pending += _planned(parent)
            else:
                planned += _planned(parent)
        parts = [
            tracking.search(dataset, f"tags.mlflow.parentRunId = '{r}'", finished=False)
            for r in parents.run_id
        ]
        parts = [r for r in parts if not r.empty]
        runs = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        if not runs.empty:
            runs = runs.sort_values("start_time", ascending=False, kind="stable")
    else:
        runs = tracking.search(dataset, f"tags.model != '{DATA}'", finished=False)
        runs = (
            runs[runs.get("tags.model", pd.Series(dtype=str)).notna()] if not runs.empty else runs
        )
    if runs.empty:
        return Collected(pd.DataFrame(), {}, {}, bench, failed=planned, pending=pending)
    df = _rows(runs)
    df = df[df.model != DATA]
    finished = df[df.status == "FINISHED"]
    done = {f"{m}-s{s}" for m, s in zip(finished.model, finished.seed, strict=True)}
    tried = [f"{m}-s{s}" for m, s, st in zip(df.model, df.seed, df.status, strict=True)]
    unfinished = [t for t in dict.fromkeys(tried + planned + pending) if t not in done]
    failed = [t for t in unfinished if t not in pending]
    pending = [t for t in unfinished if t in pending]
    df = finished
    if df.empty:
        return Collected(df, {}, {}, bench, failed=failed, pending=pending)
    want = _common_protocol(df, parents)
    excluded = [
        f"{r.model}-s{r.seed} ({r.run_id[:8]}, protocol {r.protocol or 'none'})"
        for _, r in df[df.protocol != want].iterrows()
    ]
    df = df[df.protocol == want]
    df = df.drop_duplicates(["model", "seed"], keep="first")
    df = df.sort_values("seed", key=lambda s: pd.to_numeric(s, errors="coerce"), kind="stable")
    df = df.reset_index(drop=True)
    reference, ref_run = _reference(dataset, want)
    protocol = {"protocol": want, "data_run": ref_run}
    if not df.empty:
        tags = tracking.run_tags(df.iloc[0].run_id)
        protocol.update({k: v for k, v in tags.items() if k.startswith("protocol.")})
    return Collected(df, reference, protocol, bench, excluded, failed, pending)


def _order(df: pd.DataFrame, models: list[str] | None) -> list[str]:
    order = {m: i for i, m in enumerate(models or [])}
    fam = {f: i for i, f in enumerate(FAMILY_ORDER)}
    pairs = df[["model", "family"]].drop_duplicates("model")
    keyed = sorted(
        (order.get(m, len(order)), fam.get(f, 9), m)
        for m, f in zip(pairs.model, pairs.family, strict=True)
    )
    return [m for _, _, m in keyed]


# ------------------------------------------------------------------------------- formatting
def _num(value: float | None, pattern: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return pattern.format(value)


def cell(s: stats.Summary | None, pattern: str) -> str:
    """mean ± sd [95% interval] for several seeds, the bare number for one, n/a for none."""
    if s is None:
        return "n/a"
    if s.std is None:
        return _num(s.mean, pattern)
    text = f"{_num(s.mean, pattern)} ± {_num(s.std, pattern)}"
    return f"{text} [{_num(s.low, pattern)}, {_num(s.high, pattern)}]"


def _summary(df: pd.DataFrame, model: str, key: str) -> stats.Summary | None:
    return stats.summarise(df[df.model == model][key].tolist())


Table = tuple[str, list[str], list[list[str]], list[str]]  # title, header, rows, notes


def _label(df: pd.DataFrame, model: str) -> str:
    labelled = bool(df[df.model == model].class_labels.any())
    return f"{model} {LABELS_MARK}" if labelled else model


def _tables(c: Collected, order: list[str]) -> list[Table]:
    df, out = c.runs, []
    for title, families, space, keys in TABLES:
        models = [m for m in order if df[df.model == m].family.iloc[0] in families]
        if space is not None:
            models = [m for m in models if (df[df.model == m].feature_extractor == space).all()]
        if not models:
            continue
        keys = [k for k in keys if df[df.model.isin(models)][k].notna().any()]
        if not keys:
            continue
        head = ["model", "n"] + [metric(k).label for k in keys]
        body = []
        ref = c.reference.get(space or "", {})
        if space is not None and ref:
            row = [f"{DATA} (real images)", str(len(next(iter(ref.values()))))]
            row += [cell(stats.summarise(ref.get(k, [])), metric(k).fmt) for k in keys]
            body.append(row)
        for m in models:
            n = int((df.model == m).sum())
            row = [_label(df, m), str(n)]
            for k in keys:
                text = cell(_summary(df, m, k), metric(k).fmt)
                kinds = df[df.model == m].bpd_kind
                if k == "bpd" and text != "n/a" and kinds.iloc[0] not in ("", "exact"):
                    text += f" ({kinds.iloc[0]})"
                row.append(text)
            body.append(row)
        where = f" [{space} features]" if space else ""
        notes = [f"{metric(k).label}: {metric(k).note}" for k in keys if metric(k).note]
        out.append((title + where, head, body, notes))
    prov = []
    for m in order:
        runs = df[df.model == m]
        prov.append(
            [
                m,
                ", ".join(str(s) for s in runs.seed),
                ", ".join(sorted(set(runs.commit))) or "n/a",
                ", ".join(runs.dvc_exp),
                ", ".join(r[:8] for r in runs.run_id),
            ]
        )
    out.append(("Provenance", ["model", "seeds", "commit", "DVC experiments", "runs"], prov, []))
    return out


def _rankings(c: Collected, order: list[str]) -> list[tuple[str, list[str]]]:
    """Per headline metric: models best first, each pair of neighbours judged by Welch's test."""
    df, out = c.runs, []
    for title, families, key, space in RANKINGS:
        models = [m for m in order if df[df.model == m].family.iloc[0] in families]
        if space is not None:
            models = [m for m in models if (df[df.model == m].feature_extractor == space).all()]
        groups = {m: df[df.model == m][key].tolist() for m in models}
        groups = {m: v for m, v in groups.items() if any(x is not None for x in v)}
        if len(groups) < 2:
            continue
        lower = metric(key).better == "lower"
        ranked = stats.rank(groups, lower_is_better=lower)
        lines = []
        for i, (m, s, comp) in enumerate(ranked, start=1):
            text = f"{i}. {m}: {cell(s, metric(key).fmt)} (n={s.n})"
            if comp is not None:
                text += f"; {stats.verdict(comp, lower)}"
            lines.append(text)
        out.append((title, lines))
    return out


# ---------------------------------------------------------------------------------- charts
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
        s = _summary(c.runs, m, key)
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


Curve = tuple[str, str, list[tuple[int, float]]]  # (loss term, seed, [(step, value)])


def _curve_data(c: Collected, order: list[str]) -> list[tuple[str, list[Curve]]]:
    """Each model's logged curves: its loss terms and validation bits/dim, per seed."""
    panels = []
    for m in order:
        lines = []
        for _, r in c.runs[c.runs.model == m].iterrows():
            for key in tracking.metric_keys(r.run_id):
                if (key.startswith("train/") and key.endswith("loss")) or key == "val/bpd":
                    hist = tracking.metric_history(r.run_id, key)
                    if len(hist) > 1:
                        lines.append((key.removeprefix("train/"), r.seed, sorted(hist)))
        if lines:
            panels.append((m, lines))
    return panels


def _curve_files(panels: list[tuple[str, list[Curve]]], folder: Path) -> None:
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
            write_curve(folder / f"{_safe(model)}.{term.replace('/', '-')}.csv", points)


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


# ---------------------------------------------------------------------------------- writers
def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _run_figures(c: Collected, order: list[str], figs: Path) -> dict[str, list[tuple[str, Path]]]:
    """Each model's figures from its first seed's run: model -> [(caption, file)]."""
    import shutil

    out: dict[str, list[tuple[str, Path]]] = {}
    tmp = figs / "tmp"
    for m in order:
        r = c.runs[c.runs.model == m].iloc[0]
        found = []
        for artifact, caption in RUN_FIGURES:
            got = tracking.download_artifact(r.run_id, artifact, tmp)
            if got and got.exists():
                dst = figs / f"{Path(artifact).stem}_{_safe(m)}.png"
                got.replace(dst)
                found.append((f"{caption} (seed {r.seed})", dst))
        out[m] = found
    if tmp.exists():
        shutil.rmtree(tmp)
    return out


def _charts(
    c: Collected, order: list[str], figs: Path, panels: list[tuple[str, list[Curve]]]
) -> list[tuple[str, Path]]:
    df = c.runs
    fam = {m: df[df.model == m].family.iloc[0] for m in order}
    space = {m: df[df.model == m].feature_extractor.iloc[0] for m in order}
    wanted = [
        ("bits/dim", [m for m in order if fam[m] in UNCONDITIONAL], "bpd", None, "bpd.png"),
        (
            "FID, unconditional models [classifier]",
            [m for m in order if fam[m] in UNCONDITIONAL and space[m] == "classifier"],
            "fid",
            "classifier",
            "fid.png",
        ),
        (
            "FID, conditional models [classifier]",
            [m for m in order if fam[m] == "conditional" and space[m] == "classifier"],
            "fid",
            "classifier",
            "fid_conditional.png",
        ),
        (
            "FID, translation [domain-classifier]",
            [m for m in order if fam[m] == "translation"],
            "fid",
            "domain-classifier",
            "fid_translation.png",
        ),
    ]
    out = []
    for label, models, key, sp, name in wanted:
        p = _bar(c, models, key, sp, label, figs / name)
        if p:
            out.append((label, p))
    p = _curves(panels, figs / "losses.png")
    if p:
        out.append(("training losses", p))
    return out


def build_report(
    dataset: str,
    out_dir: Path = Path("reports"),
    models: list[str] | None = None,
    benchmark_run: str | None = None,
) -> tuple[Path, Path]:
    """Write `benchmark.md` (figures beside it) and a self-contained `benchmark.html`."""
    c = collect(dataset, benchmark_run)
    if c.runs.empty:
        raise ReportError(
            f"no finished runs to report for data set '{dataset}' in {tracking.tracking_uri()}; "
            "run `genbench benchmark` first (the report was left as it was)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    # Built in a staging folder and moved into place only when complete: a report that fails
    # half-way leaves the previous one (text and figures) as it was.
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".report-") as tmp:
        stage = Path(tmp)
        figs = stage / "figures"
        figs.mkdir()
        order = _order(c.runs, models)
        now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        panels = _curve_data(c, order)
        figures = _charts(c, order, figs, panels)
        _curve_files(panels, stage / "curves")
        per_model = _run_figures(c, order, figs)
        sections = []
        for family in dict.fromkeys(c.runs.set_index("model").loc[order].family):
            members = [
                (m, per_model.get(m, []))
                for m in order
                if per_model and c.runs[c.runs.model == m].family.iloc[0] == family
            ]
            sections.append((FAMILY_TITLES.get(family, family or "other"), members))
        doc = Document(
            dataset,
            now,
            _header(c),
            _tables(c, order),
            _rankings(c, order),
            _notes(c),
            figures,
            sections,
        )
        (stage / "benchmark.md").write_text(_markdown(doc, stage))
        (stage / "benchmark.html").write_text(_html(doc))
        _publish(stage, out_dir)
    return out_dir / "benchmark.md", out_dir / "benchmark.html"


def _publish(stage: Path, out_dir: Path) -> None:
    """Move a complete report from `stage` into `out_dir`: its figures replace the old ones of
    the same name, old figures it no longer has go (they belonged to the report it replaces)."""
    figs = out_dir / "figures"
    figs.mkdir(exist_ok=True)
    new = {p.name for p in (stage / "figures").glob("*.png")}
    for name in sorted(new):
        os.replace(stage / "figures" / name, figs / name)
    for old in figs.glob("*.png"):
        if old.name not in new:
            old.unlink()
    curves = out_dir / "curves"
    curves.mkdir(exist_ok=True)
    for old in curves.glob("*.csv"):
        old.unlink()  # a model no longer in the report leaves no curve behind
    for new_file in (stage / "curves").glob("*.csv"):
        os.replace(new_file, curves / new_file.name)
    for name in ("benchmark.md", "benchmark.html"):
        os.replace(stage / name, out_dir / name)


@dataclass
class Document:
    dataset: str
    now: str
    header: list[str]
    tables: list[Table]
    rankings: list[tuple[str, list[str]]]
    notes: list[str]
    figures: list[tuple[str, Path]]
    sections: list[tuple[str, list[tuple[str, list[tuple[str, Path]]]]]]


def _header(c: Collected) -> list[str]:
    """The protocol every number below was measured with."""
    p, df = c.protocol, c.runs
    seeds = sorted({str(s) for s in df.seed}, key=lambda s: (len(s), s))
    lines = []
    if c.benchmark:
        b = c.benchmark
        runs = (
            f"MLflow run {b['run_id']}"
            if b["parts"] == "1"
            else (f"{b['parts']} parts merged by name, MLflow runs {b['run_id']}")
        )
        lines.append(
            f"Benchmark `{b['name']}` ({runs}, {b['status']}): {df.model.nunique()} models x "
            f"training seeds {', '.join(seeds)}; commit(s) {', '.join(sorted(set(df.commit)))}."
        )
    lines.append(
        f"Protocol `{p.get('protocol', 'n/a')}`: data {p.get('protocol.data', 'n/a')}, split "
        f"{p.get('protocol.split', 'n/a')}; evaluation classifier weights "
        f"{p.get('protocol.classifier', 'n/a')} (trained on the CPU with one thread, its own seed "
        f"and x86-64 baseline instructions); eval {p.get('protocol.eval', 'n/a')}; "
        f"torch {p.get('protocol.torch', '?')}, "
        f"torch-fidelity {p.get('protocol.torch_fidelity', '?')}. Only runs with this "
        "fingerprint are in the tables."
    )
    lines.append(
        "Each cell: mean ± sd over training seeds [95% interval of the mean, Student t]; n = "
        "seeds. The data row: real training images scored exactly as samples are (same count, "
        "same test split), over several draws: the floor a perfect model reaches. Samples are "
        "scored against the test split, which no training reads; likelihood models log "
        "validation bits/dim (val/bpd, the validation split carved from the training split) "
        "as the curve to choose step counts on."
    )
    lines.append(
        "Feature space: the data set's own classifier (penultimate layer; IS from its logits), "
        "whitened with the training split's mean and covariance before FID, KID, "
        "precision/recall, density/coverage and copy rate, so KID's cubic kernel sees features "
        "of order 1 in every direction and real-vs-real KID is about 0. FIDs in another space "
        "(translation: the (domain, digit) classifier) are in their own table and chart."
    )
    if c.excluded:
        lines.append(f"Kept out (another protocol fingerprint): {', '.join(c.excluded)}.")
    if c.failed:
        lines.append(f"Did not finish (not in the tables): {', '.join(c.failed)}.")
    if c.pending:
        lines.append(
            f"Still running in a part of this benchmark (not in the tables yet): "
            f"{', '.join(c.pending)}."
        )
    return lines


def _notes(c: Collected) -> list[str]:
    df = c.runs
    notes = [
        "Rankings: models best first by mean; each line judges a model against the next one "
        "with Welch's t-test over seeds at alpha 0.05 (uncorrected for the several pairs); "
        "'not distinguishable' means the seeds do not support an order.",
        "FID draw sd is one run's sampling spread (bootstrap over its samples), shown beside "
        "the spread over seeds; both are visible per run in MLflow (fid_sd, kid_sd).",
        "n/a: the model has no such quantity (a GAN has no likelihood); nothing stands in.",
        "puzzlegan completes validation images (held out from training) and is scored against "
        "the test split, so it is never compared with the images it was given. Its samples are "
        "several completions of each of those images, near-copies of one another, so the k=3 "
        "balls of its samples are tiny and its recall reads about 0: coverage is the steadier "
        "measure of its diversity.",
    ]
    if df["class_labels"].any():
        notes.append(
            f"{LABELS_MARK}: trained with the training images' class labels as well as their "
            "domains (semantic_weight > 0: the discriminator also classifies the digits of real "
            "images and the generator is penalised when a translation reads as another digit, "
            "CyCADA's semantic consistency); its label kept is not that of label-free unpaired "
            "translation (semantic_weight 0)."
        )
    if df["exact_test_bpd"].notna().any():
        exact = float(df["exact_test_bpd"].dropna().iloc[0])
        notes.append(f"exact test NLL of the data distribution: {exact:.4f} bits/dim.")
    return notes


def _md_escape(text: str) -> str:
    return html.escape(text, quote=False).replace("|", "\\|")


def _markdown(doc: Document, out_dir: Path) -> str:
    e = _md_escape
    lines = [f"# genbench report: {e(doc.dataset)}", "", f"Generated {doc.now} from MLflow.", ""]
    lines += [e(h) + "\n" for h in doc.header]
    for title, head, body, notes in doc.tables:
        lines += [f"## {e(title)}", ""]
        lines += ["| " + " | ".join(e(h) for h in head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(e(c) for c in row) + " |" for row in body] + [""]
        lines += [f"- {e(n)}" for n in notes] + ([""] if notes else [])
    if doc.rankings:
        lines += ["## Rankings", ""]
        for title, items in doc.rankings:
            lines += [f"### {e(title)}", ""] + [e(i) for i in items] + [""]
    lines += ["## Notes", ""] + [f"- {e(n)}" for n in doc.notes] + [""]
    for label, p in doc.figures:
        lines += [f"## {e(label)}", "", f"![{e(label)}]({p.relative_to(out_dir).as_posix()})", ""]
    for title, members in doc.sections:
        lines += [f"## {e(title)}", ""]
        for model, figs in members:
            lines += [f"### {e(model)}", ""]
            for caption, p in figs:
                rel = p.relative_to(out_dir).as_posix()
                lines += [f"{e(caption)}:", "", f"![{e(model)} {e(caption)}]({rel})", ""]
    return "\n".join(lines)


def _img(p: Path, alt: str) -> str:
    data = base64.b64encode(p.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _html(doc: Document) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>genbench report: {e(doc.dataset)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1250px;line-height:1.35}"
        "table{border-collapse:collapse;font-size:12px;margin-bottom:.6em}"
        "td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}"
        "th{background:#eee}td{text-align:right}td:first-child{text-align:left;white-space:nowrap}"
        "tr.data td{background:#fbeaea}.notes{font-size:12px;color:#444}"
        ".figs{display:flex;flex-wrap:wrap;gap:1.5em}figure{margin:0}"
        "img{image-rendering:pixelated;max-width:100%}</style></head><body>",
        f"<h1>genbench report: {e(doc.dataset)}</h1><p>Generated {e(doc.now)} from MLflow.</p>",
    ]
    parts += [f"<p>{e(h)}</p>" for h in doc.header]
    for title, head, body, notes in doc.tables:
        parts.append(f"<h2>{e(title)}</h2><table><tr>")
        parts.append("".join(f"<th>{e(h)}</th>" for h in head) + "</tr>")
        for row in body:
            klass = " class='data'" if row[0].startswith(DATA + " ") else ""
            parts.append(f"<tr{klass}>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
        parts.append("</table>")
        if notes:
            parts.append(
                "<ul class='notes'>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>"
            )
    if doc.rankings:
        parts.append("<h2>Rankings</h2>")
        for title, items in doc.rankings:
            parts.append(f"<h3>{e(title)}</h3><ol>")
            parts += [f"<li>{e(i.split('. ', 1)[1])}</li>" for i in items]
            parts.append("</ol>")
    parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in doc.notes) + "</ul>")
    for label, p in doc.figures:
        parts.append(f"<h2>{e(label)}</h2>{_img(p, label)}")
    for title, members in doc.sections:
        parts.append(f"<h2>{e(title)}</h2>")
        for model, figs in members:
            parts.append(f"<h3>{e(model)}</h3><div class='figs'>")
            for caption, p in figs:
                parts.append(
                    f"<figure>{_img(p, f'{model} {caption}')}"
                    f"<figcaption>{e(caption)}</figcaption></figure>"
                )
            parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)
