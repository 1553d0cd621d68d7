"""MLflow runs -> pandas -> reports/benchmark.md and a self-contained reports/benchmark.html."""

from __future__ import annotations

import base64
import html
import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import tracking

LABELS_MARK = "(labels)"  # beside a model trained with class labels it need not have used

# (column in the table, MLflow metric key, format). "n/a" where a model has no such metric.
COLUMNS = [
    ("bits/dim", "bpd", "{:.3f}"),
    ("ELBO bits/dim", "elbo_bpd", "{:.3f}"),
    ("FID", "fid", "{:.2f}"),
    ("IS", "is_mean", "{:.2f}"),
    ("KID", "kid_mean", "{:.4f}"),
    ("precision", "precision", "{:.3f}"),
    ("recall", "recall", "{:.3f}"),
    ("recon err", "reconstruction_error", "{:.3f}"),
    ("code acc", "code_accuracy", "{:.2f}"),
    ("train s", "train_seconds", "{:.0f}"),
    ("train img/s", "train_images_per_s", "{:.0f}"),
    ("sample img/s", "sample_images_per_s", "{:.0f}"),
    ("params", "params", "{:,.0f}"),
]
# Whether a conditional model obeyed its condition: a second table, for the models that have any.
CONDITION_COLUMNS = [
    ("condition acc", "condition_accuracy", "{:.3f}"),
    ("patch err", "patch_error", "{:.3f}"),
    ("label kept", "label_preservation", "{:.3f}"),
    ("domain acc", "domain_accuracy", "{:.3f}"),
    ("cycle err", "cycle_error", "{:.3f}"),
    ("FID", "fid", "{:.2f}"),
]
FAMILY_ORDER = [
    "baseline",
    "autoregressive",
    "latent-variable",
    "adversarial",
    "conditional",
    "translation",
]


def collect(dataset: str, models: list[str] | None = None) -> pd.DataFrame:
    """One row per model: its latest finished run on `dataset`, benchmark models first."""
    runs = tracking.latest_runs(dataset)
    if runs.empty:
        return runs
    rows = []
    for _, r in runs.iterrows():
        row: dict[str, Any] = {
            "model": r["tags.model"],
            "family": r.get("tags.family", ""),
            "feature_extractor": r.get("tags.feature_extractor", ""),
            "bpd_kind": r.get("tags.bpd_kind", ""),
            "commit": str(r.get("tags.git_commit") or "")[:8],
            "dvc_exp": r.get("tags.dvc_exp_name", ""),
            "run_id": r["run_id"],
            "class_labels": r.get("tags.class_labels") == "yes",
        }
        for key in dict.fromkeys(k for _, k, _ in COLUMNS + CONDITION_COLUMNS):
            value = r.get(f"metrics.{key}")
            row[key] = (
                None if value is None or (isinstance(value, float) and math.isnan(value)) else value
            )
        row["exact_test_bpd"] = r.get("metrics.exact_test_bpd")
        rows.append(row)
    df = pd.DataFrame(rows)
    order = {m: i for i, m in enumerate(models or [])}
    fam = {f: i for i, f in enumerate(FAMILY_ORDER)}
    df["_o"] = [
        (order.get(m, len(order)), fam.get(f, 9), m)
        for m, f in zip(df.model, df.family, strict=True)
    ]
    return df.sort_values("_o").drop(columns="_o").reset_index(drop=True)


