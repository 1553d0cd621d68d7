"""Trained models as MLflow models: logged at the end of a run so that any process with
genbench installed can `sample` from `runs:/<run_id>/model`, and loaded back by URI (genbench's
own or any compatible model) for `genbench score`."""

from __future__ import annotations

from typing import Any

from pipeline.errors import TrackingError
from pipeline.tracking import connect, store_exists, tracking_uri


def log_model(run_id: str, model: Any, name: str = "model") -> str:
    """The trained model as an MLflow model of run `run_id`, so that
    `mlflow.pytorch.load_model("runs:/<run_id>/model").sample(16)` works in a fresh process
    (with genbench installed: the model's classes come from it). Returns the model id."""
    import copy
    from importlib.metadata import version

    import mlflow
    import mlflow.pytorch

    status = connect().get_run(run_id).info.status  # FINISHED when a finished run is rescored
    requirements = [f"genbench=={version('genbench')}", f"torch=={version('torch')}"]
    with mlflow.start_run(run_id=run_id):  # the run goes on: its stage finishes it
        # Pickled, not the traced "pt2" format: a generative model is used through `sample`,
        # not through `forward` on an example input.
        info = mlflow.pytorch.log_model(
            copy.deepcopy(model).cpu().eval(),
            name=name,
            pip_requirements=requirements,
            serialization_format="pickle",
        )
    connect().update_run(run_id, status=status)  # leaving the block marked it FINISHED
    return info.model_id


def load_model(uri: str) -> Any:
    """The MLflow model at `uri` (`runs:/<run_id>/model`), as `mlflow.pytorch` loads it (a
    pickled model: its classes must be importable here, as genbench's are)."""
    if not store_exists():
        raise TrackingError(f"{uri}: no MLflow store at {tracking_uri()} to load it from")
    import mlflow.pytorch

    connect()
    try:
        return mlflow.pytorch.load_model(uri, map_location="cpu")
    except Exception as exc:
        text = " ".join(str(exc).split())[:160]
        raise TrackingError(
            f"{uri}: no MLflow model loads from it ({type(exc).__name__}: {text})"
        ) from None
