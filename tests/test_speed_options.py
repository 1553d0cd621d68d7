"""The opt-in speed options `train.compile` and `train.channels_last`: the same training, only
faster, and one-line errors where they cannot run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_models import METAS, TINY, images, labels_for, make

import gen.trainer as trainer
from gen.config import ConfigError
from gen.trainer import train
from pipeline.cli import main
from pipeline.params import TrainSettings

STEPPED = [n for n in TINY if n != "baseline"]  # baseline is fitted by counting


def trained(name: str, config: dict | None = None, **options) -> tuple[torch.nn.Module, list[dict]]:
    """The model (TINY's, updated by `config`) after 3 steps of `train(**options)`, and its loss
    terms logged at every step."""
    meta = METAS["17-levels"]
    torch.manual_seed(0)
    model = make(name, meta, steps=3, **(config or {}))
    x, y = images(meta, 32), labels_for(model, 32)
    result = train(model, x, y, log_every=1, progress=False, **options)
    assert all(math.isfinite(v) for row in result.history for v in row.values())
    return model, result.history


def same_losses(a: list[dict], b: list[dict], rel: float = 1e-4) -> bool:
    """Every logged term equal up to float rounding. A different algorithm or noise draw moves
    them by percents; Adam can amplify rounding in near-zero gradients into weight differences
    of lr's size, so weights are not compared."""
    return [r.keys() for r in a] == [r.keys() for r in b] and all(
        abs(x[k] - y[k]) <= rel * max(abs(x[k]), 1e-3) for x, y in zip(a, b, strict=True) for k in x
    )


@pytest.mark.parametrize("name", STEPPED)
def test_channels_last_trains_every_model_with_the_losses_of_the_default_layout(name):
    _, plain = trained(name)
    model, nhwc = trained(name, channels_last=True)
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert same_losses(plain, nhwc)


def test_channels_last_runs_are_bit_identical_from_the_same_seed():
    a, _ = trained("dcgan", channels_last=True)
    b, _ = trained("dcgan", channels_last=True)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert torch.equal(
        a.sample(4, torch.Generator().manual_seed(1)), b.sample(4, torch.Generator().manual_seed(1))
    )


@pytest.mark.slow
@pytest.mark.parametrize("fakes", ["fresh", "shared"])
def test_compiled_loss_trains_dcgan_with_the_eager_losses_and_noise(fakes):
    torch._dynamo.reset()
    _, plain = trained("dcgan", {"fakes": fakes})
    # One compile thread: on two cores, starting inductor's pool of compile workers costs more
    # than it saves (about a quarter of this test's time, measured in interleaved pairs).
    with torch._inductor.config.patch(compile_threads=1):
        model, compiled = trained("dcgan", {"fakes": fakes}, compile=True)
    # Compiled kernels fuse and round differently; inductor's own RNG (fallback_random off)
    # would draw other noise and move the losses by far more.
    assert same_losses(plain, compiled)
    assert model._shared is None


def test_compile_without_a_cpu_compiler_is_one_clear_error(monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(trainer.shutil, "which", lambda _: None)
    with pytest.raises(ConfigError, match="train.compile=true on the CPU needs a C\\+\\+ compiler"):
        trained("dcgan", compile=True)


def test_compile_with_several_processes_is_refused_when_params_are_read():
    with pytest.raises(ConfigError, match="train.compile=true is not supported with train.nproc=2"):
        TrainSettings(device="cpu", nproc=2, compile=True).validate()


def test_throughput_takes_the_options_and_says_which_it_used():
    params = str(Path(__file__).parents[1] / "params.yaml")
    args = ["throughput", "--params", params, "--models", "dcgan", "--steps", "2", "--samples", "2"]
    result = CliRunner().invoke(main, [*args, "--channels-last"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1].endswith("channels_last")
    result = CliRunner().invoke(main, args)
    assert "channels_last" not in result.output


class Killed(Exception):
    pass


@pytest.mark.slow
def test_a_compiled_run_killed_midway_resumes_bit_identically(tmp_path):
    meta = METAS["17-levels"]
    x = images(meta, 32)

    def run(steps: int, **options) -> torch.nn.Module:
        torch.manual_seed(0)
        model = make("dcgan", meta, steps=steps)
        train(model, x, log_every=1, progress=False, compile=True, **options)
        return model

    whole = run(6)

    def kill_at_4(step: int, _row: dict) -> None:
        if step == 4:
            raise Killed

    path = tmp_path / "wip.pt"
    with pytest.raises(Killed):
        run(6, checkpoint=path, checkpoint_every=3, callback=kill_at_4)
    resumed = run(6, checkpoint=path, checkpoint_every=3)  # noise of steps 4-6 from the checkpoint
    assert all(torch.equal(whole.state_dict()[k], v) for k, v in resumed.state_dict().items())