def fmt(value: Any, pattern: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return pattern.format(value)


Table = tuple[str, list[str], list[list[str]]]  # (title, header, rows)


def _tables(df: pd.DataFrame) -> list[Table]:
    """The main table of every model, and the conditions table of the conditional ones."""
    if df.empty:
        return []
    main = _table(df, COLUMNS, ["features", "commit", "DVC exp", "run"])
    keys = [k for _, k, _ in CONDITION_COLUMNS if k != "fid"]
    conditional = df[df[keys].notna().any(axis=1)]
    tables = [("", *main)]
    if not conditional.empty:
        tables.append(("Conditions obeyed", *_table(conditional, CONDITION_COLUMNS, ["features"])))
    return tables


def _table(df: pd.DataFrame, columns, tail: list[str]) -> tuple[list[str], list[list[str]]]:
    head = ["model", "family"] + [c for c, _, _ in columns] + tail
    body = []
    for _, r in df.iterrows():
        cells = [f"{r.model} {LABELS_MARK}" if r.get("class_labels") else r.model, r.family]
        for _, key, pattern in columns:
            text = fmt(r[key], pattern)
            if key == "bpd" and text != "n/a" and r.bpd_kind and r.bpd_kind != "exact":
                text += f" ({r.bpd_kind})"
            if key in ("fid", "is_mean", "kid_mean") and text != "n/a":
                text += f" [{r.feature_extractor}]"
            cells.append(text)
        extra = [r.feature_extractor or "n/a", r.commit or "n/a", r.dvc_exp or "n/a", r.run_id[:8]]
        cells += extra[: len(tail)]
        body.append([str(c) for c in cells])
    return head, body


# ------------------------------------------------------------------------------------ figures
def _bar(df: pd.DataFrame, key: str, label: str, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sub = df[df[key].notna()]
    if sub.empty:
        return None
    fig, ax = plt.subplots(figsize=(6, 3))
    colors = ["#888888" if f == "baseline" else "#3b6ea5" for f in sub.family]
    ax.bar(sub.model, sub[key], color=colors)
    for i, v in enumerate(sub[key]):
        ax.text(i, v, f"{v:.3g}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel(label)
    ax.set_title(f"{label} (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _curves(df: pd.DataFrame, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = []
    for _, r in df.iterrows():
        for key in tracking.metric_keys(r.run_id):
            if key.startswith("train/") and key.endswith("/loss"):
                hist = tracking.metric_history(r.run_id, key)
                if len(hist) > 1:
                    series.append((f"{r.model} {key[6:]}", hist))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, hist in series:
        steps, values = zip(*sorted(hist), strict=True)
        ax.plot(steps, values, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("training losses")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------ writers
# Figures a run may carry (MLflow artifact path, caption), in the order they are shown.
RUN_FIGURES = [
    ("samples/samples.png", "samples"),
    ("figures/interpolation.png", "latent interpolation between two samples (rows: pairs)"),
    ("figures/traversal.png", "traversal (rows: categorical code, columns: continuous code)"),
    ("figures/codes.png", "codes of the test images against samples of the prior"),
    ("figures/conditions.png", "inputs beside outputs (test conditions)"),
]
FAMILY_TITLES = {
    "baseline": "Baseline",
    "autoregressive": "Autoregressive models",
    "latent-variable": "Latent-variable models",
    "adversarial": "Adversarial models",
    "conditional": "Conditional generation",
    "translation": "Image-to-image translation",
}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _run_figures(df: pd.DataFrame, figs: Path) -> dict[str, list[tuple[str, Path]]]:
    """Download each run's figures into `figs`: model -> [(caption, file)]."""
    import shutil

    out: dict[str, list[tuple[str, Path]]] = {}
    tmp = figs / "tmp"
    for _, r in df.iterrows():
        found = []
        for artifact, caption in RUN_FIGURES:
            got = tracking.download_artifact(r.run_id, artifact, tmp)
            if got and got.exists():
                stem = Path(artifact).stem
                dst = figs / f"{stem}_{_safe(r.model)}.png"
                got.replace(dst)
                found.append((caption, dst))
        out[r.model] = found
    if tmp.exists():
        shutil.rmtree(tmp)
    return out


def build_report(
    dataset: str, out_dir: Path = Path("reports"), models: list[str] | None = None
) -> tuple[Path, Path]:
    """Write `benchmark.md` (figures beside it) and a self-contained `benchmark.html`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figs = out_dir / "figures"
    if figs.exists():
        for old in figs.glob("*.png"):
            old.unlink()  # figures of models no longer in the report must not linger
    figs.mkdir(exist_ok=True)
    df = collect(dataset, models)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    figures: list[tuple[str, Path]] = []
    sections: list[tuple[str, list[tuple[str, list[tuple[str, Path]]]]]] = []
    if not df.empty:
        charts = [(df, "bpd", "bits/dim", "bpd.png")]
        # FIDs in different feature spaces are not comparable: one chart per extractor.
        for i, (extractor, rows) in enumerate(
            df[df.fid.notna()].groupby("feature_extractor", sort=False)
        ):
            name = "fid.png" if i == 0 else f"fid_{_safe(extractor)}.png"
            charts.append((rows, "fid", f"FID [{extractor}]", name))
        for rows, key, label, name in charts:
            p = _bar(rows, key, label, figs / name)
            if p:
                figures.append((label, p))
        p = _curves(df, figs / "losses.png")
        if p:
            figures.append(("training losses", p))
        per_model = _run_figures(df, figs)
        for family in dict.fromkeys(df.family):
            members = [(m, per_model.get(m, [])) for m in df.model[df.family == family]]
            sections.append((FAMILY_TITLES.get(family, family or "other"), members))
    tables = _tables(df)
    notes = _notes(df)
    md = out_dir / "benchmark.md"
    md.write_text(_markdown(dataset, now, tables, notes, figures, sections, out_dir))
    page = out_dir / "benchmark.html"
    page.write_text(_html(dataset, now, tables, notes, figures, sections))
    return md, page


def _notes(df: pd.DataFrame) -> list[str]:
    notes = [
        "bits/dim: exact -log2 p(x) per dimension on the test split where the model has it; for "
        "latent-variable models the importance-weighted (IWAE) bound, an upper bound on it.",
        "FID / IS / KID / precision / recall: samples against the test split, computed by "
        "torch-fidelity with the feature extractor named in brackets.",
        "n/a: the model has no such quantity (a GAN has no likelihood); nothing stands in for it.",
    ]
    if not df.empty and df[[k for _, k, _ in CONDITION_COLUMNS[:-1]]].notna().any().any():
        notes.append(
            "Conditions obeyed, on the test split: condition acc = the data set's classifier "
            "names the digit of the caption; patch err = mean |difference| (0-1 units) on the "
            "given patches; label kept = a classifier of (domain, digit) pairs still reads the "
            "source digit after translation; domain acc = it reads the target domain; cycle err "
            "= mean |x - back(translate(x))|. FID of translations is against the target "
            "domain's test images, averaged over target domains."
        )
    if not df.empty and df["class_labels"].any():
        notes.append(
            f"{LABELS_MARK}: trained with the training images' class labels as well as their "
            "domains (semantic_weight > 0: the discriminator also classifies the digits of real "
            "images and the generator is penalised when a translation reads as another digit, "
            "CyCADA's semantic consistency); its label kept is not that of label-free unpaired "
            "translation (semantic_weight 0)."
        )
    if not df.empty and df["exact_test_bpd"].notna().any():
        exact = float(df["exact_test_bpd"].dropna().iloc[0])
        notes.append(f"exact test NLL of the data distribution: {exact:.4f} bits/dim.")
    return notes


def _markdown(dataset, now, tables, notes, figures, sections, out_dir: Path) -> str:
    lines = [f"# genbench report: {dataset}", "", f"Generated {now} from the MLflow store.", ""]
    if not tables:
        lines += ["No finished runs for this data set yet: run `genbench benchmark`.", ""]
        return "\n".join(lines)
    for title, head, body in tables:
        if title:
            lines += [f"## {title}", ""]
        esc = [[c.replace("|", "\\|") for c in row] for row in body]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in esc] + [""]
    lines += [f"- {n}" for n in notes] + [""]
    for label, p in figures:
        lines += [f"## {label}", "", f"![{label}]({p.relative_to(out_dir).as_posix()})", ""]
    for title, members in sections:
        lines += [f"## {title}", ""]
        for model, figs in members:
            lines += [f"### {model}", ""]
            for caption, p in figs:
                lines += [
                    f"{caption}:",
                    "",
                    f"![{model} {caption}]({p.relative_to(out_dir).as_posix()})",
                    "",
                ]
    return "\n".join(lines)


def _img(p: Path, alt: str) -> str:
    data = base64.b64encode(p.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _html(dataset, now, tables, notes, figures, sections) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>genbench report: {e(dataset)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
        "th{background:#eee}td{text-align:right}td:first-child,td:nth-child(2){text-align:left}"
        ".figs{display:flex;flex-wrap:wrap;gap:1.5em}figure{margin:0}"
        "img{image-rendering:pixelated;max-width:100%}</style></head><body>",
        f"<h1>genbench report: {e(dataset)}</h1><p>Generated {e(now)} from the MLflow store.</p>",
    ]
    if not tables:
        parts.append(
            "<p>No finished runs for this data set yet: run <code>genbench benchmark</code>.</p>"
        )
    else:
        for title, head, body in tables:
            if title:
                parts.append(f"<h2>{e(title)}</h2>")
            parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>")
            for row in body:
                parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
            parts.append("</table>")
        parts.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
        for label, p in figures:
            parts.append(f"<h2>{e(label)}</h2>{_img(p, label)}")
        for title, members in sections:
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
