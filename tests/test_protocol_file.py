"""The protocol as a file: export, import, the classifier stage taking it, the shipped digits
protocol, and every way a file is refused (one `Error:` line, nothing written)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import ROOT, copy_project, genbench, set_params

from gen import evaluation as E
from gen import protocol_file as pfile
from gen.data import load_split
from gen.features import extract
from pipeline import protocol, provenance, stages
from pipeline.cli import main
from pipeline.params import load_params


def fails(*args: str) -> str:
    """Run a genbench command that must fail as bad input: one `Error:` line, exit status 2."""
    result = CliRunner().invoke(main, list(args))
    line = result.output.strip()
    assert result.exit_code == 2, result.output
    assert line.startswith("Error: ") and "\n" not in line, result.output
    return line


def fingerprint() -> dict[str, str]:
    p = load_params()
    return provenance.fingerprint(
        p.raw.get("data", {}), p.raw.get("eval", {}), stages.PREPARED, stages.CLASSIFIERS
    )


def ruler_hash() -> str:
    return provenance.classifier_hash(stages.CLASSIFIERS)


def export(path: Path) -> dict:
    return json.loads(genbench("protocol", "export", str(path)))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_export_then_import_measures_with_the_same_ruler_and_fingerprint(prepared: Path):
    before, ruler = fingerprint(), ruler_hash()
    out = export(prepared / "mine.pt")
    assert out["protocol"] == before["protocol"] and out["classifier"] == ruler
    assert out["sha256"] == sha256(prepared / "mine.pt")

    genbench("protocol", "import", "mine.pt")
    assert yaml.safe_load(Path("params.yaml").read_text())["classifier"]["protocol"] == (
        "protocols/mine.pt"
    )
    assert sha256(Path("protocols/mine.pt")) == out["sha256"]
    assert f"{out['sha256']}  mine.pt" in Path("protocols/SHA256SUMS").read_text()
    scores = json.loads(genbench("classifier"))
    assert scores["protocol_file"] == "protocols/mine.pt"
    assert scores["protocol_file_sha256"] == out["sha256"]
    assert 0 <= scores["classifier_test_accuracy"] <= 1
    assert 0 <= scores["domain_classifier_domain_accuracy"] <= 1
    assert ruler_hash() == ruler and fingerprint() == before


def test_the_files_features_give_the_same_figures_as_the_data_set(prepared: Path):
    """Samples scored against the file's reference features equal those scored against the
    prepared data with the ruler there (to 1e-6)."""
    out = export(prepared / "mine.pt")
    pf = protocol.load(prepared / "mine.pt")
    p = load_params()
    split, prot = load_split(stages.PREPARED), stages.eval_protocol(p)
    samples = split.val_x[: p.eval.n_samples]
    local = E.sample_quality(samples, split, prot, seed=0)
    a = extract(samples, split.meta.levels, "classifier", stages.CLASSIFIER, prot.batch_size)
    train, test = pf.features["train"], pf.features["test"]
    from_file = E.quality(a, test, train, train, prot.kid_subset_size, prot.n_boot, 0)
    assert set(from_file) == set(local) - {"feature_extractor"}
    for key, value in from_file.items():
        assert value == pytest.approx(local[key], abs=1e-6), key
    assert pf.fingerprint["protocol"] == out["protocol"]
    assert pf.meta.shape == split.meta.shape and pf.meta.levels == split.meta.levels


def test_importing_into_a_second_project_gives_the_first_ones_fingerprint(
    prepared_template: Path, tmp_path: Path, monkeypatch
):
    first = copy_project(prepared_template, tmp_path / "first")
    monkeypatch.chdir(first)
    shared = tmp_path / "shared.pt"
    export(shared)
    theirs = fingerprint()

    second = copy_project(prepared_template, tmp_path / "second")
    monkeypatch.chdir(second)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{second / 'mlflow.db'}")
    own = torch.load(stages.CLASSIFIER, weights_only=True)  # as another CPU would train it
    own["state_dict"]["head.2.bias"] += 1e-6
    torch.save(own, stages.CLASSIFIER)
    assert fingerprint()["protocol"] != theirs["protocol"]
    genbench("protocol", "import", str(shared))
    genbench("classifier")
    assert fingerprint() == theirs


def _other_data(source: Path, target: Path) -> dict[str, str]:
    """A valid protocol file made, as far as it says, from data.seed=1 (another split)."""
    pf = pfile.read(source)
    pf.info["data"] = {**pf.info["data"], "seed": 1}
    fp = pf.fingerprint
    pf.info["fingerprint"] = provenance.fingerprint_of(
        pf.info["data"], pf.info["eval"], "0123456789abcdef", fp["protocol.classifier"]
    )
    pfile.write(pf, target)
    return pf.info["fingerprint"]


def test_a_file_of_another_data_set_is_refused_naming_both_fingerprints(prepared: Path):
    export(prepared / "mine.pt")
    theirs = _other_data(prepared / "mine.pt", prepared / "other.pt")
    here = fingerprint()
    params, ruler = Path("params.yaml").read_text(), ruler_hash()

    line = fails("protocol", "import", "other.pt")
    assert "other.pt" in line and theirs["protocol"] in line
    assert "data.seed is 1 there, 0 here" in line and "split" in line
    assert Path("params.yaml").read_text() == params and not Path("protocols/other.pt").exists()

    # The classifier stage refuses it too, even pinned and named in params.
    (prepared / "protocols" / "other.pt").write_bytes((prepared / "other.pt").read_bytes())
    pins = Path("protocols/SHA256SUMS")
    pins.write_text(f"{sha256(Path('protocols/other.pt'))}  other.pt\n")
    set_params(prepared, classifier={"protocol": "protocols/other.pt"})
    line = fails("classifier")
    expected_here = provenance.fingerprint_of(
        load_params().raw["data"],
        load_params().raw["eval"],
        here["protocol.split"],
        theirs["protocol.classifier"],
    )
    assert theirs["protocol"] in line and expected_here["protocol"] in line, line
    assert "protocols/other.pt" in line and ruler_hash() == ruler


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _missing_test_split(path: Path) -> None:
    payload = torch.load(path, weights_only=True)
    del payload["features"]["test"]
    payload["content_hash"] = pfile.content_hash(payload)
    torch.save(payload, path)


def _edited_tensor(path: Path) -> None:
    payload = torch.load(path, weights_only=True)
    payload["features"]["test"]["features"][0, 0] += 1.0  # the stored hash is left as it was
    torch.save(payload, path)


def _not_a_protocol(path: Path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)


def _not_a_zip(path: Path) -> None:
    path.write_bytes(b"PK\x03\x04" + b"\0" * 64)  # a zip's magic, then nothing


@pytest.mark.parametrize(
    "damage, words",
    [
        (_truncated, "corrupt or not a genbench protocol file"),
        (_not_a_zip, "corrupt or not a genbench protocol file"),
        (_missing_test_split, "lacks 'features/test/features'"),
        (_edited_tensor, "content hash does not match"),
        (_not_a_protocol, "is not a genbench protocol file"),
    ],
    ids=["truncated", "not-a-zip", "missing-key", "content-hash", "another-format"],
)
def test_a_corrupt_file_is_refused_naming_it(prepared: Path, damage, words: str):
    export(prepared / "bad.pt")
    damage(prepared / "bad.pt")
    params = Path("params.yaml").read_text()
    line = fails("protocol", "import", "bad.pt")
    assert "bad.pt" in line and words in line, line
    assert Path("params.yaml").read_text() == params and not Path("protocols/bad.pt").exists()


def test_a_changed_or_unpinned_file_is_refused_by_the_classifier_stage(prepared: Path):
    export(prepared / "mine.pt")
    genbench("protocol", "import", "mine.pt")
    ruler = ruler_hash()
    pins = Path("protocols/SHA256SUMS")
    pins.write_text(pins.read_text().replace(sha256(Path("protocols/mine.pt")), "0" * 64))
    line = fails("classifier")
    assert "protocols/mine.pt" in line and "pins " + "0" * 64 in line, line
    set_params(prepared, classifier={"protocol": "mine.pt"})  # beside it: no SHA256SUMS
    line = fails("classifier")
    assert "'mine.pt' is not pinned" in line and "genbench protocol import mine.pt" in line
    assert ruler_hash() == ruler


def test_export_needs_the_prepared_data_and_its_ruler(project: Path, monkeypatch):
    monkeypatch.chdir(project)
    assert "genbench prepare" in fails("protocol", "export", "x.pt")
    assert not (project / "x.pt").exists()


def test_the_shipped_digits_protocol_is_pinned_small_and_fits_the_default_data(prepared: Path):
    shipped = ROOT / "protocols" / "digits.pt"
    defaults = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert defaults["classifier"]["protocol"] == "protocols/digits.pt"
    assert protocol.read_sums(ROOT / "protocols" / "SHA256SUMS")["digits.pt"] == sha256(shipped)
    assert shipped.stat().st_size < 5_000_000
    pf = protocol.load(shipped)
    assert json.loads(pf.fingerprint["protocol.data"]) == defaults["data"]
    assert set(pf.rulers) == {"classes", "domains"}

    # The tiny projects of the tests have the default data and split: the file fits them.
    assert provenance.split_hash(stages.PREPARED) == pf.fingerprint["protocol.split"]
    set_params(prepared, classifier={"protocol": "protocols/digits.pt"})
    scores = json.loads(genbench("classifier"))
    assert ruler_hash() == pf.fingerprint["protocol.classifier"]
    assert scores["classifier_test_accuracy"] > 0.9
    assert scores["protocol_file_sha256"] == sha256(shipped)


def test_the_params_line_is_edited_in_place_and_every_comment_stays():
    text = (ROOT / "params.yaml").read_text()
    edited = protocol.set_param_line(text, "classifier", "protocol", "protocols/other.pt")
    old, new = text.splitlines(), edited.splitlines()
    assert len(old) == len(new)
    changed = [(a, b) for a, b in zip(old, new, strict=True) if a != b]
    assert len(changed) == 1 and "protocols/other.pt" in changed[0][1]
    assert changed[0][0].split("#", 1)[1] == changed[0][1].split("#", 1)[1]  # its comment
    assert yaml.safe_load(edited)["classifier"]["protocol"] == "protocols/other.pt"
    with_null = protocol.set_param_line(text, "classifier", "protocol", "a b.pt")
    assert yaml.safe_load(with_null)["classifier"]["protocol"] == "a b.pt"
