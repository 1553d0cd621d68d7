"""The report's numbers: tables of summaries over seeds (with the data row), rankings judged by
Welch's test, and the model order and family sections they all share. Families, their order
and titles come from the model classes (gen.models.base.FAMILIES, gen.registry.MODELS)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from gen import stats
from gen.conditions import none
from gen.evaluation import metric
from gen.models.base import FAMILIES
from gen.registry import MODELS
from pipeline.report.collection import DATA, EXTERNAL, Collected

LABELS_MARK = "(labels)"  # beside a model trained with class labels it need not have used
OUTSIDE_MARK = "(outside)"  # beside a model scored from its samples (`genbench score`)
# Families whose models are conditioned on nothing: they share the unconditional tables, with
# the outside models' samples (scored the same way).
UNCONDITIONAL = tuple(
    f for f in FAMILIES if any(c.family == f and c.condition is none.KIND for c in MODELS.values())
) + (EXTERNAL,)
SECTION_TITLES = {**FAMILIES, EXTERNAL: "Outside models (genbench score)"}
# (title, families, per feature space?, metric keys): the report's tables of figures. A table
# of feature-space figures is made once per space its models were scored in (the run tag
# `feature_extractor`: classifier, domain-classifier, dinov2-vit-s-14-local...), so two
# spaces never share a table; its title names the space.
TABLES = [
    (
        "Likelihood and sample quality",
        UNCONDITIONAL,
        True,
        ["bpd", "elbo_bpd", "fid", "fid_sd", "kid_mean", "is_mean"],
    ),
    (
        "Fidelity, diversity and memorisation",
        UNCONDITIONAL,
        True,
        ["precision", "recall", "density", "coverage", "copy_rate", "reconstruction_error"]
        + ["code_accuracy"],
    ),
    (
        "Conditional generation",
        ("conditional",),
        True,
        ["condition_accuracy", "patch_error", "fid", "fid_sd", "kid_mean", "precision"]
        + ["recall", "density", "coverage", "copy_rate"],
    ),
    (
        "Image-to-image translation",
        ("translation",),
        True,
        ["label_preservation", "domain_accuracy", "cycle_error", "fid", "kid_mean"]
        + ["precision", "recall", "density", "coverage"],
    ),
    (
        "Cost",
        tuple(FAMILIES),
        False,
        ["train_seconds", "train_images_per_s", "sample_images_per_s", "params"],
    ),
]
# The headline metric of each ranking: (title, families, key, per feature space?).
RANKINGS = [
    ("bits/dim (likelihood models)", UNCONDITIONAL, "bpd", False),
    ("FID, unconditional models", UNCONDITIONAL, "fid", True),
    ("FID, conditional models", ("conditional",), "fid", True),
    ("FID, translation", ("translation",), "fid", True),
]
Table = tuple[str, list[str], list[list[str]], list[str]]  # title, header, rows, notes
Section = tuple[str, list[tuple[str, list[tuple[str, Path]]]]]  # title, [(model, figures)]


def model_order(df: pd.DataFrame, models: list[str] | None) -> list[str]:
    """The report's model order: as `models` lists them, then by family, then by name."""
    given = {m: i for i, m in enumerate(models or [])}
    fam = {f: i for i, f in enumerate(FAMILIES)}
    pairs = df[["model", "family"]].drop_duplicates("model")
    keyed = sorted(
        (given.get(m, len(given)), fam.get(f, 9), m)
        for m, f in zip(pairs.model, pairs.family, strict=True)
    )
    return [m for _, _, m in keyed]


def by_space(df: pd.DataFrame, models: list[str], split: bool) -> dict[str | None, list[str]]:
    """`models` grouped by the feature space all their runs were scored in (in order of
    first appearance; a model whose runs disagree is in no group), or one group (None)."""
    if not split:
        return {None: models} if models else {}
    groups: dict[str | None, list[str]] = {}
    for m in models:
        spaces = set(df[df.model == m].feature_extractor)
        if len(spaces) == 1:
            groups.setdefault(spaces.pop(), []).append(m)
    return groups


def make_tables(c: Collected, order: list[str]) -> list[Table]:
    """One table per entry of TABLES and feature space that has models and values, then the
    provenance table."""
    df, out = c.runs, []
    for title, families, split, keys in TABLES:
        members = [m for m in order if df[df.model == m].family.iloc[0] in families]
        for space, models in by_space(df, members, split).items():
            table = _table(c, title, space, models, keys)
            if table is not None:
                out.append(table)
    out.append(_provenance(df, order))
    return out


