"""Archived runs checked by training them again: ``python -m tdlib verify ARCHIVE``.

An archive (:mod:`tdlib.claims.archive`) certifies each run by the SHA-256 of every weight file it wrote,
and holds what was measured of those weights. Training is deterministic for a given torch, thread count and
CPU, so anyone can check a committed run from git alone. :func:`verify`, for each chosen run:

1. trains it again from scratch in a scratch cache, at the thread count its record names
   (:meth:`RunCache.materialize`), and compares every certified weight file bit for bit, and its history
   (loss and accuracy each epoch; the seconds are this machine's);
2. measures it again: one measuring pass of the claims suite (``--claims-measure-finished``) over the
   profile, in which every other run of the archive answers from its stored measurements and the run's own
   are gone, so that all a report reads of it is computed anew by the code here;
3. compares every measurement the archive stores for it with the new one. Timings, and the layouts chosen by
   timing (:func:`tdlib.claims.evidence.measures_the_machine`), measure the machine rather than the run:
   they are counted and left out.

Each run gets one line: reproduced, or what differs.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tdlib.claims.archive import EVIDENCE_FILE, restore
from tdlib.claims.evidence import EvidenceMismatch, measures_the_machine, verified_values
from tdlib.claims.profiles import PROFILES, Profile
from tdlib.runs import RECORD, CertificateMismatch, CorruptEntry, Run, RunCache
from tdlib.spec import RunSpec

REL_TOL = 1e-6  # a measurement is reproduced when it agrees to about 6 significant digits (reports show 2-4)


class VerifyError(ValueError):
    """What was asked for cannot be verified (no such archive or run, runs of no profile): one line to say."""


@dataclass(frozen=True)
class Outcome:
    """What training one archived run again gave."""

    name: str
    weights: str = ""  # "" when every certified weight file was reproduced, else what differs
    history: tuple[str, ...] = ()  # "epoch 3 train_loss 0.41 archived, 0.42 again", ...
    compared: int = 0  # measurements compared
    differ: tuple[str, ...] = ()  # "accuracy 89.27 archived, 89.31 again", ...
    missing: tuple[str, ...] = ()  # archived measurements the measuring pass did not take again
    timings: int = 0  # archived timings left out
    error: str = ""  # the measuring pass failed: why

    @property
    def reproduced(self) -> bool:
        return not (self.weights or self.history or self.differ or self.missing or self.error)

    def line(self) -> str:
        timed = f"; {self.timings} timings of the machine not compared" if self.timings else ""
        if self.reproduced:
            return (f"{self.name}: reproduced: every certified weight file bit for bit, its history, and "
                    f"{self.compared} measurements{timed}")
        what = [self.weights] if self.weights else []
        what += [f"history: {', '.join(self.history[:3])}" + (", ..." if len(self.history) > 3 else "")] * bool(
            self.history)
        what += [f"{len(self.differ)} of {self.compared} measurements differ: {', '.join(self.differ[:3])}"
                 + (", ..." if len(self.differ) > 3 else "")] * bool(self.differ)
        what += [f"{len(self.missing)} archived measurements were not taken again ({', '.join(self.missing[:3])}"
                 + (", ...)" if len(self.missing) > 3 else ")")] * bool(self.missing)
        what += [f"measuring it again failed: {self.error}"] * bool(self.error)
        return f"{self.name}: NOT reproduced: " + "; ".join(what) + timed


def archived_specs(archive: Path) -> dict[str, RunSpec]:
    """Every run of ``archive`` by name; raises :class:`VerifyError` if it is no archive or an entry is
    unreadable."""
    if not archive.is_dir():
        raise VerifyError(f"{archive}: no such archive directory")
    specs = {}
    for record in sorted(archive.glob(f"*/{RECORD}")):
        try:
            specs[record.parent.name] = RunSpec.from_json(json.loads(record.read_text())["spec"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise VerifyError(f"{record}: not a run's record ({error})") from None
    if not specs:
        raise VerifyError(f"{archive}: no archived runs there (no */{RECORD})")
    return specs


def trained_on(archive: Path, names: Sequence[str]) -> dict[str, str | None]:
    """The CPU each run's record names (None where the record predates naming it)."""
    return {name: json.loads((archive / name / RECORD).read_text())["provenance"].get("cpu") for name in names}


def choose(names: Sequence[str], named: Sequence[str], sample: int | None, seed: int) -> list[str]:
    """The runs to verify: ``named`` ones (each must be in ``names``), else ``sample`` drawn at random with
    ``seed`` from ``names``, in name order."""
    if named:
        if unknown := [n for n in named if n not in names]:
            raise VerifyError(f"not in the archive: {', '.join(unknown)}")
        return list(dict.fromkeys(named))
    count = 1 if sample is None else sample
    if count > len(names):
        raise VerifyError(f"--sample {count}: the archive holds {len(names)} runs that can be reproduced here (trained "
                          "on a CPU like this one, or not named)")
    return sorted(random.Random(seed).sample(sorted(names), count))


def profile_of(specs: Sequence[RunSpec]) -> Profile:
    """The registered profile whose training (epochs, batch and data) the runs share; raises
    :class:`VerifyError` if there is none, or the runs are of several."""
    names = {p.name for s in specs for p in PROFILES.values()
             if (p.epochs, p.batch_size, p.data) == (s.epochs, s.batch_size, s.data)}
    if len(names) != 1 or not all(any((p.epochs, p.batch_size, p.data) == (s.epochs, s.batch_size, s.data)
                                      for p in PROFILES.values()) for s in specs):
        found = "several profiles (" + ", ".join(sorted(names)) + ")" if len(names) > 1 else "no registered profile"
        raise VerifyError(f"the runs chosen are of {found}; name it with --profile, or verify them apart")
    return PROFILES[names.pop()]


