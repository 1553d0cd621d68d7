"""Everything that talks to MLflow lives here (and, for trained models as MLflow models, in
`pipeline.logged_models`; for `genbench copy-runs`, in `pipeline.copy_runs`); the rest of the
project passes plain dicts in.

The store is always the main repository's own, also when DVC runs an experiment in a temporary
copy under `.dvc/tmp/exps/` (which is deleted afterwards), so no run is ever lost with it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from pipeline.errors import TrackingError
from pipeline.store_check import check_store, quiet_store_logs

EXPS_MARKER = os.sep + os.path.join(".dvc", "tmp", "exps") + os.sep


def repo_root(start: Path | None = None) -> Path:
    """The main repository: above `.dvc/tmp/exps/...` for DVC temp runs, else the nearest `.dvc`."""
    here = (start or Path.cwd()).resolve()
    text = str(here) + os.sep
    if EXPS_MARKER in text:
        return Path(text.split(EXPS_MARKER)[0])
    for folder in (here, *here.parents):
        if (folder / ".dvc").is_dir() or (folder / ".git").exists():
            return folder
    return here


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` if set, else the SQLite store `mlflow.db` in the main repository.

    A relative SQLite path is taken from the main repository too, so a stage that DVC runs in
    a temporary copy writes to the same store as the workspace."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    return resolve_uri(env) if env else f"sqlite:///{repo_root() / 'mlflow.db'}"


def resolve_uri(uri: str) -> str:
    """`uri` with a relative SQLite path taken from the main repository."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = uri[len("sqlite:///") :]
        if path and path != ":memory:":
            return f"sqlite:///{repo_root() / path}"
    return uri


def store_exists() -> bool:
    """False only for a local SQLite store whose file was never made (nothing tracked yet)."""
    uri = tracking_uri()
    return not uri.startswith("sqlite:///") or Path(uri[len("sqlite:///") :]).exists()


def connect():
    """The client of the current store (`tracking_uri()`), checked first (once per process)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    check_store(uri)
    # Per-file download bars from the report and the stages drown the output that matters.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    quiet_store_logs()  # MLflow's own tracebacks and migration chatter: errors are raised
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


# MLflow 3 opens an experiment in its GenAI view unless told it holds model training runs.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def experiment_id(name: str) -> str:
    """The experiment for data set `name`, created once with artifacts in the main repository
    (beside a local store, whatever folder or DVC temp copy the stage runs in)."""
    client = connect()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        store = Path(uri[len("sqlite:///") :]).resolve().parent
        artifacts = (store / "mlartifacts" / name).as_uri()
    else:
        artifacts = None  # a tracking server chooses its own artifact store
    try:
        return client.create_experiment(name, artifact_location=artifacts, tags=EXPERIMENT_TAGS)
    except Exception:  # created meanwhile by a parallel writer
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path.cwd()
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params -> {"vae.latent_dim": "16", ...} as MLflow params want."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)[:6000]
    return out


def _create_run(dataset: str, tags: dict[str, str], params: dict[str, Any]) -> str:
    """A new run in the data set's experiment with its (non-empty) tags and flattened params."""
    from mlflow.entities import Param

    client = connect()
    tags = {k: v for k, v in tags.items() if v}
    run = client.create_run(experiment_id(dataset), tags=tags)
    items = [Param(k, v) for k, v in flatten(params).items()]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
        client.log_batch(run.info.run_id, params=items[i : i + 100])
    return run.info.run_id


PARENT_ENV = "GENBENCH_BENCHMARK_RUN"  # set by `genbench benchmark` for its experiments
BENCHMARK_TAG = "genbench.benchmark"  # on a benchmark's parent run: its name
BENCHMARK_NAME_TAG = "genbench.benchmark_name"  # on its child runs: the same name
# Set by `genbench benchmark` while it holds the repository (`pipeline.lock`); every run made
# or reopened under it is tagged with it, so a stopped benchmark finds all it left RUNNING.
LOCK_ENV = "GENBENCH_LOCK"
LOCK_TAG = "genbench.lock"


