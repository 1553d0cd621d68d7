"""`genbench score`: samples of any generator scored exactly as genbench's own samples are, and
logged as MLflow runs of an outside model (family `external`), one run per set of samples.

Each SAMPLES (a folder of images, an .npy/.npz array, or an MLflow model URI whose model has
`sample(n)`) is one seed of the outside model: set i is seed i. Images are brought to the
protocol's shape and levels by the rule in gen/outside_samples.py; a model's `sample` must
already return genbench's form (integer (n, C, H, W) in the data's levels) and gets a
generator seeded with i, in batches of eval.batch_size, as the `sample` stage does. Scoring is
`gen.evaluation.sample_quality`'s: the first eval.n_samples images, the same ruler, whitening,
test split, KID subsets and bootstrap (seed i). The protocol is this clone's (data/prepared,
runs/classifiers, params.yaml's eval) or, with `--protocol FILE`, that file's alone (its
ruler, reference features, data and eval params): no data set is needed.

Everything is read and scored before the first write, so bad input leaves the store as it was.
"""

from __future__ import annotations

import inspect
import re
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gen import evaluation as E
from gen.atomic import save_tensors
from gen.config import from_dict
from gen.data import DataConfig, DataMeta, Split, dataset_id, load_split
from gen.features import Features, extract
from gen.outside_samples import SampleError, read_samples
from gen.registry import MODELS
from gen.runtime import pick_device
from pipeline import logged_models, provenance, stages, tracking
from pipeline.params import EvalSettings, Params, TrainSettings
from pipeline.report.collection import DATA, EXTERNAL, benchmark_parents
from pipeline.user_errors import UserError

NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")  # safe in MLflow filters and file names
URI = re.compile(r"[a-z][a-z0-9+.-]*:/")  # runs:/<id>/model, models:/<name>/<version>, ...


@dataclass
class Ruler:
    """Where the samples are measured: the protocol, its fingerprint and its reference."""

    dataset: str  # the MLflow experiment (data set id)
    meta: DataMeta  # the images' shape and levels
    protocol: E.Protocol
    fingerprint: dict[str, str]
    split: Split | None  # this clone's prepared data; None with a protocol file
    reference: tuple[Features, Features] | None  # (test, train) features of a protocol file
    source: str  # what the protocol came from, for the runs' params


def score(
    p: Params | None,
    sources: list[str],
    name: str,
    protocol_file: Path | None = None,
    benchmark: str | None = None,
    resize: bool = False,
) -> dict[str, Any]:
    """Score every set of samples in `sources` (set i = seed i) and log one run each. `p` (the
    clone's params) may be None with a protocol file: the `train` defaults then run it."""
    if not NAME.fullmatch(name) or name in MODELS or name == DATA:
        raise UserError(
            f"--name={name!r} is not allowed: use 1-100 letters, digits, '.', '_' or '-', "
            "and not a built-in model's name or 'data'"
        )
    train = p.train if p is not None else TrainSettings()
    torch.set_num_threads(train.threads)
    device = pick_device(train.device)
    with ExitStack() as stack:
        ruler = _from_file(protocol_file, stack) if protocol_file else _from_clone(p)
        n = ruler.protocol.n_samples
        images = [_images(src, ruler, n, resize, i, device) for i, src in enumerate(sources)]
        parent = _parent(ruler, benchmark) if benchmark else None
        figures = [_figures(x, ruler, i, device) for i, x in enumerate(images)]
        runs = [
            _log(ruler, name, i, src, x, out, parent, resize)
            for i, (src, x, out) in enumerate(zip(sources, images, figures, strict=True))
        ]
    return {"name": name, "protocol": ruler.fingerprint["protocol"], "runs": runs}


def _from_clone(p: Params) -> Ruler:
    split = load_split(stages.PREPARED)
    if not stages.CLASSIFIER.exists():
        raise UserError(f"no ruler at {stages.CLASSIFIER}: run `genbench classifier` first")
    protocol = stages.eval_protocol(p)
    fp = stages.fingerprint(p, protocol)
    source = f"{stages.PREPARED} + {stages.CLASSIFIERS}"
    return Ruler(dataset_id(p.data), split.meta, protocol, fp, split, None, source)


def _from_file(path: Path, stack: ExitStack) -> Ruler:
    """The protocol of file `path`: its rulers are written to a temporary folder, so that
    features come from the one extractor code path."""
    from pipeline import protocol

    pf = protocol.load(path)
    e = from_dict(EvalSettings, "eval", pf.info["eval"])
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="genbench-ruler-")))
    for space, ckpt in pf.rulers.items():
        save_tensors(ckpt, folder / f"{space}.pt")  # a full disk: one line naming the file
    prot = E.Protocol(
        extractor=pf.info["extractor"],
        classifier=folder / "classes.pt",
        feature_weights=e.weights(),
        n_samples=e.n_samples,
        iwae_k=e.iwae_k,
        batch_size=e.batch_size,
        kid_subset_size=e.kid_subset_size,
        n_boot=e.n_boot,
        reference_draws=e.reference_draws,
    )
    theirs = pf.fingerprint
    fp = provenance.fingerprint_of(
        pf.info["data"],
        pf.info["eval"],
        theirs["protocol.split"],
        theirs["protocol.classifier"],
        theirs.get("protocol.feature_weights", "none"),
    )
    data = from_dict(DataConfig, "data", pf.info["data"])
    reference = (pf.features["test"], pf.features["train"])
    return Ruler(dataset_id(data), pf.meta, prot, fp, None, reference, str(path))


