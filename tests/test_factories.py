"""Any model and any data: a run names a registered network and data set, and trains, caches, resumes, loads
and is judged like this study's MLP on Fashion-MNIST, whose runs keep their keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from t_models import STRIPES, TINY_CNN
from torch import nn

from tdlib.dropout import TargetedDropout, TargetedUnitDropout
from tdlib.executors import train_all
from tdlib.factories import DATASETS, MODELS, ModelFactory, register_model
from tdlib.metrics import pruning_sweep
from tdlib.runs import RunCache, weight_digests
from tdlib.spec import RunSpec

ROOT = Path(__file__).resolve().parent.parent
TU = TargetedDropout.constant("unit", 0.5, 0.5)


def cnn_spec(seed: int = 0, epochs: int = 3, **changes: object) -> RunSpec:
    fields: dict[str, object] = {"batch_size": 32, "lr": 0.01, "model": TINY_CNN.name, "dataset": STRIPES.name,
                                 **changes}
    return RunSpec("CNN", seed, epochs, **fields)  # type: ignore[arg-type]


def test_runs_of_this_study_keep_their_keys() -> None:
    """Naming the model and the data set left every run key as it was: pinned, and for every archived run."""
    from tdlib.claims.profiles import PROFILES

    assert PROFILES["default"].spec("B", 0).name == "B-s0-5b9e4e16ea86935a"
    assert PROFILES["paper"].spec("TWR", 0).name == "TWR-s0-699fef2670cfa9bf"
    assert PROFILES["smoke"].spec("B", 0).name == "B-s0-ca16d3dfb8ea950f"
    records = sorted((ROOT / "archive").glob("*/*/record.json"))
    assert len(records) > 250
    for record in records:
        spec = RunSpec.from_json(json.loads(record.read_text())["spec"])
        assert (spec.model, spec.dataset) == ("mlp", "fashion-mnist")
        assert spec.name == record.parent.name
    assert "model" not in RunSpec("B", 0, 1).to_json()  # the defaults are left out of the hashed description
    assert cnn_spec().key() != RunSpec("CNN", 0, 3, batch_size=32, lr=0.01).key()
    assert RunSpec.from_json(cnn_spec().to_json()) == cnn_spec()


def test_a_cnn_on_other_data_trains_resumes_and_loads_to_the_same_bits(tmp_path: Path) -> None:
    spec = cnn_spec(targeted=TU, checkpoints=(0, 1, 3))
    straight = RunCache(tmp_path / "a", progress=False).get(spec)
    assert straight.final_accuracy > 0.5  # four classes: it learned
    cache = RunCache(tmp_path / "b", progress=False)
    with pytest.raises(KeyboardInterrupt):
        cache.get(spec, stop_after=1)
    resumed = cache.get(spec)
    assert weight_digests(straight.record) == weight_digests(resumed.record)  # every weight file, bit for bit
    assert len(weight_digests(straight.record)) == 4
    assert straight.record["data_source"] == "stripes (tests/t_models.py)"
    model = resumed.model()
    assert isinstance(model, nn.Sequential) and not model.training
    assert not any(type(m).__name__.startswith("Parametrization") for m in model.modules())  # no dropout left
    assert not torch.equal(resumed.checkpoint(1)[1].weight, model[1].weight)
    data = cache.data_for(spec)
    sweep = pruning_sweep(model, "unit", data.test_x, data.test_y, [0, 50])
    assert sweep[0] == pytest.approx(resumed.final_accuracy)


def test_targeted_dropout_goes_on_every_prunable_layer_of_the_network() -> None:
    from tdlib.train import build_model

    model = build_model(cnn_spec(targeted=TU))
    dropped = [name for name, m in model.named_modules() if isinstance(m, TargetedUnitDropout)]
    # both convolutions (a unit is a filter), never the classifier
    assert dropped == ["1.parametrizations.weight.0", "3.parametrizations.weight.0"]


def test_unregistered_names_and_unpicklable_factories_are_refused_in_one_line(tmp_path: Path) -> None:
    cache = RunCache(tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"model must be one of .*'mlp'.*got 'resnet9'"):
        cache.get(cnn_spec(model="resnet9"))
    with pytest.raises(ValueError, match="dataset must be one of"):
        cache.get(cnn_spec(dataset="cifar"))
    with pytest.raises(ValueError, match="model must be a registered name"):
        cnn_spec(model="a b")
    register_model(ModelFactory("inline", "a lambda", lambda spec: nn.Linear(64, 4)))
    try:
        with pytest.raises(ValueError, match="'inline' cannot be sent to a worker process"):
            train_all([cnn_spec(model="inline")], tmp_path, engine="local", progress=False)
        assert not list(tmp_path.iterdir())  # refused before any work
    finally:
        del MODELS["inline"]


def test_a_local_worker_builds_a_network_registered_only_in_this_process(tmp_path: Path) -> None:
    """The worker has not imported the claims file that registered the factories: they travel with the job.
    (Importing t_models in the worker registers "tiny-cnn", not "tiny-cnn-here", which only this test does.)"""
    register_model(ModelFactory("tiny-cnn-here", "registered by this test alone", TINY_CNN.build))
    spec = cnn_spec(seed=1, epochs=1, model="tiny-cnn-here")
    try:
        here = train_all([spec], tmp_path / "here", engine="inprocess", threads=1, progress=False)
        there = train_all([spec], tmp_path / "there", engine="local", workers=1, threads=1, progress=False)
    finally:
        del MODELS["tiny-cnn-here"]
    assert there[0].trained_now and there[0].final_accuracy == here[0].final_accuracy
    digests = [json.loads((tmp_path / where / spec.name / "record.json").read_text())["files"]["model.pt"]
               for where in ("here", "there")]
    assert digests[0] == digests[1]
    assert DATASETS["stripes"] is STRIPES


def test_the_example_runs_from_an_empty_folder(tmp_path: Path) -> None:
    """examples/fashion_cnn, copied out of the repository, judged at its smoke profile as a user would run it."""
    import shutil

    example = shutil.copytree(ROOT / "examples" / "fashion_cnn", tmp_path / "fashion_cnn",
                              ignore=shutil.ignore_patterns("__pycache__", "reports"))
    work = tmp_path / "empty"
    work.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(example), "-p", "no:cacheprovider", "--claims-profile", "cnn-smoke",
         "--claims-cache", "cache", "--claims-report", "report/CLAIMS.md"],
        cwd=work, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "E1 " in done.stdout
    text = (work / "report" / "CLAIMS.md").read_text()
    assert text.startswith("# Claims report: targeted dropout on a small CNN")
    assert "| CNN-TU |" in text and "figures/sweeps.png" in text
    runs = sorted(json.loads(r.read_text())["spec"]["condition"] for r in (work / "cache").glob("*/record.json"))
    assert runs == ["CNN", "CNN", "CNN-TU", "CNN-TU"]


def test_an_unregistered_profile_is_one_usage_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "examples" / "fashion_cnn"), "-p",
                           "no:cacheprovider", "--claims-profile", "cnn-huge", "--claims-cache", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 4
    assert done.stderr.strip() == ("ERROR: --claims-profile: profile must be one of cnn, cnn-smoke, default, paper, "
                                   "smoke, got 'cnn-huge'")
    assert "Traceback" not in done.stderr and not list(tmp_path.iterdir())


def test_compress_refuses_a_run_of_another_network_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tdlib.__main__ import main

    spec = cnn_spec(epochs=1)
    RunCache(tmp_path, progress=False).get(spec)
    assert main(["compress", spec.name, "--cache", str(tmp_path), "--kind", "unit", "--k", "50", "-o",
                 str(tmp_path / "small.safetensors")]) == 2
    assert capsys.readouterr().err.strip().endswith("a run of the model 'tiny-cnn'; compress shrinks tdlib's MLP "
                                                    "('mlp') only")
    assert not (tmp_path / "small.safetensors").exists()


def test_the_train_command_trains_a_registered_profile_of_its_own_conditions(
        tmp_path: Path, capsys: pytest.CaptureFixture, isolated_registries: None) -> None:
    from tdlib.claims.cli import train

    train(["cnn-smoke", "--claims", str(ROOT / "examples" / "fashion_cnn"), "--cache", str(tmp_path), "--plan"])
    out = capsys.readouterr().out
    assert "cnn-smoke: 4 runs, 0 cached, 4 to train" in out  # CNN and CNN-TU at 2 seeds: none of the study's