def start_run(
    dataset: str,
    model: str,
    family: str,
    params: dict[str, Any],
    seed: int | None = None,
    extra_tags: dict[str, str] | None = None,
) -> str:
    """Create the run that the train, sample and evaluate stages of one model all log into;
    inside `genbench benchmark` it is a child of the benchmark's run."""
    exp_name = os.environ.get("DVC_EXP_NAME", "")
    parent = os.environ.get(PARENT_ENV, "")
    tags = {
        "model": model,
        "family": family,
        "dataset": dataset,
        "seed": "" if seed is None else str(seed),
        "dvc_exp_name": exp_name or "workspace",
        "dvc_baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", ""),
        "git_commit": git_commit() or "",
        "mlflow.runName": model if seed is None else f"{model}-s{seed}",
        "mlflow.parentRunId": parent,
        LOCK_TAG: os.environ.get(LOCK_ENV, ""),
        **(extra_tags or {}),
    }
    return _create_run(dataset, tags, params)


def close_stale(dataset: str, tags: dict[str, str], keep: str) -> list[str]:
    """Mark KILLED the RUNNING runs with these tags other than `keep`: attempts killed where
    nothing could resume them (a DVC temp copy deleted with its checkpoint)."""
    where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = search(dataset, f"{where} and attributes.status = 'RUNNING'", finished=False)
    stale = [r for r in (runs.run_id if not runs.empty else []) if r != keep]
    for run_id in stale:
        finish(run_id, "KILLED")
    return stale


def run_status(run_id: str) -> str | None:
    """RUNNING, FINISHED, FAILED, KILLED; None when the store has no such run."""
    from mlflow.exceptions import MlflowException

    client = connect()
    try:
        return client.get_run(run_id).info.status
    except MlflowException:
        return None


def run_exists(run_id: str) -> bool:
    return run_status(run_id) is not None


def reopen(run_id: str) -> None:
    """Mark an interrupted run RUNNING again: the next attempt continues it."""
    client = connect()
    client.update_run(run_id, status="RUNNING")
    if os.environ.get(LOCK_ENV):
        client.set_tag(run_id, LOCK_TAG, os.environ[LOCK_ENV])


def kill_running(dataset: str, token: str) -> int:
    """Mark KILLED every RUNNING run made or reopened under lock `token`: what a stopped
    benchmark and the stages of its experiments leave. Returns how many of its runs are
    KILLED now (also those a stage marked itself as it stopped)."""
    runs = search(dataset, f"tags.`{LOCK_TAG}` = '{token}'", finished=False)
    if runs.empty:
        return 0
    for run_id, status in zip(runs.run_id, runs.status, strict=True):
        if status == "RUNNING":
            finish(run_id, "KILLED")
    return int(runs.status.isin(["RUNNING", "KILLED"]).sum())


def last_steps(run_id: str) -> dict[str, int]:
    """The last step logged of each metric of a run (what a resumed attempt must not repeat)."""
    client = connect()
    keys = client.get_run(run_id).data.metrics
    return {k: max(m.step for m in client.get_metric_history(run_id, k)) for k in keys}


def log_metrics(run_id: str, metrics: dict[str, float | None], step: int = 0) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    rows = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
    if rows:
        connect().log_batch(run_id, metrics=rows)


def log_params(run_id: str, params: dict[str, Any]) -> None:
    """Params known only once the run has worked (a resumed attempt logs the same values)."""
    from mlflow.entities import Param

    connect().log_batch(run_id, params=[Param(k, v) for k, v in flatten(params).items()])


def log_artifact(run_id: str, path: Path, folder: str | None = None) -> None:
    """Copy `path` into the run's artifacts; a store that cannot take it (full, read-only) is
    one TrackingError naming where the artifacts go."""
    client = connect()
    try:
        client.log_artifact(run_id, str(path), folder)
    except OSError as exc:
        where = client.get_run(run_id).info.artifact_uri
        raise TrackingError(
            f"the MLflow artifact store {where} cannot take {path}: {exc.strerror or exc}"
        ) from None


def log_dataset(run_id: str, name: str, digest: str, source: str, profile: dict) -> None:
    """The data set a run trained on as an MLflow dataset input (the UI's Dataset column):
    its name, a digest of its prepared bytes, where it was read from and its split sizes."""
    import json

    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(
        name=name,
        digest=digest,
        source_type="local",
        source=json.dumps({"uri": source}),
        profile=json.dumps(profile),
    )
    context = InputTag("mlflow.data.context", "training")
    connect().log_inputs(run_id, datasets=[DatasetInput(dataset, tags=[context])])


