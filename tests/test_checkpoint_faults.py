"""Checkpoints that do not match, and a full disk or an unwritable artifact store: one `Error:`
line and exit status 2, no traceback, no run left RUNNING, params.yaml and earlier results as
they were, and a FINISHED run still FINISHED with its metric rows (a failed re-run is a tag).

Class 3: every stage that loads a checkpoint checks it against params.yaml, the prepared data
and the MLflow run it logs into before it logs anything. Class 4: outputs are replaced whole
or not at all, and finished work is never demoted."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import TINY, copy_project, genbench, set_params, with_a_finished_run

from gen.checkpoint import CheckpointError, model_from_checkpoint
from gen.config import as_dict
from gen.data import DataMeta
from gen.registry import build
from pipeline import tracking
from pipeline.checkpoints import CONFIG_TAG
from pipeline.cli import main

RESULTS = ("params.yaml", "metrics.json", "runs", "data/prepared")
NO_CURVE = {"eval": {"curve_points": 0}}  # the quality curve costs seconds and is not tested here


@pytest.fixture(scope="module")
def repo(prepared_template, tmp_path_factory) -> Iterator[Path]:
    """A tiny project with data, ruler, data row and one FINISHED pixelcnn run."""
    repo = copy_project(prepared_template, tmp_path_factory.mktemp("ckpt") / "repo")
    set_params(repo, **NO_CURVE)
    yield with_a_finished_run(repo)


@pytest.fixture
def here(repo: Path, monkeypatch) -> Path:
    monkeypatch.chdir(repo)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo / 'mlflow.db'}")
    monkeypatch.setenv("CI", "true")
    return repo


# ------------------------------------------------------------------------------ what we see
def rows(repo: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(f"file:{repo / 'mlflow.db'}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def store(repo: Path) -> dict[str, list[tuple]]:
    """What a fault must not change: every run's status and end time, every metric row, param
    and tag (but the tag that records a failed re-run), and the logged models."""
    return {
        "runs": rows(repo, "select run_uuid, status, end_time from runs order by 1"),
        "metrics": rows(repo, "select * from metrics order by 1, 2, 3, 4, 5"),
        "params": rows(repo, "select * from params order by 1, 2"),
        "tags": rows(
            repo,
            f"select * from tags where key != '{tracking.FAILED_RERUN_TAG}' order by 1, 2, 3",
        ),
        "models": rows(repo, "select count(*) from logged_models"),
    }


def results(repo: Path) -> dict[str, str]:
    """sha256 of params.yaml and every output file (runs/, metrics.json, data/prepared)."""
    out = {}
    for name in RESULTS:
        path = repo / name
        for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if f.is_file() and "wip" not in f.parts:
                out[str(f.relative_to(repo))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def leftovers(repo: Path) -> list[str]:
    """Half-written files or staging folders a failed write left behind."""
    found = []
    for folder in (repo, repo / "runs", repo / "data", repo / "runs" / "wip"):
        if folder.is_dir():
            found += [p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".staged"))]
    return found


def running(repo: Path) -> int:
    return rows(repo, "select count(*) from runs where status = 'RUNNING'")[0][0]


def run_id(repo: Path) -> str:
    return json.loads((repo / "runs" / "run.json").read_text())["run_id"]


def failed_rerun(repo: Path, run: str) -> str | None:
    found = rows(
        repo,
        f"select value from tags where run_uuid = '{run}' and key = '{tracking.FAILED_RERUN_TAG}'",
    )
    return found[0][0] if found else None


def invoke(args: list[str]) -> tuple[int, str]:
    """Exit status and all that `genbench ARGS` printed (a traceback marked as such)."""
    result = CliRunner().invoke(main, args)
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    return result.exit_code, result.output + ("Traceback" if crashed else "")


def one_error_line(code: int, output: str, says: str) -> None:
    assert code == 2, output
    assert "Traceback" not in output, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), output
    assert says in lines[0], lines[0]


# ------------------------------------------------------------------- faults set up for a probe
@contextlib.contextmanager
def kept(*paths: Path) -> Iterator[None]:
    """The files `paths` as they are now, put back afterwards whatever the probe did."""
    saved = {p: p.read_bytes() for p in paths}
    try:
        yield
    finally:
        for p, data in saved.items():
            p.write_bytes(data)


def _checkpoint(repo: Path) -> Path:
    return repo / "runs" / "model.pt"


def edited_checkpoint(
    change: Callable[[dict], object],
) -> Callable[[Path], contextlib.AbstractContextManager]:
    """runs/model.pt replaced by what `change` makes of its contents (a dict it edits, or any
    object to save instead)."""

    @contextlib.contextmanager
    def fault(repo: Path) -> Iterator[None]:
        path = _checkpoint(repo)
        with kept(path):
            ckpt = torch.load(path, weights_only=True)
            made = change(ckpt)
            torch.save(ckpt if made is None else made, path)
            yield

    return fault


def as_vae(ckpt: dict) -> None:
    """A finished VAE's checkpoint (same data and seed) where the pixelcnn's was."""
    vae = build("vae", TINY["vae"], DataMeta(**ckpt["meta"]))
    ckpt.update(name="vae", config=as_dict(vae.cfg), state_dict=vae.state_dict(), optimisers={})


def without_a_weight(ckpt: dict) -> None:
    ckpt["state_dict"].pop(next(iter(ckpt["state_dict"])))


def a_weight_reshaped(ckpt: dict) -> None:
    key = next(iter(ckpt["state_dict"]))
    ckpt["state_dict"][key] = torch.zeros(3)


@contextlib.contextmanager
def truncated(repo: Path) -> Iterator[None]:
    path = _checkpoint(repo)
    with kept(path):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        yield


@contextlib.contextmanager
def params(repo: Path, **changes) -> Iterator[None]:
    with kept(repo / "params.yaml"):
        set_params(repo, **changes)
        yield


@contextlib.contextmanager
def run_json_to(repo: Path, choose: Callable[[Path], str]) -> Iterator[None]:
    """runs/run.json pointing at the run `choose` picks (or makes)."""
    path = repo / "runs" / "run.json"
    with kept(path):
        info = json.loads(path.read_text())
        path.write_text(json.dumps({**info, "run_id": choose(repo)}))
        yield


def data_row_run(repo: Path) -> str:
    found = rows(repo, "select run_uuid from tags where key = 'model' and value = 'data'")
    return found[0][0]


def run_of_another_config(repo: Path) -> str:
    """A finished pixelcnn run (same seed, code, data) trained with another config."""
    tags = {k: v for k, v in tracking.run_tags(run_id(repo)).items() if k in ("code", "data")}
    other = tracking.start_run("digits", "pixelcnn", "autoregressive", {}, 0, tags)
    tracking.set_tags(other, {CONFIG_TAG: "0" * 16})
    tracking.finish(other)
    return other


@contextlib.contextmanager
def samples_of_another_checkpoint(repo: Path) -> Iterator[None]:
    path = repo / "runs" / "samples.pt"
    with kept(path):
        saved = torch.load(path, weights_only=True)
        torch.save({**saved, "checkpoint": "0" * 16}, path)
        yield


def garbage(relative: str, data: bytes = b"\x00 not what it should be") -> Callable:
    @contextlib.contextmanager
    def fault(repo: Path) -> Iterator[None]:
        path = repo / relative
        with kept(path):
            path.write_bytes(data)
            yield

    return fault


@contextlib.contextmanager
def other_levels(repo: Path) -> Iterator[None]:
    """data/prepared re-made at another number of levels than the checkpoint was trained on."""
    path = repo / "data" / "prepared" / "meta.json"
    with kept(path):
        meta = json.loads(path.read_text())
        path.write_text(json.dumps({**meta, "levels": 2}))
        yield


# (id, fault, command, what the one line must say)
MISMATCHES = [
    (
        "vae checkpoint, params say pixelcnn: sample",
        edited_checkpoint(as_vae),
        ["sample"],
        "runs/model.pt holds a 'vae' checkpoint but params.yaml says model 'pixelcnn'",
    ),
    (
        "vae checkpoint, params say pixelcnn: evaluate",
        edited_checkpoint(as_vae),
        ["evaluate"],
        "holds a 'vae' checkpoint but params.yaml says model 'pixelcnn'",
    ),
    (
        "params changed the config",
        lambda r: params(r, pixelcnn={"channels": 16}),
        ["sample"],
        "pixelcnn.channels=16",
    ),
    (
        "params changed the seed",
        lambda r: params(r, seed=3),
        ["evaluate"],
        "trained with seed 0 but params.yaml says seed 3",
    ),
    (
        "params changed steps",
        lambda r: params(r, pixelcnn={"steps": 6}),
        ["evaluate"],
        "pixelcnn.steps=6",
    ),
    ("a weight missing", edited_checkpoint(without_a_weight), ["sample"], "do not fit"),
    ("a weight of another shape", edited_checkpoint(a_weight_reshaped), ["evaluate"], "(3,)"),
    ("truncated checkpoint", truncated, ["sample"], "is corrupt"),
    (
        "not a checkpoint",
        edited_checkpoint(lambda c: torch.zeros(3)),
        ["evaluate"],
        "not a genbench checkpoint",
    ),
    (
        "checkpoint without weights",
        edited_checkpoint(lambda c: {k: v for k, v in c.items() if k != "state_dict"}),
        ["sample"],
        "lacks state_dict",
    ),
    (
        "config not a mapping",
        edited_checkpoint(lambda c: {**c, "config": [1, 2]}),
        ["sample"],
        "its config is a list",
    ),
    (
        "run.json names the data row's run",
        lambda r: run_json_to(r, data_row_run),
        ["evaluate"],
        "is of model 'data'",
    ),
    (
        "run.json names a run of another config",
        lambda r: run_json_to(r, run_of_another_config),
        ["sample"],
        "another config than the MLflow run",
    ),
    ("run.json corrupt", garbage("runs/run.json"), ["sample"], "runs/run.json' is unreadable"),
    (
        "samples of another checkpoint",
        samples_of_another_checkpoint,
        ["evaluate"],
        "were drawn from another checkpoint",
    ),
    ("samples corrupt", garbage("runs/samples.pt"), ["evaluate"], "samples 'runs/samples.pt'"),
    ("data prepared since", other_levels, ["sample"], "but data/prepared holds"),
]


@pytest.mark.parametrize(
    ("fault", "args", "says"), [pytest.param(*m[1:], id=m[0]) for m in MISMATCHES]
)
def test_a_checkpoint_that_does_not_match_is_one_line_and_logs_nothing(here, fault, args, says):
    with fault(here):
        before, files = store(here), results(here)
        code, output = invoke(args)
        assert store(here) == before  # nothing logged, no run reopened or made
        assert results(here) == files
    one_error_line(code, output, says)
    assert running(here) == 0 and not leftovers(here)


def test_a_checkpoint_that_does_not_build_or_fit_is_a_checkpoint_error(here):
    ckpt = torch.load(_checkpoint(here), weights_only=True)
    with pytest.raises(CheckpointError, match="does not describe a model that builds"):
        model_from_checkpoint({**ckpt, "config": {"channels": "many"}}, path="x.pt")
    with pytest.raises(CheckpointError, match="do not fit the pixelcnn"):
        model_from_checkpoint({**ckpt, "state_dict": {}}, path="x.pt")
    assert model_from_checkpoint(ckpt).name == "pixelcnn"  # the real one still loads


# --------------------------------------------------------------- full disk, unwritable store
def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def read_only(*args, **kwargs):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS))


def disk_full_at(monkeypatch, name: str) -> None:
    """Writing a file whose name starts with `name` fails as on a full disk, after part of it
    was written: through open() or pathlib an OSError(ENOSPC), through torch's own file writer
    (torch.save to a path) the RuntimeError torch raises then (both as measured on /dev/full)."""
    import io

    real_open, real_save = io.open, torch.save

    def hit(file) -> bool:
        return isinstance(file, (str, os.PathLike)) and Path(file).name.startswith(name)

    def open_(file, mode="r", *args, **kwargs):
        if "w" in mode and hit(file):
            with real_open(file, mode, *args, **kwargs) as handle:
                handle.write(b"partial" if "b" in mode else "partial")
            no_space()
        return real_open(file, mode, *args, **kwargs)

    def save(obj, f, *args, **kwargs):
        if hit(f):
            with real_open(f, "wb") as handle:
                handle.write(b"partial")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr("builtins.open", open_)
    monkeypatch.setattr("io.open", open_)
    monkeypatch.setattr(torch, "save", save)


def with_fault(make: Callable[[pytest.MonkeyPatch], object], args: list[str]) -> tuple[int, str]:
    """`invoke(args)` with the fault `make` sets up, undone afterwards (only it)."""
    with pytest.MonkeyPatch.context() as mp:
        make(mp)
        return invoke(args)


def _artifact_store_fails(monkeypatch, fail: Callable) -> None:
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    monkeypatch.setattr(LocalArtifactRepository, "log_artifact", fail)


# (id, how the fault is made, command, what the one line must say)
WRITE_FAULTS = [
    (
        "disk full writing samples",
        lambda mp: disk_full_at(mp, "samples.pt"),
        ["sample"],
        "No space left",
    ),
    (
        "disk full writing a figure",
        lambda mp: disk_full_at(mp, "samples.png"),
        ["sample"],
        "No space left",
    ),
    (
        "disk full writing metrics.json",
        lambda mp: disk_full_at(mp, "metrics.json"),
        ["evaluate"],
        "No space left",
    ),
    (
        "read-only artifact store: sample",
        lambda mp: _artifact_store_fails(mp, read_only),
        ["sample"],
        "MLflow artifact store",
    ),
    (
        "read-only artifact store: evaluate",
        lambda mp: _artifact_store_fails(mp, read_only),
        ["evaluate"],
        "Read-only file system",
    ),
    (
        "full artifact store while logging the model",
        lambda mp: mp.setattr("mlflow.pytorch.log_model", no_space),
        ["evaluate"],
        "No space left on device; free some space",
    ),
]


@pytest.mark.parametrize(
    ("make", "args", "says"), [pytest.param(*w[1:], id=w[0]) for w in WRITE_FAULTS]
)
def test_a_failed_write_on_a_finished_run_leaves_it_finished_and_the_results_whole(
    here, make, args, says
):
    run = run_id(here)
    assert tracking.run_status(run) == "FINISHED"
    before, files = store(here), results(here)
    code, output = with_fault(make, args)
    one_error_line(code, output, says)
    assert store(here) == before  # still FINISHED, same end time, no metric row added
    assert results(here) == files and not leftovers(here)
    assert running(here) == 0
    assert failed_rerun(here, run).startswith(f"{args[0]} FAILED at ")


def test_an_artifact_folder_in_the_way_is_one_line(here):
    """The store cannot take the sample grid: a folder holds its place."""
    run = run_id(here)
    uri = tracking.connect().get_run(run).info.artifact_uri
    grid = Path(uri.removeprefix("file://")) / "samples" / "samples.png"
    before, files = store(here), results(here)
    with kept(grid):
        grid.unlink()
        (grid / "x").mkdir(parents=True)
        try:
            code, output = invoke(["sample"])
        finally:
            (grid / "x").rmdir()
            grid.rmdir()
    one_error_line(code, output, "MLflow artifact store")
    assert "Is a directory" in output
    assert store(here) == before and results(here) == files and running(here) == 0
    assert failed_rerun(here, run).startswith("sample FAILED at ")


def test_a_run_that_never_finished_is_marked_failed_on_a_full_disk_then_finished(here):
    """The rule for a run whose evaluation never succeeded is unchanged: FAILED, not RUNNING,
    and the next attempt finishes it."""
    genbench("train")
    genbench("sample")
    run = run_id(here)
    assert tracking.run_status(run) == "RUNNING"
    metrics = (here / "metrics.json").read_bytes()
    code, output = with_fault(lambda mp: disk_full_at(mp, "metrics.json"), ["evaluate"])
    one_error_line(code, output, "No space left on device")
    assert tracking.run_status(run) == "FAILED" and failed_rerun(here, run) is None
    assert (here / "metrics.json").read_bytes() == metrics and not leftovers(here)
    genbench("evaluate")
    assert tracking.run_status(run) == "FINISHED"


def test_a_full_disk_while_training_keeps_the_checkpoint_and_leaves_nothing_running(here):
    files = results(here)
    with kept(here / "runs" / "run.json"):  # it names the attempt's run, FAILED
        # The resumable checkpoint, at its first write.
        code, output = with_fault(lambda mp: disk_full_at(mp, "pixelcnn.pt"), ["train"])
        one_error_line(code, output, "cannot write runs/wip/pixelcnn.pt: No space left on device")
        assert tracking.run_status(run_id(here)) == "FAILED"
    assert running(here) == 0 and not leftovers(here)
    assert results(here) == files  # runs/model.pt, its curves, samples, metrics.json


def test_a_full_disk_while_preparing_keeps_the_prepared_data(here):
    files = results(here)
    code, output = with_fault(lambda mp: disk_full_at(mp, "data.pt"), ["prepare"])
    one_error_line(code, output, "data.pt: No space left on device")
    assert results(here) == files and not leftovers(here)


def test_the_data_row_is_failed_not_running_when_the_artifact_store_refuses(here):
    before = rows(here, "select count(*) from runs where status = 'FAILED'")[0][0]
    files = results(here)

    def fault(mp: pytest.MonkeyPatch) -> None:
        _artifact_store_fails(mp, read_only)
        # The figures are not what is tested here, and cost seconds: a row of the right form.
        mp.setattr("pipeline.stages.E.reference_rows", lambda *a: {"classifier": [{"fid": 1.0}]})

    code, output = with_fault(fault, ["reference"])
    one_error_line(code, output, "MLflow artifact store")
    assert running(here) == 0
    assert rows(here, "select count(*) from runs where status = 'FAILED'")[0][0] == before + 1
    assert results(here) == files and not leftovers(here)


def test_a_resumable_checkpoint_of_another_run_or_whose_weights_do_not_fit_is_one_line(here):
    """A kill left runs/wip/ with this run's checkpoint; then its note names another model's
    run, or its weights were damaged: `genbench train` says so before touching any run."""
    import gen.trainer

    real = gen.trainer.save_checkpoint

    def save_then_die(path, payload):
        real(path, payload)
        raise KeyboardInterrupt  # killed right after the first checkpoint

    wip = here / "runs" / "wip" / "pixelcnn.pt"
    note = wip.with_suffix(".json")
    with kept(here / "runs" / "run.json"):  # the killed attempt's run, KILLED
        with_fault(lambda mp: mp.setattr(gen.trainer, "save_checkpoint", save_then_die), ["train"])
        with kept(note):  # an interrupted attempt at a vae, which it would continue
            vae = tracking.start_run("digits", "vae", "latent-variable", {}, 0)
            tracking.finish(vae, "KILLED")
            note.write_text(json.dumps({"run_id": vae}))
            before, files = store(here), results(here)
            other_run = invoke(["train"])
            assert store(here) == before and results(here) == files
        ckpt = torch.load(wip, weights_only=True)
        without_a_weight(ckpt)
        torch.save(ckpt, wip)
        before, files = store(here), results(here)
        damaged = invoke(["train"])
        assert store(here) == before and results(here) == files and running(here) == 0
    for f in wip.parent.glob("*"):
        f.unlink()
    one_error_line(*other_run, "is of model 'vae'; delete runs/wip/pixelcnn.json to resume it")
    one_error_line(*damaged, "runs/wip/pixelcnn.pt': its weights do not fit")
    assert "delete it to train from scratch" in damaged[1]


# ------------------------------------------------------------------ whole or not at all
def test_staged_outputs_replace_files_and_folders_only_once_all_are_written(tmp_path):
    from gen.atomic import staged

    out, folder = tmp_path / "out.json", tmp_path / "figures"
    out.write_text("old")
    folder.mkdir()
    (folder / "old.png").write_text("old")
    with pytest.raises(OSError), staged(out, folder) as (new_out, new_folder):
        new_out.write_text("new")
        no_space()
    assert out.read_text() == "old" and [p.name for p in folder.iterdir()] == ["old.png"]
    with staged(out, folder) as (new_out, new_folder):
        new_out.write_text("new")
        new_folder.mkdir()
        (new_folder / "new.png").write_text("new")
    assert out.read_text() == "new" and [p.name for p in folder.iterdir()] == ["new.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures", "out.json"]


def test_a_refused_torch_save_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    from gen.atomic import save_tensors

    path = tmp_path / "model.pt"
    save_tensors({"step": 1}, path)
    disk_full_at(monkeypatch, "model.pt")
    with pytest.raises(OSError) as info:
        save_tensors({"step": 2}, path)
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
