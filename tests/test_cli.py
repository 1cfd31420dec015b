"""``python -m tdlib``: help, listing and verifying the cache, training, compressing a cached run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tdlib.runs import RunCache
from tdlib.spec import DataSpec, RunSpec

ROOT = Path(__file__).resolve().parent.parent
SPEC = RunSpec("B", 0, 2, batch_size=64, hidden=(32, 16), data=DataSpec(600, 300, 0))


def tdlib(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tdlib", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-cache")
    RunCache(root, progress=False).get(SPEC)
    return root


def test_help_works_for_every_command() -> None:
    top = tdlib("--help")
    assert top.returncode == 0 and all(c in top.stdout for c in ("runs", "train", "compress"))
    assert tdlib("train", "--help").returncode == 0
    assert "--kind" in tdlib("compress", "--help").stdout
    for command in ("runs", "compress", "findings", "report"):  # every option says what it is
        assert not undocumented(tdlib(command, "--help").stdout), command


def undocumented(help_text: str) -> list[str]:
    """The options of an argparse help text with no description: none on the option's line (after two
    spaces) and none on the next line (indented, as argparse wraps it)."""
    lines = help_text.split("options:")[1].splitlines()
    return [line.strip() for i, line in enumerate(lines) if line.startswith("  -") and "  " not in line.strip()
            and not (i + 1 < len(lines) and lines[i + 1].startswith(" " * 24))]


@pytest.mark.parametrize(("args", "message"), [
    (["--k", "150"], "argument --k: a percentage lies in [0, 100], got 150"),
    (["--k", "ten"], "argument --k: a percentage is a number, got 'ten'"),
    (["--k", "90", "--batch", "0"], "argument --batch: at least 1, got 0"),
])
def test_a_bad_number_is_one_usage_error_before_any_work(tmp_path: Path, args: list[str], message: str) -> None:
    done = tdlib("compress", SPEC.name, "--cache", str(tmp_path), "-o", str(tmp_path / "x.safetensors"), *args)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2 and last == f"python -m tdlib compress: error: {message}"
    assert "Traceback" not in done.stderr and not any(tmp_path.iterdir())


def test_runs_lists_and_verifies_the_cache(cache: Path, tmp_path: Path) -> None:
    listed = tdlib("runs", "--cache", str(cache), "--verify")
    assert listed.returncode == 0 and f"{SPEC.name}: 2 epochs" in listed.stdout and "verified" in listed.stdout
    import shutil

    shutil.copytree(cache, tmp_path / "c")
    model = tmp_path / "c" / SPEC.name / "model.pt"
    model.write_bytes(model.read_bytes()[:-8] + b"damaged!")
    damaged = tdlib("runs", "--cache", str(tmp_path / "c"), "--verify")
    assert damaged.returncode == 1 and "FAILS its checks" in damaged.stdout
    assert model.exists()  # verifying reads; it never moves or deletes


@pytest.mark.parametrize("timed_on", ["images", "random"])
def test_compress_saves_a_cached_run_that_computes_what_the_masked_model_does(cache: Path, tmp_path: Path,
                                                                             timed_on: str) -> None:
    from tdlib.compress import load
    from tdlib.metrics import masks_for
    from tdlib.prune import apply_masks

    out = tmp_path / "b-90.safetensors"
    done = tdlib("compress", SPEC.name, "--cache", str(cache), "--kind", "weight", "--k", "90", "-o", str(out),
                 "--timed-on", timed_on)
    assert done.returncode == 0, done.stderr
    assert "CUDA" not in done.stderr  # timing imports torch's extension builder, which warns on CPU machines
    model = RunCache(cache, progress=False).cached(SPEC).model()
    x = torch.rand(7, 784)
    expected = apply_masks(model, masks_for(model, "weight", 90)).eval()(x)
    saved = load(out)
    assert torch.allclose(saved(x), expected, atol=1e-5)
    said = f"{saved.form} (fastest at batch 1 on {'images' if timed_on == 'images' else 'random inputs'})"
    assert said in done.stdout


def test_compress_without_the_images_says_how_to_go_on(cache: Path, tmp_path: Path, monkeypatch) -> None:
    from tdlib.data import ENV_VAR

    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nowhere"))
    out = tmp_path / "b.safetensors"
    failed = tdlib("compress", SPEC.name, "--cache", str(cache), "--k", "90", "-o", str(out))
    assert failed.returncode == 1 and "no such directory" in failed.stderr and "--timed-on random" in failed.stderr
    assert "Traceback" not in failed.stderr and not out.exists()
    assert tdlib("compress", "no-such-run", "--cache", str(cache), "--k", "90", "-o", str(out)).returncode == 1


def test_findings_writes_the_reports_verdicts_between_the_readmes_markers(tmp_path: Path) -> None:
    report = tmp_path / "reports" / "claims.json"
    report.parent.mkdir()
    report.write_text(json.dumps({
        "profile": {"profile": "default", "epochs": 15, "seeds": [0, 1, 2, 3, 4]},
        "provenance": {"code_version": "abc123", "date": "2026-11-25T20:00:00+00:00"},
        "guarantee": "Guarantee: at most 0.05.",
        "sequence": {"stored": {"B": 7, "TWR": 5}},
        "claims": [{"id": "C1", "title": "a small minority does the work", "verdict": "SUPPORTED", "error": "",
                    "effect": "1.23 pp [0.50, 2.00]"}],
    }))
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\n<!-- findings: start -->\nold\n<!-- findings: end -->\n\n## More\n")
    done = tdlib("findings", str(report), "--readme", str(readme))
    assert done.returncode == 0 and "updated" in done.stdout
    text = readme.read_text()
    assert text.startswith("# Title\n\n<!-- findings: start -->\nFrom [reports/CLAIMS.md](reports/CLAIMS.md)")
    assert "| [C1](reports/CLAIMS.md#c1-a-small-minority-does-the-work-supported) | a small minority does the work" \
           " | **SUPPORTED** | 1.23 pp [0.50, 2.00] |" in text
    assert "seeds of its sequence: B 7, TWR 5" in text and "old" not in text
    assert "![Accuracy after pruning, per condition](reports/figures/sweeps.png)" in text
    assert text.endswith("<!-- findings: end -->\n\n## More\n")
    assert "already current" in tdlib("findings", str(report), "--readme", str(readme)).stdout
    readme.write_text("# no markers\n")
    refused = tdlib("findings", str(report), "--readme", str(readme))
    assert refused.returncode == 2 and "needs one '<!-- findings: start -->' line" in refused.stderr
    report.write_text("[]")
    assert "not a claims report's JSON" in tdlib("findings", str(report), "--readme", str(readme)).stderr


def test_a_named_findings_block_takes_its_own_reports_verdicts_and_leaves_the_others(tmp_path: Path) -> None:
    paper = tmp_path / "reports" / "paper" / "claims.json"
    (paper.parent / "figures").mkdir(parents=True)
    (paper.parent / "figures" / "by-length.png").write_bytes(b"png")
    paper.write_text(json.dumps({
        "profile": {"profile": "paper", "epochs": 100, "seeds": [0, 1]},
        "provenance": {"code_version": "def456", "date": "2026-11-27T20:00:00+00:00"},
        "guarantee": "Guarantee: at most 0.05.",
        "claims": [{"id": "C7", "title": "training longer makes weights small", "verdict": "REFUTED",
                    "error": "", "effect": "-0.60 pp"}],
    }))
    readme = tmp_path / "README.md"
    default = "<!-- findings: start -->\nthe default report's\n<!-- findings: end -->\n"
    readme.write_text(f"# T\n{default}\n## At 100 epochs\n<!-- findings paper: start -->\nold\n"
                      "<!-- findings paper: end -->\n")
    assert tdlib("findings", str(paper), "--readme", str(readme), "--block", "paper").returncode == 0
    text = readme.read_text()
    assert text.startswith(f"# T\n{default}\n## At 100 epochs\n<!-- findings paper: start -->\n"
                           "From [reports/paper/CLAIMS.md](reports/paper/CLAIMS.md)")
    assert "paper profile (100 epochs, seeds 0, 1), code def456" in text and "old" not in text
    assert "| **REFUTED** | -0.60 pp |" in text
    assert "](reports/paper/figures/sweeps.png)\n![The claims on B alone by training length]" \
           "(reports/paper/figures/by-length.png)\n<!-- findings paper: end -->\n" in text
    missing = tdlib("findings", str(paper), "--readme", str(readme), "--block", "nope")
    assert missing.returncode == 2 and "needs one '<!-- findings nope: start -->' line" in missing.stderr
    odd = tdlib("findings", str(paper), "--readme", str(readme), "--block", "a -->")
    assert odd.returncode == 2 and "block name 'a -->'" in odd.stderr and readme.read_text() == text


def test_report_draws_through_pytest_from_stored_evidence_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from tdlib.__main__ import main

    assert "stored evidence" in tdlib("report", "--help").stdout
    commands = []
    monkeypatch.setattr(subprocess, "run", lambda command: commands.append(command) or
                        subprocess.CompletedProcess(command, 0))
    assert main(["report", "out/CLAIMS.md", "--cache", "c"]) == 0
    assert commands == [[sys.executable, "-m", "pytest", "claims", "-p", "no:cacheprovider", "--claims-stored-only",
                         "--claims-profile", "default", "--claims-report", "out/CLAIMS.md", "--claims-cache", "c"]]


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--workers", "0"], {}, "python -m tdlib train: error: argument --workers: at least 1, got 0"),
    (["--threads", "0"], {}, "python -m tdlib train: error: argument --threads: at least 1, got 0"),
    (["--threads", "two"], {}, "python -m tdlib train: error: argument --threads: a whole number is needed, got 'two'"),
    ([], {"TDLIB_LOCK_TIMEOUT": "abc"}, "python -m tdlib train: error: TDLIB_LOCK_TIMEOUT='abc': give the seconds"),
    ([], {"TDLIB_LOCK_TIMEOUT": "-1"}, "python -m tdlib train: error: TDLIB_LOCK_TIMEOUT='-1': give the seconds"),
])
def test_train_refuses_a_bad_setting_in_one_line_before_any_work(tmp_path: Path, args: list[str],
                                                                 env: dict[str, str], message: str) -> None:
    done = subprocess.run([sys.executable, "-m", "tdlib", "train", "smoke", "--cache", str(tmp_path), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, env={**os.environ, **env})
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith(message), done.stderr
    assert "Traceback" not in done.stderr and not any(tmp_path.iterdir())


def test_compress_into_a_missing_folder_is_refused_before_the_run_is_timed(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "no" / "x.safetensors"
    done = tdlib("compress", SPEC.name, "--cache", str(cache), "--k", "90", "-o", str(out))
    assert done.returncode == 2
    assert done.stderr.strip() == f"python -m tdlib compress: -o {out}: no directory {out.parent} to write it in"
    assert not any(tmp_path.iterdir())