def log_text(run_id: str, text: str, name: str) -> None:
    connect().log_text(run_id, text, name)


def set_tags(run_id: str, tags: dict[str, str]) -> None:
    client = connect()
    for k, v in tags.items():
        client.set_tag(run_id, k, v)


def finish(run_id: str, status: str = "FINISHED") -> None:
    connect().set_terminated(run_id, status=status)


FAILED_RERUN_TAG = "genbench.failed_rerun"  # on a FINISHED run: a later attempt that failed


@contextmanager
def failing(run_id: str, stage: str = "a stage") -> Iterator[None]:
    """Work logged into `run_id`: if it raises, the run is marked FAILED (KILLED on Ctrl-C)
    rather than left RUNNING, and the error goes on. A run FINISHED before the work began
    stays FINISHED with its end time (finished work is never demoted): the failed attempt is
    recorded in its tag `genbench.failed_rerun` instead ("evaluate FAILED at <time>: ...")."""
    from mlflow.exceptions import MlflowException

    try:
        info = connect().get_run(run_id).info
        ended = info.end_time if info.status == "FINISHED" else None
    except MlflowException:  # no such run: nothing to keep
        ended = None
    try:
        yield
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        with suppress(Exception):  # a store that is itself the problem must not hide the error
            if ended is None:
                finish(run_id, status)
            else:
                error = " ".join(f"{type(exc).__name__}: {exc}".split())[:400]
                when = time.strftime("%Y-%m-%d %H:%M:%S")
                set_tags(run_id, {FAILED_RERUN_TAG: f"{stage} {status} at {when}: {error}"})
                # MLflow's own start_run (log_model) may have ended it FAILED meanwhile.
                connect().set_terminated(run_id, "FINISHED", end_time=ended)
        raise


def start_benchmark(dataset: str, name: str, params: dict[str, Any]) -> str:
    """The parent run of one `genbench benchmark`: the MLflow UI shows it as one thing."""
    tags = {
        BENCHMARK_TAG: name,
        "host": socket.gethostname(),
        "dataset": dataset,
        "git_commit": git_commit() or "",
        "mlflow.runName": name,
        LOCK_TAG: os.environ.get(LOCK_ENV, ""),
    }
    return _create_run(dataset, tags, params)


def adopt(run_id: str, parent: str, name: str) -> None:
    """Make `run_id` a child of benchmark `parent` (also a run DVC's cache handed back
    unchanged) and tag it with the benchmark's name, which the parts run on other hosts share."""
    client = connect()
    tags = client.get_run(run_id).data.tags
    if tags.get("mlflow.parentRunId") != parent:
        client.set_tag(run_id, "mlflow.parentRunId", parent)
    if tags.get(BENCHMARK_NAME_TAG) != name:
        client.set_tag(run_id, BENCHMARK_NAME_TAG, name)


def search(dataset: str, filter_string: str = "", finished: bool = True):
    """Runs of data set `dataset` as a pandas DataFrame (newest first); empty if none."""
    import mlflow
    import pandas as pd

    connect()
    if mlflow.get_experiment_by_name(dataset) is None:
        return pd.DataFrame()
    filters = [
        f for f in (filter_string, "attributes.status = 'FINISHED'" if finished else "") if f
    ]
    return mlflow.search_runs(
        experiment_names=[dataset],
        filter_string=" and ".join(filters),
        order_by=["attributes.start_time DESC"],
    )


def benchmarks(dataset: str):
    """Benchmark parent runs of `dataset`, newest first."""
    return search(dataset, f"tags.`{BENCHMARK_TAG}` != ''", finished=False)


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in connect().get_metric_history(run_id, key)]


def run_tags(run_id: str) -> dict[str, str]:
    return dict(connect().get_run(run_id).data.tags)


def metric_keys(run_id: str) -> list[str]:
    return sorted(connect().get_run(run_id).data.metrics)


def download_artifact(run_id: str, path: str, dst: Path) -> Path | None:
    """Fetch one artifact of a run into `dst`; None when the run has no such artifact."""
    import mlflow

    connect()
    dst.mkdir(parents=True, exist_ok=True)
    try:
        return Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=path, dst_path=str(dst)
            )
        )
    except Exception:
        return None
