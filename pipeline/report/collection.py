"""What a report is built from, read from MLflow: one benchmark's finished runs of one protocol
(pandas), the data row's draws, the runs' logged curves and figures. The only part of the
report that talks to the tracking store."""

from __future__ import annotations

import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from gen.evaluation import METRICS
from pipeline import tracking
from pipeline.errors import ReportError

DATA = "data"  # the real-data row's model name
EXTERNAL = "external"  # the family of outside models' runs (`genbench score`)
# Figures a run may carry (MLflow artifact path, caption), in the order they are shown.
RUN_FIGURES = [
    ("samples/samples.png", "samples"),
    ("figures/interpolation.png", "latent interpolation between two samples (rows: pairs)"),
    ("figures/traversal.png", "traversal (rows: categorical code, columns: continuous code)"),
    ("figures/codes.png", "codes of the test images against samples of the prior"),
    ("figures/conditions.png", "inputs beside outputs (test conditions)"),
]
Curve = tuple[str, str, list[tuple[int, float]]]  # (loss term, seed, [(step, value)])


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
    left_out: list[str] = field(default_factory=list)  # "cyclegan, stargan: the data has no ..."


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
    parents = benchmark_parents(dataset, benchmark)
    planned: list[str] = []
    pending: list[str] = []  # planned by a part still running (on another host, say)
    left_out: list[str] = []  # models the data could not serve, with the reason
    if not parents.empty:
        statuses = [str(s) for s in parents.status]
        bench = {
            "name": str(parents.iloc[0].get(f"tags.{tracking.BENCHMARK_TAG}")),
            "run_id": ", ".join(r[:8] for r in parents.run_id),
            "status": _overall(statuses),
            "parts": str(len(parents)),
        }
        for _, parent in parents.iterrows():
            left_out += _left_out(parent)
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
        return Collected(pd.DataFrame(), {}, {}, bench, [], planned, pending, left_out)
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
        return Collected(df, {}, {}, bench, [], failed, pending, left_out)
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
    return Collected(df, reference, protocol, bench, excluded, failed, pending, left_out)


def collect_nonempty(dataset: str, benchmark: str | None) -> Collected:
    """`collect`, refusing a benchmark with no finished run before any file is written."""
    c = collect(dataset, benchmark)
    if c.runs.empty:
        raise ReportError(
            f"no finished runs to report for data set '{dataset}' in {tracking.tracking_uri()}; "
            "run `genbench benchmark` first (the report was left as it was)"
        )
    return c


def benchmark_parents(dataset: str, benchmark: str | None) -> pd.DataFrame:
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


def _overall(statuses: list[str]) -> str:
    """One status for the parts of a benchmark: running while any part runs."""
    if "RUNNING" in statuses:
        return "running"
    return "finished" if set(statuses) == {"FINISHED"} else "failed"


def _planned(parent: pd.Series) -> list[str]:
    """The (model, seed) labels a benchmark set out to run (its `models` and `seeds` params)."""
    models, seeds = parent.get("params.models"), parent.get("params.seeds")
    if not isinstance(models, str) or not isinstance(seeds, str):
        return []
    return [f"{m}-s{s}" for s in seeds.split(",") for m in models.split(",") if m and s]


def _left_out(parent: pd.Series) -> list[str]:
    """The models a benchmark (part) left out because its data could not serve them, a line
    per reason (its `left_out` param, `pipeline/selection.py`)."""
    text = parent.get("params.left_out")
    return [line for line in text.split("; ") if line] if isinstance(text, str) else []


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
        row["train_flops"] = _value(r, "metrics.train_flops")  # total, for the budget section
        rows.append(row)
    return pd.DataFrame(rows)


def _value(r: pd.Series, column: str) -> Any:
    v = r.get(column)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v


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


def curves(c: Collected, order: list[str]) -> list[tuple[str, list[Curve]]]:
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


def run_figures(c: Collected, order: list[str], figs: Path) -> dict[str, list[tuple[str, Path]]]:
    """Each model's figures from its first seed's run, downloaded into `figs`:
    model -> [(caption, file)]."""
    out: dict[str, list[tuple[str, Path]]] = {}
    tmp = figs / "tmp"
    for m in order:
        r = c.runs[c.runs.model == m].iloc[0]
        found = []
        for artifact, caption in RUN_FIGURES:
            got = tracking.download_artifact(r.run_id, artifact, tmp)
            if got and got.exists():
                dst = figs / f"{Path(artifact).stem}_{safe_name(m)}.png"
                got.replace(dst)
                found.append((f"{caption} (seed {r.seed})", dst))
        out[m] = found
    if tmp.exists():
        shutil.rmtree(tmp)
    return out


def safe_name(name: str) -> str:
    """`name` as a file name: anything but letters, digits, `_`, `.` and `-` becomes `_`."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)
