"""Which models a benchmark runs. `benchmark.models: all` (the default) is every registered
model the data can serve, judged from params alone by each model's condition kind and sizes
(`gen.config.DataMismatch`); the others are left out, grouped by reason, so a benchmark on an
RGB folder without domains runs the rest rather than refusing the whole suite. A list (in
params or `--models`) is run as written, and a model in it that cannot run is refused."""

from __future__ import annotations

from dataclasses import dataclass, field

from gen.config import MAX_SEED, ConfigError, DataMismatch
from gen.registry import all_models, check_data
from pipeline.params import ALL, Params
from pipeline.user_errors import UserError

NO_SECTION = "params.yaml has no section for it (`genbench models NAME >> params.yaml` adds one)"


@dataclass
class Selection:
    """The models to run, in the registry's order, and those left out: reason -> models."""

    models: list[str]
    left_out: dict[str, list[str]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """One line per reason: "cyclegan, stargan: the data has no domains ..."."""
        return [f"{', '.join(names)}: {reason}" for reason, names in self.left_out.items()]

    def plan(self, seeds: list[int], jobs: int) -> str:
        """What a benchmark of these models would run (`genbench benchmark --dry-run`)."""
        n, listed = len(self.models), ", ".join(map(str, seeds))
        return (
            f"{n} models x seeds {listed} = {n * len(seeds)} experiments, {jobs} at a time: "
            + ", ".join(self.models)
        )

    def settings(self, suite: str | None) -> dict[str, str]:
        """What a benchmark's run records beside its models and seeds: the models left out
        with their reasons (`left_out`, printed at the top of the report) and the recipe."""
        out = {"left_out": "; ".join(self.lines())} if self.left_out else {}
        return {**out, "suite": suite} if suite else out


def select(p: Params, names: list[str] | None = None) -> Selection:
    """The models of `names` (`--models`), else of `benchmark.models`: a list as it is (the
    benchmark's preflight refuses what cannot run), `all` (also `--models all`) as every model
    the data can serve. A bad value in a model's own section is an error either way."""
    wanted = names or p.benchmark.models
    if wanted != ALL and wanted != [ALL]:
        return Selection(list(wanted))
    chosen: list[str] = []
    left_out: dict[str, list[str]] = {}
    for name in all_models():
        try:
            if name not in p.raw:  # DVC's train stage reads `${model}`'s section
                raise DataMismatch(NO_SECTION, NO_SECTION)
            check_data(name, p.model_section(name), p.data)
        except DataMismatch as exc:
            left_out.setdefault(exc.reason, []).append(name)
            continue
        chosen.append(name)
    if not chosen:
        reasons = "; ".join(Selection([], left_out).lines())
        raise ConfigError(f"benchmark.models is all, but the data can serve no model: {reasons}")
    return Selection(chosen, left_out)


def check_plan(p: Params, names: list[str], seeds: list[int]) -> None:
    """Refuse, with one line, a benchmark of `names` x `seeds` that cannot finish: a model the
    data cannot serve, a model without its params section, seeds that repeat."""
    for name in names:
        check_data(name, p.model_section(name), p.data)
        if name not in p.raw:  # a plug-in's: DVC's train stage depends on `${model}`'s section
            raise UserError(
                f"params.yaml has no '{name}' section, which DVC's train stage reads; add one "
                f"(`genbench models {name} >> params.yaml` appends its defaults)"
            )
    if not seeds or not all(0 <= s <= MAX_SEED for s in seeds) or len(set(seeds)) != len(seeds):
        shown = ",".join(map(str, seeds))
        raise UserError(f"--seeds={shown} must be distinct integers in 0..{MAX_SEED}")