def _without_seconds(epoch: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in epoch.items() if "seconds" not in k}


def _history(run: Run) -> list[dict[str, float]]:
    """A run's history without its seconds (this machine's, not the run's)."""
    return [_without_seconds(epoch) for epoch in run.history]


def _history_differences(archived: list[dict[str, float]], again: list[dict[str, float]]) -> tuple[str, ...]:
    if len(archived) != len(again):
        return (f"{len(archived)} epochs archived, {len(again)} again",)
    return tuple(f"epoch {a.get('epoch', i + 1)} {key} {a.get(key)} archived, {b.get(key)} again"
                 for i, (a, b) in enumerate(zip(archived, again)) for key in sorted({*a, *b})
                 if a.get(key) != b.get(key))


def compare(archived: dict[str, float], again: dict[str, float]) -> tuple[int, tuple[str, ...], tuple[str, ...], int]:
    """(measurements compared, those that differ, those not taken again, timings left out) of the archived
    values against the new ones."""
    timings = [k for k in archived if measures_the_machine(k)]
    keys = sorted(k for k in archived if not measures_the_machine(k))
    missing = tuple(k for k in keys if k not in again)
    differ = tuple(f"{k} {archived[k]:.6g} archived, {again[k]:.6g} again" for k in keys if k in again
                   and not (math.isclose(archived[k], again[k], rel_tol=REL_TOL, abs_tol=1e-12)
                            or (math.isnan(archived[k]) and math.isnan(again[k]))))
    return len(keys) - len(missing), differ, missing, len(timings)


def measuring_pass(claims: Sequence[str], profile: Profile, cache: Path) -> str:
    """One measuring pass of the claims suite over ``profile`` on ``cache`` (in a child process: the plugin's
    hooks run in pytest's own); "" if it succeeded, else the end of its output."""
    command = [sys.executable, "-m", "pytest", *claims, "-q", "-p", "no:cacheprovider", "--claims-profile",
               profile.name, "--claims-cache", str(cache), "--claims-measure-finished"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode == 0:
        return ""
    tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
    return f"pytest exited {done.returncode}: " + " / ".join(tail)


def verify(archive: Path, names: Sequence[str], profile: Profile, claims: Sequence[str],
           log: Callable[[str], None] = print, scratch: Path | None = None) -> list[Outcome]:
    """Train each of ``names`` (runs of ``archive`` under ``profile``) again and compare it with the archive:
    its weight files, its history and its measurements (see the module docstring). Lines go to ``log`` as
    they come; the outcomes are returned in the order of ``names``."""
    with tempfile.TemporaryDirectory(prefix="tdlib-verify-", dir=scratch) as work:
        cache = RunCache(Path(work) / "cache", progress=False)
        moved = restore(archive, cache)
        for refused in moved.refused:
            log(f"  refused {refused}")
        runs: dict[str, Run] = {}  # those that reproduced their weights, trained again
        outcomes: dict[str, Outcome] = {}
        failed = ""
        certified: dict[str, Run] = {}  # each run as its archived record describes it
        histories: dict[str, list[dict[str, float]]] = {}  # and its archived history
        for name in names:
            spec = RunSpec.from_json(json.loads((archive / name / RECORD).read_text())["spec"])
            archived_run = cache.cached(spec)
            if archived_run is None:
                raise VerifyError(f"{archive / name}: its entry fails its checks, so there is nothing to verify it "
                                  "against")
            log(f"{name}: training it again ({archived_run.record.get('threads', '?')} threads; its record says "
                f"{archived_run.record.get('wall_seconds', 0):.0f} s)")
            certified[name], histories[name] = archived_run, _history(archived_run)
            try:
                with warnings.catch_warnings():  # the line above says it
                    warnings.filterwarnings("ignore", message=f"run {name} is archived without its weights")
                    runs[name] = cache.materialize(spec)
                (cache.root / "evidence" / f"{name}.json").unlink(missing_ok=True)  # measured again, not read
            except CertificateMismatch as error:  # its measurements are of other weights: not compared
                what = str(error).split("archived record: ", 1)[-1].split(". Bits differ")[0]
                new_history = json.loads((error.kept / "history.json").read_text()) if error.kept else []
                history = _history_differences(histories[name], [_without_seconds(e) for e in new_history])
                outcomes[name] = Outcome(name, what, history)
                log(outcomes[name].line())
        if runs:
            log(f"measuring {len(runs)} run(s) again (a measuring pass over the {profile.name} profile)")
            failed = measuring_pass(claims, profile, cache.root)
        for name, run in runs.items():
            stored = cache.root / "evidence" / f"{name}.json"
            try:
                again = verified_values(stored.read_bytes(), run) if stored.exists() else {}
            except (EvidenceMismatch, CorruptEntry) as error:
                again, failed = {}, failed or f"its new measurements fail their checks ({error})"
            compared, differ, missing, timings = compare(_archived_values(archive / name, certified[name]), again)
            outcomes[name] = Outcome(name, "", _history_differences(histories[name], _history(run)),
                                     compared, differ, missing, timings, failed)
            log(outcomes[name].line())
    return [outcomes[name] for name in names]


def _archived_values(entry: Path, run: Run) -> dict[str, float]:
    """The archived measurements of ``run`` (checked against its record); raises :class:`VerifyError`."""
    path = entry / EVIDENCE_FILE
    if not path.exists():
        return {}
    try:
        return verified_values(path.read_bytes(), run)
    except EvidenceMismatch as error:
        raise VerifyError(f"{path}: {error}") from None

