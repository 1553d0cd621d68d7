"""The report as text: its header and notes, then one `Document` written as Markdown (figures
beside it) and as a self-contained HTML page (figures embedded)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

from pipeline.report.budget import Figure, Ranking
from pipeline.report.budget import Section as Budget
from pipeline.report.collection import DATA, Collected
from pipeline.report.tables import LABELS_MARK, Section, Table

BUDGET_TITLE = "Budget: quality against training compute"


@dataclass
class Document:
    """Everything the report shows, in order; both pages are written from it."""

    dataset: str
    now: str
    header: list[str]
    tables: list[Table]
    rankings: list[tuple[str, list[str]]]
    notes: list[str]
    figures: list[tuple[str, Path]]
    sections: list[Section]
    budget: Budget | None = None


def _feature_space(c: Collected) -> str:
    """What the feature-space figures were computed in: the data set's classifier, or a
    torch-fidelity extractor's weights file."""
    spaces = sorted(set(c.runs.feature_extractor) - {""})
    own = {"classifier", "domain-classifier"}
    if set(spaces) <= own:
        what = "the data set's own classifier (penultimate layer; IS from its logits)"
    else:
        weights = c.protocol.get("protocol.feature_weights", "n/a")
        what = (
            f"{', '.join(s for s in spaces if s not in own)} (a torch-fidelity extractor; "
            f"weights file sha256 {weights}, `none`: torch-fidelity's download; grayscale "
            "images repeated to three channels; IS only where the extractor has class logits)"
        )
    return (
        f"Feature space: {what}, whitened with the training split's mean and covariance "
        "before FID, KID, precision/recall, density/coverage and copy rate, so KID's cubic "
        "kernel sees features of order 1 in every direction and real-vs-real KID is about 0. "
        "Each feature space (translation's: the target domains' images) has its own tables "
        "and charts."
    )


def header(c: Collected) -> list[str]:
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
    if c.left_out:  # several parts of one benchmark name the same ones
        left = "; ".join(dict.fromkeys(c.left_out))
        lines.append(f"Left out, as the data cannot serve them (benchmark.models: all): {left}.")
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
    lines.append(_feature_space(c))
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


def notes(c: Collected) -> list[str]:
    """How to read the tables and rankings, with what these runs add (labels, exact NLL)."""
    df = c.runs
    out = [
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
        out.append(
            f"{LABELS_MARK}: trained with the training images' class labels as well as their "
            "domains (semantic_weight > 0: the discriminator also classifies the digits of real "
            "images and the generator is penalised when a translation reads as another digit, "
            "CyCADA's semantic consistency); its label kept is not that of label-free unpaired "
            "translation (semantic_weight 0)."
        )
    if df["exact_test_bpd"].notna().any():
        exact = float(df["exact_test_bpd"].dropna().iloc[0])
        out.append(f"exact test NLL of the data distribution: {exact:.4f} bits/dim.")
    return out


def to_markdown(doc: Document, out_dir: Path) -> str:
    """The Markdown page; figure links are relative to `out_dir`, where it is written."""
    e = _md_escape
    lines = [f"# genbench report: {e(doc.dataset)}", "", f"Generated {doc.now} from MLflow.", ""]
    lines += [e(h) + "\n" for h in doc.header]
    for table in doc.tables:
        lines += _md_table(table, "##")
    if doc.rankings:
        lines += ["## Rankings", ""]
        for title, items in doc.rankings:
            lines += [f"### {e(title)}", ""] + [e(i) for i in items] + [""]
    lines += ["## Notes", ""] + [f"- {e(n)}" for n in doc.notes] + [""]
    for label, p in doc.figures:
        lines += [f"## {e(label)}", "", f"![{e(label)}]({p.relative_to(out_dir).as_posix()})", ""]
    if doc.budget is not None:
        lines += _budget_markdown(doc.budget, out_dir)
    for title, members in doc.sections:
        lines += [f"## {e(title)}", ""]
        for model, figs in members:
            lines += [f"### {e(model)}", ""]
            for caption, p in figs:
                rel = p.relative_to(out_dir).as_posix()
                lines += [f"{e(caption)}:", "", f"![{e(model)} {e(caption)}]({rel})", ""]
    return "\n".join(lines)


def to_html(doc: Document) -> str:
    """One self-contained HTML page: the figures are embedded as data URIs."""
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
    for table in doc.tables:
        parts += _html_table(table, "h2")
    if doc.rankings:
        parts.append("<h2>Rankings</h2>")
        for title, items in doc.rankings:
            parts.append(f"<h3>{e(title)}</h3><ol>")
            parts += [f"<li>{e(i.split('. ', 1)[1])}</li>" for i in items]
            parts.append("</ol>")
    parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in doc.notes) + "</ul>")
    for label, p in doc.figures:
        parts.append(f"<h2>{e(label)}</h2>{_img(p, label)}")
    if doc.budget is not None:
        parts += _budget_html(doc.budget)
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


