"""`genbench copy-runs`: every run of one experiment copied from one MLflow store into another
(a local SQLite store into a shared tracking server, say). With `pipeline.tracking`, the only
module that talks to MLflow."""

from __future__ import annotations

from pipeline import logged_models, tracking
from pipeline.errors import TrackingError
from pipeline.store_check import check_store

COPIED_TAG = "genbench.copied_from"  # on a copied run: its run id in the store it came from


def copy_experiment(source: str, experiment: str, echo=print) -> dict[str, str]:
    """Copy every run of `experiment` from the store at URI `source` into the current store
    (`tracking.tracking_uri()`, say a tracking server): params, tags, every metric's full history,
    dataset inputs, artifacts, the logged model, status and times; benchmark parents first, so
    children point at their parent's new id. Runs copied before (tagged with their source id)
    are skipped, so a second call copies only what is new. Returns source id -> new id."""
    import tempfile

    check_store(source)  # before MLflow's import: a dead store fails in seconds
    import mlflow
    import mlflow.pytorch
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    dst = tracking.connect()  # first: it also keeps MLflow's own logs off the terminal
    src = MlflowClient(source)
    exp = src.get_experiment_by_name(experiment)
    if exp is None:
        raise TrackingError(f"no experiment '{experiment}' in {source}")
    target = tracking.experiment_id(experiment)
    runs = src.search_runs([exp.experiment_id], max_results=50_000)
    runs = sorted(runs, key=lambda r: ("mlflow.parentRunId" in r.data.tags, r.info.start_time))
    done = {
        r.data.tags[COPIED_TAG]: r.info.run_id
        for r in dst.search_runs([target], f"tags.`{COPIED_TAG}` != ''", max_results=50_000)
    }
    for run in runs:
        old = run.info.run_id
        if old in done:
            continue
        tags = {k: v for k, v in run.data.tags.items() if k != "mlflow.parentRunId"}
        parent = done.get(run.data.tags.get("mlflow.parentRunId", ""))
        tags.update({COPIED_TAG: old, **({"mlflow.parentRunId": parent} if parent else {})})
        new = dst.create_run(target, start_time=run.info.start_time, tags=tags).info.run_id
        params = [Param(k, v) for k, v in run.data.params.items()]
        for i in range(0, len(params), 100):
            dst.log_batch(new, params=params[i : i + 100])
        history = [
            Metric(m.key, m.value, m.timestamp, m.step)
            for key in run.data.metrics
            for m in src.get_metric_history(old, key)
        ]
        for i in range(0, len(history), 1000):
            dst.log_batch(new, metrics=history[i : i + 1000])
        if run.inputs and run.inputs.dataset_inputs:
            dst.log_inputs(new, datasets=list(run.inputs.dataset_inputs))
        with tempfile.TemporaryDirectory() as tmp:
            if src.list_artifacts(old):
                dst.log_artifacts(new, src.download_artifacts(old, "", tmp))
        for logged in src.search_logged_models(
            [exp.experiment_id], filter_string=f"source_run_id = '{old}'"
        ):
            with tempfile.TemporaryDirectory() as tmp:
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=logged.artifact_location, dst_path=tmp, tracking_uri=source
                )
                model = mlflow.pytorch.load_model(local)
            logged_models.log_model(new, model, name=logged.name)
        dst.set_terminated(new, status=run.info.status, end_time=run.info.end_time)
        done[old] = new
        echo(f"copied {run.info.run_name or old} ({old[:8]} -> {new[:8]})")
    return done
