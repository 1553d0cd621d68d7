"""A benchmark's MLflow runs -> pandas -> reports/benchmark.md and a self-contained .html.

Every number is a summary over training seeds (mean ± sd, a 95% interval, n); a `data` row
(real images scored like samples) stands in every quality table and chart; only runs measured
with one protocol fingerprint share a table; a ranking says "better" only where Welch's t-test
over seeds supports it. Columns, formats, directions and notes come from the metric registry.

`collection` reads MLflow, `tables` makes the tables and rankings, `charts` draws, `budget`
(with `budget_charts`) compares the models at equal training compute, `render` writes Markdown
and HTML; `build_report` runs them and puts the result in place.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from pipeline.errors import ReportError
from pipeline.report import budget, charts, collection, render, tables
from pipeline.report.collection import collect

__all__ = ["ReportError", "build_report", "collect"]


def build_report(
    dataset: str,
    out_dir: Path = Path("reports"),
    models: list[str] | None = None,
    benchmark_run: str | None = None,
) -> tuple[Path, Path]:
    """Write `benchmark.md` (figures beside it) and a self-contained `benchmark.html`."""
    c = collection.collect_nonempty(dataset, benchmark_run)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Built in a staging folder and moved into place only when complete: a report that fails
    # half-way leaves the previous one (text and figures) as it was.
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".report-") as tmp:
        stage = Path(tmp)
        figs = stage / "figures"
        figs.mkdir()
        order = tables.model_order(c.runs, models)
        now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        panels = collection.curves(c, order)
        figures = charts.draw_charts(c, order, figs, panels)
        charts.curve_files(panels, stage / "curves")
        per_model = collection.run_figures(c, order, figs)
        doc = render.Document(
            dataset,
            now,
            render.header(c),
            tables.make_tables(c, order),
            tables.make_rankings(c, order),
            render.notes(c),
            figures,
            tables.family_sections(c, order, per_model),
            budget.make_section(c, order, figs),
        )
        (stage / "benchmark.md").write_text(render.to_markdown(doc, stage))
        (stage / "benchmark.html").write_text(render.to_html(doc))
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
    curve_dir = out_dir / "curves"
    curve_dir.mkdir(exist_ok=True)
    for old in curve_dir.glob("*.csv"):
        old.unlink()  # a model no longer in the report leaves no curve behind
    for new_file in (stage / "curves").glob("*.csv"):
        os.replace(new_file, curve_dir / new_file.name)
    for name in ("benchmark.md", "benchmark.html"):
        os.replace(stage / name, out_dir / name)
