"""Training curves as DVC plot files: `step,value` CSVs that dvc.yaml's `plots:` declares."""

from __future__ import annotations

from pathlib import Path


def write_curve(path: Path, points: list[tuple[int, float]]) -> None:
    rows = [f"{int(step)},{value:.6g}" for step, value in points]
    path.write_text("step,value\n" + "".join(row + "\n" for row in rows))
