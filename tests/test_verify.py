"""``python -m tdlib verify``: an archived run trained again from scratch and compared with its archive, its
weights bit for bit, its history and every stored measurement, so that a forged number, history or
certificate is named, and an honest run is reproduced."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tdlib.claims.evidence import measures_the_machine
from tdlib.claims.verify import VerifyError, choose, compare

ROOT = Path(__file__).resolve().parent.parent
RUNS = ("B-s0", "B-s1", "TU-s0", "TW-s0")  # smoke runs, by the start of their names


def tdlib(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tdlib", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four smoke runs trained and measured here, archived: what ``verify`` is checked against."""
    root = tmp_path_factory.mktemp("verify")
    cache, archive = root / "cache", root / "archive"
    trained = tdlib("train", "smoke", "--conditions", "B,TU,TW", "--seeds", "0,1", "--no-sections", "--cache",
                    str(cache))
    assert trained.returncode == 0, trained.stderr[-2000:]
    measured = subprocess.run([sys.executable, "-m", "pytest", "claims", "-q", "-p", "no:cacheprovider",
                               "--claims-profile", "smoke", "--claims-cache", str(cache), "--claims-measure-finished",
                               "--claims-archive", str(archive)], capture_output=True, text=True, cwd=ROOT,
                              timeout=600)
    assert measured.returncode == 0, measured.stdout[-3000:]
    for entry in archive.iterdir():  # only the four runs verified below
        if not entry.name.startswith(RUNS):
            shutil.rmtree(entry)
    return archive


def entry(archive: Path, start: str) -> Path:
    (found,) = [p for p in archive.iterdir() if p.name.startswith(start + "-")]
    return found


def rewrite(path: Path, change: Callable[[dict], None], checksum: str | None = "sha256") -> None:
    """Change the JSON at ``path`` and, for an evidence file, make its own checksum match again: a forgery
    that every check of the file alone passes."""
    data = json.loads(path.read_text())
    change(data)
    if checksum:
        data.pop(checksum)
        data[checksum] = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    path.write_text(json.dumps(data, indent=0, sort_keys=True))


def forge_history(directory: Path) -> None:
    """history.json with epoch 1's loss changed, and the record's SHA-256 of it made to match."""
    rewrite(directory / "history.json", lambda h: h[0].update(train_loss=h[0]["train_loss"] + 0.01), None)
    digest = hashlib.sha256((directory / "history.json").read_bytes()).hexdigest()
    record = json.loads((directory / "record.json").read_text())
    record["files"]["history.json"] = digest
    (directory / "record.json").write_text(json.dumps(record, indent=1))


def forge_weights(directory: Path) -> None:
    """The record's certified model.pt digest changed, and the evidence tied to the forged record."""
    from tdlib.runs import weight_digests

    record = json.loads((directory / "record.json").read_text())
    record["files"]["model.pt"] = "0" * 64
    (directory / "record.json").write_text(json.dumps(record, indent=1))
    tie = hashlib.sha256(json.dumps(weight_digests(record), sort_keys=True).encode()).hexdigest()
    rewrite(directory / "evidence.json", lambda e: e.update(files=tie))


def test_an_honest_run_is_reproduced_and_every_forgery_is_named(archive: Path, tmp_path: Path) -> None:
    forged = tmp_path / "archive"
    shutil.copytree(archive, forged)
    rewrite(entry(forged, "B-s1") / "evidence.json", lambda e: e["values"].update(accuracy=40.6))
    forge_history(entry(forged, "TU-s0"))
    forge_weights(entry(forged, "TW-s0"))
    names = sorted(p.name for p in forged.iterdir())

    done = tdlib("verify", str(forged), *names)
    lines = {line.split(":")[0]: line for line in done.stdout.splitlines() if ": " in line}
    assert done.returncode == 1, done.stdout + done.stderr
    honest = lines[entry(forged, "B-s0").name]
    assert "reproduced: every certified weight file bit for bit, its history, and" in honest
    assert int(honest.split(" measurements")[0].rsplit(" ", 1)[1]) > 100  # every stored measurement, compared
    assert "NOT reproduced" in lines[entry(forged, "B-s1").name]
    assert "accuracy 40.6 archived, " in lines[entry(forged, "B-s1").name]
    assert "history: epoch 1 train_loss" in lines[entry(forged, "TU-s0").name]
    assert "model.pt differ" in lines[entry(forged, "TW-s0").name]
    assert done.stdout.strip().endswith("1 of 4 reproduced; 3 NOT")
    assert forged.joinpath(entry(forged, "B-s1").name, "evidence.json").read_text().count("40.6") == 1  # untouched


