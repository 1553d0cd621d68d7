"""The training loop: logging, atomic checkpoints, exact resume, and checkpoint errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gen.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from gen.data import DataMeta
from gen.models.base import GenerativeModel, ModelConfig
from gen.registry import build
from gen.trainer import train

META = DataMeta("tiny", 1, 8, 8, levels=17, n_classes=10)
PIXELCNN = {"channels": 8, "layers": 1, "first_kernel": 3, "batch_size": 16}


def data(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, META.levels, (n, *META.shape), generator=g, dtype=torch.uint8)


def pixelcnn(steps: int) -> GenerativeModel:
    torch.manual_seed(123)
    return build("pixelcnn", {**PIXELCNN, "steps": steps}, META)


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class Killed(Exception):
    """Stands in for the process being killed mid-run."""


def kill_at(step: int):
    def callback(s: int, row: dict[str, float]) -> None:
        if s == step:
            raise Killed

    return callback


# ------------------------------------------------------------------------------ the loop
def test_train_logs_every_n_steps_and_the_last_step_through_the_callback():
    model = pixelcnn(steps=7)
    rows: list[tuple[int, dict[str, float]]] = []
    result = train(
        model, data(32), log_every=3, progress=False, callback=lambda s, r: rows.append((s, r))
    )
    assert [s for s, _ in rows] == [3, 6, 7]
    assert set(rows[0][1]) == {"model/loss", "model/bpd"}
    assert [h["step"] for h in result.history] == [3, 6, 7]
    assert result.steps == 7
    assert result.images_seen == 7 * 16
    assert result.seconds > 0 and result.images_per_s > 0
    assert not model.training, "the trainer leaves the model in eval mode"


def test_same_seed_gives_bit_identical_training():
    a, b = pixelcnn(steps=5), pixelcnn(steps=5)
    train(a, data(32), seed=3, progress=False)
    train(b, data(32), seed=3, progress=False)
    assert same_state(a, b)


class NaNModel(GenerativeModel):
    name = "nan"

    def __init__(self) -> None:
        super().__init__(ModelConfig(steps=3, batch_size=4), META)
        self.w = torch.nn.Parameter(torch.ones(1))

    def loss(self, x: torch.Tensor, phase: str, y=None) -> dict[str, torch.Tensor]:
        return {"loss": self.w * float("nan")}


def test_a_non_finite_loss_stops_training_naming_phase_and_steps():
    # Checked where the losses are read back (here the last step), not after every step.
    with pytest.raises(FloatingPointError, match="phase 'model' became nan between steps 1 and 3"):
        train(NaNModel(), data(8), progress=False)


# ------------------------------------------------------------------------------ checkpoints
def test_checkpoints_are_written_atomically_and_leave_no_temp_file(tmp_path):
    path = tmp_path / "ckpt" / "model.pt"
    train(pixelcnn(steps=6), data(32), checkpoint=path, checkpoint_every=2, progress=False)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]
    ckpt = load_checkpoint(path)
    assert ckpt["step"] == 6
    assert {"name", "config", "meta", "state_dict", "optimisers", "seed"} <= set(ckpt)
    assert model_from_checkpoint(ckpt).name == "pixelcnn"


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    good = {"name": "pixelcnn", "config": {}, "meta": META.__dict__, "state_dict": {}}
    save_checkpoint(path, good)

    def crash(payload, target, *args, **kwargs):
        Path(target).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {**good, "name": "vae"})
    monkeypatch.undo()
    assert load_checkpoint(path)["name"] == "pixelcnn"


def test_training_resumes_after_a_kill_at_an_epoch_boundary_bit_identically(tmp_path):
    x = data(80)  # batch 16: 5 batches per epoch; checkpoint at step 10 = end of epoch 2
    path = tmp_path / "model.pt"
    with pytest.raises(Killed):
        train(
            pixelcnn(steps=20),
            x,
            checkpoint=path,
            checkpoint_every=10,
            log_every=5,
            callback=kill_at(15),
            progress=False,
        )
    assert load_checkpoint(path)["step"] == 10

    logged: list[int] = []
    resumed = pixelcnn(steps=20)
    result = train(
        resumed,
        x,
        checkpoint=path,
        checkpoint_every=10,
        log_every=5,
        callback=lambda s, r: logged.append(s),
        progress=False,
    )
    assert logged == [15, 20], "resumed runs start after the checkpoint's step"
    assert [h["step"] for h in result.history] == [5, 10, 15, 20], "history continues"
    assert result.images_seen == 20 * 16

    straight = pixelcnn(steps=20)
    train(straight, x, log_every=5, progress=False)
    assert same_state(resumed, straight)


def test_training_resumes_after_a_kill_mid_epoch_bit_identically(tmp_path):
    x = data(80)  # 5 batches per epoch; checkpoint at step 8 is mid-epoch
    path = tmp_path / "model.pt"
    with pytest.raises(Killed):
        train(
            pixelcnn(steps=20),
            x,
            checkpoint=path,
            checkpoint_every=8,
            log_every=5,
            callback=kill_at(10),
            progress=False,
        )
    assert load_checkpoint(path)["step"] == 8

    resumed = pixelcnn(steps=20)
    result = train(resumed, x, checkpoint=path, checkpoint_every=8, log_every=5, progress=False)
    assert result.steps == 20
    straight = pixelcnn(steps=20)
    train(straight, x, log_every=5, progress=False)
    assert same_state(resumed, straight)


def test_raising_steps_continues_from_the_checkpoint(tmp_path):
    x = data(80)  # 20 steps = 4 whole epochs, so the data order cannot differ either
    path = tmp_path / "model.pt"
    first = train(pixelcnn(steps=20), x, checkpoint=path, log_every=5, progress=False)
    assert first.steps == 20

    logged: list[int] = []
    continued = pixelcnn(steps=40)
    result = train(
        continued,
        x,
        checkpoint=path,
        log_every=5,
        callback=lambda s, r: logged.append(s),
        progress=False,
    )
    assert logged[0] == 25, "training continues at step 20"
    assert [h["step"] for h in result.history] == list(range(5, 45, 5))

    straight = pixelcnn(steps=40)
    train(straight, x, log_every=5, progress=False)
    assert same_state(continued, straight)


def test_a_checkpoint_of_another_seed_is_not_resumed(tmp_path):
    path = tmp_path / "model.pt"
    train(pixelcnn(steps=5), data(32), seed=0, checkpoint=path, progress=False)
    logged: list[int] = []
    train(
        pixelcnn(steps=5),
        data(32),
        seed=1,
        checkpoint=path,
        log_every=1,
        callback=lambda s, r: logged.append(s),
        progress=False,
    )
    assert logged == [1, 2, 3, 4, 5]
    assert load_checkpoint(path)["seed"] == 1


def test_missing_checkpoint_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_corrupt_checkpoint_is_a_one_line_checkpoint_error(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"\x00garbage\xff" * 100)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value) and "corrupt" in str(info.value)


def test_checkpoint_without_model_fields_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="lacks config, meta, name"):
        load_checkpoint(path)
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="lacks"):
        load_checkpoint(path)


def steps_logged(model, path, **kwargs) -> list[int]:
    logged: list[int] = []
    train(
        model,
        data(32),
        checkpoint=path,
        log_every=1,
        progress=False,
        **kwargs,
        callback=lambda s, r: logged.append(s),
    )
    return logged


def test_a_checkpoint_trained_by_other_code_is_not_resumed(tmp_path):
    """An edited loss with unchanged params is another model: it trains from scratch."""
    path = tmp_path / "model.pt"
    train(
        pixelcnn(steps=4),
        data(32),
        checkpoint=path,
        progress=False,
        provenance={"code": "old", "data": "d1"},
    )
    assert steps_logged(pixelcnn(steps=6), path, provenance={"code": "old", "data": "d1"}) == [5, 6]
    fresh = steps_logged(pixelcnn(steps=6), path, provenance={"code": "new", "data": "d1"})
    assert fresh == [1, 2, 3, 4, 5, 6]
    assert load_checkpoint(path)["code"] == "new"
    other_data = steps_logged(pixelcnn(steps=6), path, provenance={"code": "new", "data": "d2"})
    assert other_data == [1, 2, 3, 4, 5, 6]


def test_lowering_steps_below_a_checkpoint_trains_again_rather_than_hand_it_back(tmp_path):
    path = tmp_path / "model.pt"
    train(pixelcnn(steps=8), data(32), checkpoint=path, progress=False)
    short = pixelcnn(steps=3)
    assert steps_logged(short, path) == [1, 2, 3]
    straight = pixelcnn(steps=3)
    train(straight, data(32), progress=False)
    assert same_state(short, straight)


def test_validation_runs_every_val_every_steps_in_eval_mode():
    model = pixelcnn(steps=6)
    modes: list[bool] = []

    def validate() -> dict[str, float]:
        modes.append(model.training)
        return {"val/bpd": 1.0}

    result = train(model, data(32), validate=validate, val_every=3, log_every=10, progress=False)
    assert [h["step"] for h in result.history if "val/bpd" in h] == [3, 6]
    assert modes == [False, False] and model.training is False


def test_generator_steps_do_not_count_as_images_consumed():
    gan = build("dcgan", {"steps": 3, "batch_size": 8, "g_channels": 8, "d_channels": 8}, META)
    result = train(gan, data(32), progress=False)
    assert result.images_seen == 3 * 8  # one D batch per step; G reads no images
    counted = build("baseline", {}, META)
    assert train(counted, data(32), progress=False).images_per_s is None