def _table(
    c: Collected, title: str, space: str | None, models: list[str], keys: list[str]
) -> Table | None:
    """One table: the data row of `space` (if any), then a row per model; None if empty."""
    df = c.runs
    keys = [k for k in keys if df[df.model.isin(models)][k].notna().any()]
    if not keys:
        return None
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
            text = cell(summary(df, m, k), metric(k).fmt)
            kinds = df[df.model == m].bpd_kind
            if k == "bpd" and text != "n/a" and kinds.iloc[0] not in ("", "exact"):
                text += f" ({kinds.iloc[0]})"
            row.append(text)
        body.append(row)
    where = f" [{space} features]" if space else ""
    notes = [f"{metric(k).label}: {metric(k).note}" for k in keys if metric(k).note]
    return (title + where, head, body, notes)


def _provenance(df: pd.DataFrame, order: list[str]) -> Table:
    """Where each model's numbers come from: seeds, commits, DVC experiments, MLflow runs."""
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
    return ("Provenance", ["model", "seeds", "commit", "DVC experiments", "runs"], prov, [])


def make_rankings(c: Collected, order: list[str]) -> list[tuple[str, list[str]]]:
    """Per headline metric: models best first, each pair of neighbours judged by Welch's test."""
    df, out = c.runs, []
    for title, families, key, split in RANKINGS:
        members = [m for m in order if df[df.model == m].family.iloc[0] in families]
        for space, models in by_space(df, members, split).items():
            lines = _ranking(df, models, key)
            if lines:
                out.append((f"{title} [{space}]" if space else title, lines))
    return out


def _ranking(df: pd.DataFrame, models: list[str], key: str) -> list[str]:
    """Models best first by `key`, each judged against the next; empty under two models."""
    groups = {m: df[df.model == m][key].tolist() for m in models}
    groups = {m: v for m, v in groups.items() if any(x is not None for x in v)}
    if len(groups) < 2:
        return []
    return ranked_lines(groups, key, lambda m: f"{m} {OUTSIDE_MARK}" if _outside(df, m) else m)


def ranked_lines(groups: dict[str, list], key: str, label: Callable[[str], str] = str) -> list[str]:
    """Models best first by their values of `key` over seeds, each judged against the next."""
    lower = metric(key).better == "lower"
    lines = []
    for i, (m, s, comp) in enumerate(stats.rank(groups, lower_is_better=lower), start=1):
        text = f"{i}. {label(m)}: {cell(s, metric(key).fmt)} (n={s.n})"
        if comp is not None:
            text += f"; {stats.verdict(comp, lower)}"
        lines.append(text)
    return lines


def family_sections(
    c: Collected, order: list[str], per_model: dict[str, list[tuple[str, Path]]]
) -> list[Section]:
    """The per-model figures grouped by family, under each family's title."""
    out = []
    for family in dict.fromkeys(c.runs.set_index("model").loc[order].family):
        members = [
            (m, per_model.get(m, []))
            for m in order
            if per_model and c.runs[c.runs.model == m].family.iloc[0] == family
        ]
        out.append((SECTION_TITLES.get(family, family or "other"), members))
    return out


def cell(s: stats.Summary | None, pattern: str) -> str:
    """mean ± sd [95% interval] for several seeds, the bare number for one, n/a for none."""
    if s is None:
        return "n/a"
    if s.std is None:
        return _num(s.mean, pattern)
    text = f"{_num(s.mean, pattern)} ± {_num(s.std, pattern)}"
    return f"{text} [{_num(s.low, pattern)}, {_num(s.high, pattern)}]"


def summary(df: pd.DataFrame, model: str, key: str) -> stats.Summary | None:
    """`key` of `model` summarised over its seeds."""
    return stats.summarise(df[df.model == model][key].tolist())


def _num(value: float | None, pattern: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return pattern.format(value)


def _outside(df: pd.DataFrame, model: str) -> bool:
    return bool((df[df.model == model].family == EXTERNAL).all())


def _label(df: pd.DataFrame, model: str) -> str:
    if _outside(df, model):
        return f"{model} {OUTSIDE_MARK}"
    labelled = bool(df[df.model == model].class_labels.any())
    return f"{model} {LABELS_MARK}" if labelled else model