@pytest.mark.parametrize(("args", "says"), [
    (["{missing}"], "no such archive directory"),
    (["{archive}", "B-s9-0000"], "not in the archive: B-s9-0000"),
    (["{archive}", "--sample", "9"], "--sample 9: the archive holds 4 runs that can be reproduced here"),
    (["{archive}", "{first}", "--sample", "1"], "name runs or ask for --sample N, not both"),
    (["{archive}", "--claims", "{missing}"], "--claims: no such file or directory"),
])
def test_bad_input_is_one_line_before_any_training(archive: Path, tmp_path: Path, args: list[str], says: str) -> None:
    first = sorted(p.name for p in archive.iterdir())[0]
    args = [a.format(archive=archive, missing=tmp_path / "nowhere", first=first) for a in args]
    done = tdlib("verify", *args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and says in done.stderr, done.stderr


def test_a_draw_takes_only_runs_trained_on_a_cpu_like_this_one(archive: Path, tmp_path: Path) -> None:
    # Bits differ across CPU models (math libraries pick their kernels by CPU): an archive trained elsewhere
    # has nothing this machine can reproduce bit for bit, which is said, and is no failure.
    elsewhere = tmp_path / "archive"
    shutil.copytree(archive, elsewhere)
    for record in elsewhere.glob("*/record.json"):
        rewrite(record, lambda r: r["provenance"].update(cpu="Another CPU (torch: AVX2)"), None)
    done = tdlib("verify", str(elsewhere), "--sample", "1")
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.startswith(f"python -m tdlib verify: none of the 4 runs of {elsewhere} was trained on this "
                                  "CPU (") and "they name Another CPU (torch: AVX2)" in done.stdout
    assert done.stdout.strip().endswith("nothing verified")


def test_a_draw_is_the_same_for_the_same_seed_and_covers_the_archive() -> None:
    names = [f"B-s{i}" for i in range(20)]
    assert choose(names, [], 5, seed=3) == choose(names, [], 5, seed=3)
    assert {n for s in range(50) for n in choose(names, [], 2, seed=s)} == set(names)
    with pytest.raises(VerifyError, match="not in the archive: X"):
        choose(names, ["X"], None, 0)


def test_timings_are_left_out_and_every_other_measurement_is_compared() -> None:
    archived = {"accuracy": 89.27, "saving:unit:80:batch1:speedup": 3.0, "saving:unit:80:seconds": 2.0,
                "speedup-curve:weight:batch1:90:layer2:csr": 1.0, "speedup-curve:weight:batch1:90:flop_ratio": 1.4,
                "saving:unit:80:kib:compressed": 120.0, "dead-units": float("nan"), "pruned:weight:90": 51.63}
    again = {**archived, "saving:unit:80:batch1:speedup": 9.0, "saving:unit:80:seconds": 5.0,
             "speedup-curve:weight:batch1:90:layer2:csr": 0.0, "pruned:weight:90": 51.64}
    del again["accuracy"]
    compared, differ, missing, timings = compare(archived, again)
    assert (compared, missing, timings) == (3, ("accuracy",), 4)
    assert differ == ("pruned:weight:90 51.63 archived, 51.64 again",)
    assert not measures_the_machine("saving:unit:80:kib:compressed")
    assert measures_the_machine("timing:unit:80:batch1:compressed:seconds20")
    assert measures_the_machine("timing-curve:weight:batch256:99:tiled")
    assert measures_the_machine("timing-curve:weight:batch256:onnxruntime:seconds0")
    assert not measures_the_machine("pruned:unit_l1:50@epoch8")