def _md_table(table: Table, level: str) -> list[str]:
    e = _md_escape
    title, head, body, table_notes = table
    lines = [f"{level} {e(title)}", ""]
    lines += ["| " + " | ".join(e(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(e(c) for c in row) + " |" for row in body] + [""]
    return lines + [f"- {e(n)}" for n in table_notes] + ([""] if table_notes else [])


def _html_table(table: Table, level: str) -> list[str]:
    e = html.escape
    title, head, body, table_notes = table
    parts = [f"<{level}>{e(title)}</{level}><table><tr>"]
    parts.append("".join(f"<th>{e(h)}</th>" for h in head) + "</tr>")
    for row in body:
        klass = " class='data'" if row[0].startswith(DATA + " ") else ""
        parts.append(f"<tr{klass}>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
    parts.append("</table>")
    if table_notes:
        notes = "".join(f"<li>{e(n)}</li>" for n in table_notes)
        parts.append(f"<ul class='notes'>{notes}</ul>")
    return parts


def _budget_markdown(budget: Budget, out_dir: Path) -> list[str]:
    """The budget section: its intro, then each part's text, figures, tables and rankings."""
    e = _md_escape
    lines = [f"## {BUDGET_TITLE}", ""] + [e(t) + "\n" for t in budget.intro]
    for part in budget.parts:
        lines += [f"### {e(part.title)}", ""]
        for b in part.blocks:
            if isinstance(b, str):
                lines += [e(b), ""]
            elif isinstance(b, Figure):
                lines += [f"![{e(b.label)}]({b.path.relative_to(out_dir).as_posix()})", ""]
            elif isinstance(b, Ranking):
                lines += [f"#### Ranking: {e(b.title)}", ""] + [e(i) for i in b.lines] + [""]
            else:
                lines += _md_table(b, "####")
    return lines


def _budget_html(budget: Budget) -> list[str]:
    e = html.escape
    parts = [f"<h2>{BUDGET_TITLE}</h2>"] + [f"<p>{e(t)}</p>" for t in budget.intro]
    for part in budget.parts:
        parts.append(f"<h3>{e(part.title)}</h3>")
        for b in part.blocks:
            if isinstance(b, str):
                parts.append(f"<p>{e(b)}</p>")
            elif isinstance(b, Figure):
                parts.append(f"<figure>{_img(b.path, b.label)}</figure>")
            elif isinstance(b, Ranking):
                parts.append(f"<h4>Ranking: {e(b.title)}</h4><ol>")
                parts += [f"<li>{e(i.split('. ', 1)[1])}</li>" for i in b.lines]
                parts.append("</ol>")
            else:
                parts += _html_table(b, "h4")
    return parts


def _md_escape(text: str) -> str:
    return html.escape(text, quote=False).replace("|", "\\|")


def _img(p: Path, alt: str) -> str:
    data = base64.b64encode(p.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
