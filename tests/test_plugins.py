"""Models from other packages (entry points `genbench.models`): the example package installed
with pip runs through the pipeline and a benchmark like a built-in model, and a broken plug-in
is one `Error:` line naming its package and entry point while the built-in models still work.

Nothing is installed into the test environment itself: pip installs the example into a
temporary folder that the subprocesses get on PYTHONPATH and this process on sys.path; the
broken plug-ins are distributions written by hand (a dist-info folder with entry_points.txt).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import ROOT, gen, query, run, set_params

from gen import registry
from gen.config import ConfigError
from gen.models.pixelcnn import PixelCNN
from gen.trainer import train
from pipeline.cli import main

EXAMPLE = ROOT / "examples" / "genbench-example-model"
NAME = "pixel_mixture"  # the example's entry point


@pytest.fixture(scope="module")
def example_site(tmp_path_factory) -> Path:
    """The example package installed by pip into a folder of its own (built from a copy, so
    the build leaves nothing in the source tree)."""
    tmp = tmp_path_factory.mktemp("example")
    source = shutil.copytree(
        EXAMPLE, tmp / "src", ignore=shutil.ignore_patterns("build", "*.egg-info")
    )
    site = tmp / "site"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*cmd, "--target", str(site), str(source)], check=True, capture_output=True)
    return site


@pytest.fixture
def on_path(monkeypatch) -> Iterator:
    """`add(folder)`: its distributions become visible to this process's registry; the
    registry looks again once the test is over and sys.path is restored."""

    def add(folder: Path) -> None:
        monkeypatch.syspath_prepend(str(folder))
        registry.refresh_plugins()

    yield add
    registry.refresh_plugins()


def write_distribution(
    folder: Path, package: str, entry_points: dict[str, str], modules: dict[str, str]
) -> Path:
    """An installed distribution as importlib.metadata reads one: `<name>-<version>.dist-info`
    with METADATA and entry_points.txt, beside its modules."""
    info = folder / f"{package.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[genbench.models]\n{lines}")
    for module, text in modules.items():
        (folder / f"{module}.py").write_text(text)
    return folder


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    return lines[0]


# ------------------------------------------------------------------ the example, in-process
def test_the_example_is_listed_with_its_family_capabilities_and_package(example_site, on_path):
    on_path(example_site)
    code, out, err = invoke("models")
    assert code == 0 and err == ""
    line = next(ln for ln in out.splitlines() if ln.startswith(NAME))
    assert line.split()[1:] == [
        "latent-variable",
        "none",
        "likelihood=exact",
        "genbench-example-model",
        "0.1.0",
    ]
    assert sum(ln.split()[-1] == "built-in" for ln in out.splitlines()) == len(registry.MODELS)
    code, out, _ = invoke("models", NAME)
    assert code == 0 and f"\n{NAME}:\n  steps: 500\n" in out and "  components: 10\n" in out


def test_the_example_section_is_validated_like_a_built_in_one(
    example_site, on_path, project, monkeypatch
):
    on_path(example_site)
    monkeypatch.chdir(project)
    for section, message in [
        ({"bogus": 1}, f"unknown key 'bogus' in params section '{NAME}'"),
        ({"components": 0}, f"{NAME}.components=0 must be > 0"),
        ({"lr": 2}, f"{NAME}.lr=2.0 must be <= 1 (Adam's step size)"),  # ModelConfig's rule
    ]:
        params = yaml.safe_load((project / "params.yaml").read_text())
        params.update({"model": NAME, NAME: section})
        (project / "params.yaml").write_text(yaml.safe_dump(params))
        code, _, err = invoke("train")
        assert code == 2 and message in one_error_line(err)
    # DVC's train stage depends on the model's section: a benchmark without it never starts.
    del params[NAME]
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    code, _, err = invoke("benchmark", "--models", f"baseline,{NAME}", "--seeds", "0")
    assert code == 2 and f"params.yaml has no '{NAME}' section" in one_error_line(err)
    assert f"`genbench models {NAME} >> params.yaml`" in err
    assert not (project / "mlflow.db").exists()  # nothing started


def test_the_example_model_trains_samples_and_has_an_exact_likelihood(
    example_site, on_path, digits
):
    on_path(example_site)
    torch.manual_seed(0)
    model = registry.build(NAME, {"steps": 10, "components": 3}, digits.meta)
    before = -model.log_prob(digits.test_x).mean().item()
    train(model, digits.train_x, options=None, progress=False, log_every=10)
    after = -model.log_prob(digits.test_x).mean().item()
    assert after < before  # the test split's nats per image fell
    a, b = model.sample(16, gen(1)), model.sample(16, gen(1))
    assert a.dtype == torch.uint8 and a.shape == (16, *digits.meta.shape)
    assert int(a.max()) < digits.meta.levels and torch.equal(a, b)


# ------------------------------------------------------------------------ broken plug-ins
NOT_IMPORTABLE = "import genbench_no_such_module\n"
NOT_A_MODEL = "class Thing:\n    pass\n"
MISNAMED = (
    "from gen.models.baseline import Baseline\n\n\nclass Thing(Baseline):\n    name = 'baseline'\n"
)
BROKEN = {  # entry point name, the module it loads, what its error line says
    "import error": ("broken_a", NOT_IMPORTABLE, "ModuleNotFoundError"),
    "not a model": ("broken_b", NOT_A_MODEL, "is not a subclass of gen.models.base.Generative"),
    "name clash": ("pixelcnn", NOT_A_MODEL, "'pixelcnn' is a built-in model"),
    "misnamed class": ("broken_c", MISNAMED, ".name is 'baseline'; set it to 'broken_c'"),
    "a params section": ("train", NOT_A_MODEL, "'train' is a section of params.yaml"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_plug_in_is_one_error_line_naming_package_and_entry_point(case, tmp_path, on_path):
    name, text, says = BROKEN[case]
    module = f"plugin_{name}_{abs(hash(case))}"  # a module name no other test imports
    on_path(write_distribution(tmp_path, "broken-pkg", {name: f"{module}:Thing"}, {module: text}))

    code, out, err = invoke("models")
    line = one_error_line(err)
    assert code == 2 and says in line
    assert "package broken-pkg 0.1" in line and f"entry point '{name} = {module}:Thing'" in line
    assert out.splitlines()[1].startswith("baseline") and "pixelcnn " in out  # still listed

    code, _, err = invoke("models", name)  # naming it: the same line
    if name == "pixelcnn":  # the built-in keeps its name
        assert code == 0 and registry.model_class("pixelcnn") is PixelCNN
    else:
        assert code == 2 and one_error_line(err) == line


def test_two_packages_declaring_one_name_are_both_refused(tmp_path, on_path):
    for package in ("one-pkg", "two-pkg"):
        target = "gen.models.baseline:Baseline"
        on_path(write_distribution(tmp_path / package, package, {"twin": target}, {}))
    with pytest.raises(ConfigError, match=r"packages \S+ 0\.1 and \S+ 0\.1 both declare 'twin'"):
        registry.model_class("twin")


def test_with_broken_plug_ins_installed_the_built_in_models_train_and_sample(
    tmp_path, on_path, monkeypatch
):
    entry_points = {name: f"plugin_all_broken:{name}" for name, _, _ in BROKEN.values()}
    on_path(write_distribution(tmp_path, "broken-pkg", entry_points, {"plugin_all_broken": ""}))
    assert len(registry.plugin_errors()) == len(BROKEN)  # found, each with its error
    monkeypatch.chdir(ROOT)  # reads params.yaml only
    code, out, err = invoke("throughput", "--models", "baseline,pixelcnn", "--steps", "1")
    assert code == 0 and err == "", out + err
    assert out.splitlines()[1].startswith("baseline") and out.splitlines()[2].startswith("pixelcnn")


# ------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_the_example_runs_through_dvc_and_a_two_model_benchmark(example_site, on_path, reproduced):
    """The user's path: add its section as `genbench models NAME` prints it, then the
    benchmark's `dvc exp run -S model=...` trains, samples and evaluates it beside a built-in
    model; its runs record the plug-in's package and version."""
    project = reproduced
    on_path(example_site)
    code, section, _ = invoke("models", NAME)
    assert code == 0
    with (project / "params.yaml").open("a") as params:
        params.write(section)
    set_params(project, model=NAME, **{NAME: {"steps": 20}})
    run(["git", "commit", "-qam", "the example plug-in"], project)

    env = {"PYTHONPATH": os.pathsep.join([str(example_site), os.environ.get("PYTHONPATH", "")])}
    cmd = ["genbench", "benchmark", "--models", f"baseline,{NAME}", "--seeds", "0", "--jobs", "2"]
    run(cmd, project, **env)

    md = (project / "reports" / "benchmark.md").read_text()
    assert "| baseline | 1 |" in md and f"| {NAME} | 1 |" in md
    metrics = json.loads((project / "metrics.json").read_text())  # the applied experiment
    assert metrics["model"] == NAME and metrics["bpd"] > 0 and metrics["fid"] >= 0
    tags = query(
        project,
        "select t.key, t.value from tags t join tags m on m.run_uuid = t.run_uuid "
        "where m.key = 'model' and m.value = ? and t.key like 'plugin%'",
        NAME,
    )
    assert dict(tags)["plugin"] == "genbench-example-model==0.1.0" and "plugin_code" in dict(tags)
