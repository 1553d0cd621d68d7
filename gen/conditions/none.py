"""Unconditional models: trained on images with their class labels (y, used or not), sampled
from noise alone, scored on sample quality only; no condition figure. These are the answers of
the base kind itself (gen/conditions/__init__.py), which the other kinds override in part."""

from __future__ import annotations

from gen.conditions import ConditionKind

KIND = ConditionKind()