def _images(
    source: str, ruler: Ruler, n: int, resize: bool, seed: int, device: torch.device
) -> torch.Tensor:
    if URI.match(source):
        return _sample_model(source, ruler, n, seed, device)
    return read_samples(Path(source), ruler.meta, n, resize)


def _sample_model(uri: str, ruler: Ruler, n: int, seed: int, device: torch.device) -> torch.Tensor:
    """`n` samples of the MLflow model at `uri`, drawn as the `sample` stage draws them."""
    model = logged_models.load_model(uri)
    sample = getattr(model, "sample", None)
    if not callable(sample):
        raise SampleError(f"{uri}: the model ({type(model).__name__}) has no sample(n)")
    kind = getattr(getattr(model, "condition", None), "name", None)
    if kind is not None:
        raise SampleError(f"{uri}: the model is conditioned on {kind}; score takes unconditional")
    if isinstance(model, torch.nn.Module):
        model = model.to(device).eval()
    takes_generator = len(inspect.signature(sample).parameters) >= 2
    g = torch.Generator().manual_seed(seed)
    bs, chunks = ruler.protocol.batch_size, []
    try:
        with torch.no_grad():
            for i in range(0, n, bs):
                k = min(bs, n - i)
                chunks.append(torch.as_tensor(sample(k, g) if takes_generator else sample(k)))
    except Exception as exc:
        raise SampleError(
            f"{uri}: sample({min(bs, n)}) failed ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:100]})"
        ) from None
    x = torch.cat([c.cpu() for c in chunks])
    m = ruler.meta
    want = (n, m.channels, m.height, m.width)
    if tuple(x.shape) != want or x.dtype.is_floating_point or x.dtype == torch.bool:
        raise SampleError(
            f"{uri}: sample(n) returned {x.dtype} of shape {tuple(x.shape)}; the protocol needs "
            f"integers of shape (n, {m.channels}, {m.height}, {m.width}) in 0..{m.levels - 1}"
        )
    if int(x.min()) < 0 or int(x.max()) > m.levels - 1:
        raise SampleError(
            f"{uri}: sample(n) returned values in [{int(x.min())}, {int(x.max())}]; the "
            f"protocol's levels are 0..{m.levels - 1}"
        )
    return x.to(torch.uint8)


def _parent(ruler: Ruler, benchmark: str) -> tuple[str, str]:
    """(run id, name) of the newest part of benchmark `benchmark`, whose protocol must be
    the one these samples are scored with."""
    if not tracking.store_exists():
        raise UserError(
            f"--benchmark={benchmark}: no MLflow store at {tracking.tracking_uri()} yet"
        )
    parents = benchmark_parents(ruler.dataset, benchmark)
    tags = {str(t) for t in parents.get("tags.protocol", []) if isinstance(t, str) and t}
    ours = ruler.fingerprint["protocol"]
    if tags and ours not in tags:
        raise UserError(
            f"benchmark '{benchmark}' measures with protocol {', '.join(sorted(tags))}; these "
            f"samples would be scored with protocol {ours} ({ruler.source}): score with the "
            "benchmark's protocol file (`genbench protocol export` on its host, then --protocol)"
        )
    newest = parents.iloc[0]
    return str(newest.run_id), str(newest[f"tags.{tracking.BENCHMARK_TAG}"])


def _figures(x: torch.Tensor, ruler: Ruler, seed: int, device: torch.device) -> dict[str, Any]:
    """`sample_quality` of the samples, against this clone's data or the file's features."""
    prot = ruler.protocol
    if ruler.split is not None:
        return E.sample_quality(x, ruler.split, prot, seed, device)
    test, train = ruler.reference
    weights = prot.weights("classes")
    a = extract(x, ruler.meta.levels, prot.extractor, weights, prot.batch_size, device)
    out: dict[str, Any] = E.quality(a, test, train, train, prot.kid_subset_size, prot.n_boot, seed)
    out["feature_extractor"] = prot.space_name("classes")
    return out


def _log(
    ruler: Ruler,
    name: str,
    seed: int,
    source: str,
    images: torch.Tensor,
    out: dict[str, Any],
    parent: tuple[str, str] | None,
    resize: bool,
) -> dict[str, Any]:
    """One finished run of the outside model `name`: figures, tags, a grid of its samples."""
    from gen.plots import save_grid

    params = {"samples": source, "n_samples": len(images), "resize": resize}
    params["protocol_source"] = ruler.source
    tags = {"samples": source[:5000]}
    if parent is not None:
        tags.update({"mlflow.parentRunId": parent[0], tracking.BENCHMARK_NAME_TAG: parent[1]})
    run_id = tracking.start_run(ruler.dataset, name, EXTERNAL, params, seed, tags)
    with tracking.failing(run_id), tempfile.TemporaryDirectory() as tmp:
        numbers = {k: v for k, v in out.items() if isinstance(v, float)}
        tracking.log_metrics(run_id, numbers)
        tracking.set_tags(
            run_id,
            {"feature_extractor": out["feature_extractor"], "bpd_kind": "n/a", **ruler.fingerprint},
        )
        grid = save_grid(images[:100], ruler.meta.levels, Path(tmp) / "samples.png")
        tracking.log_artifact(run_id, grid, "samples")
        tracking.finish(run_id, "FINISHED")
    return {"seed": seed, "samples": source, "run_id": run_id, **numbers}
