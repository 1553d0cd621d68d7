"""Training curves as DVC plot files: `step,value` CSVs that dvc.yaml's `plots:` declares, and
the validation quality curve with the compute spent at each of its points."""

from __future__ import annotations

from pathlib import Path

from gen.quality_curve import FIGURES

SPENT = ("flops", "images", "seconds")  # `compute/<name>` at a point
QUALITY_COLUMNS = ("step", *SPENT, *FIGURES)


def write_curve(path: Path, points: list[tuple[int, float]]) -> None:
    rows = [f"{int(step)},{value:.6g}" for step, value in points]
    path.write_text("step,value\n" + "".join(row + "\n" for row in rows))


def write_quality_curve(path: Path, history: list[dict[str, float]]) -> None:
    """One row per point of the quality curve (`val/fid` ...) in `history`, with the compute
    spent through its step (from its own row, or from that step's log row)."""
    spent = {h["step"]: h for h in history if "compute/flops" in h}
    lines = []
    for h in history:
        if "val/fid" not in h:
            continue
        at = {**spent.get(h["step"], {}), **h}
        cells = [f"{int(h['step'])}"]
        cells += [
            _cell(at.get(f"compute/{k}"), "{:.0f}" if k != "seconds" else "{:.3f}") for k in SPENT
        ]
        cells += [_cell(at.get(f"val/{k}"), "{:.6g}") for k in FIGURES]
        lines.append(",".join(cells) + "\n")
    path.write_text(",".join(QUALITY_COLUMNS) + "\n" + "".join(lines))


def _cell(value: float | None, fmt: str) -> str:
    return "" if value is None else fmt.format(value)
