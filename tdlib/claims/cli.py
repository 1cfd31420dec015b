"""The claims framework's commands: ``python -m tdlib train``, ``findings``, ``report`` and ``verify``.

``python -m tdlib`` (:mod:`tdlib.__main__`) hands them here; the ML library's own commands (``runs``,
``compress``) stay there.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tdlib.claims.conditions import CONDITIONS
from tdlib.claims.profiles import PROFILES, parse_seeds
from tdlib.runs import lock_timeout


def positive(text: str) -> int:
    """A whole number of at least 1, for argparse: anything else is a usage error naming the option."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number is needed, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"at least 1, got {value}")
    return value


def findings(args: argparse.Namespace) -> int:
    from tdlib.claims.findings import FindingsError, block, update_readme

    readme = Path(args.readme)
    try:
        changed = update_readme(readme, block(Path(args.report), readme.resolve().parent, args.block), args.block)
    except (FindingsError, OSError) as error:
        print(f"python -m tdlib findings: {error}", file=sys.stderr)
        return 2
    print(f"{readme}: findings block {'updated' if changed else 'already current'} from {args.report}")
    return 0


def report(args: argparse.Namespace) -> int:
    """The claims suite through pytest (in a child process: the plugin's hooks run in pytest's own), judging
    and drawing from the cache's stored runs and measurements only."""
    import subprocess

    command = [sys.executable, "-m", "pytest", *args.claims, "-p", "no:cacheprovider", "--claims-stored-only",
               "--claims-profile", args.profile, "--claims-report", args.report]
    command += ["--claims-cache", args.cache] if args.cache else []
    command += ["--claims-seeds", args.seeds] if args.seeds else []
    command += ["--claims-archive", args.archive] if args.archive else []
    return subprocess.run(command).returncode


def verify(args: argparse.Namespace) -> int:
    """``python -m tdlib verify``: archived runs trained again and compared with their archive; 0 if every one
    was reproduced, 1 if one was not, 2 for a usage error (one line, before any training)."""
    import secrets

    from tdlib.claims.verify import VerifyError, archived_specs, choose, profile_of, trained_on
    from tdlib.claims.verify import verify as verify_runs
    from tdlib.data import DataError, locate
    from tdlib.provenance import cpu

    archive = Path(args.archive)
    seed = secrets.randbelow(2**31) if args.seed is None else args.seed
    try:
        if args.sample is not None and args.runs:
            raise VerifyError("name runs or ask for --sample N, not both")
        specs = archived_specs(archive)
        here, cpus = cpu(), trained_on(archive, list(specs))
        # Bits differ across CPU models: a draw takes the runs trained on a CPU like this one (or not named).
        like_here = [name for name, made in cpus.items() if made in (None, here)]
        if not args.runs and not like_here:
            print(f"python -m tdlib verify: none of the {len(specs)} runs of {archive} was trained on this CPU "
                  f"({here}; they name {', '.join(sorted({str(c) for c in cpus.values()}))}), so none can be "
                  "reproduced bit for bit here; nothing verified")
            return 0
        names = choose(like_here, args.runs, args.sample, seed) if not args.runs else choose(
            list(specs), args.runs, None, seed)
        if unknown := [str(c) for c in args.claims if not Path(c).exists()]:
            raise VerifyError(f"--claims: no such file or directory: {', '.join(unknown)}")
        for claims in (Path(c) for c in args.claims):  # what they register (a profile, a model) is needed here too
            load_study(claims if claims.is_dir() else claims.parent)
        try:
            profile = PROFILES.named(args.profile) if args.profile else profile_of([specs[n] for n in names])
        except ValueError as error:
            raise VerifyError(f"--profile: {error}") from None
        locate()
    except (VerifyError, DataError) as error:
        print(f"python -m tdlib verify: {error}", file=sys.stderr)
        return 2
    drawn = "" if args.runs else (f" drawn at random from the {len(like_here)} of its {len(specs)} trained on a "
                                  f"CPU like this one (--seed {seed})")
    print(f"verifying {len(names)} run(s) of {archive}{drawn}, under the {profile.name} profile: "
          + ", ".join(names))
    try:
        outcomes = verify_runs(archive, names, profile, args.claims)
    except VerifyError as error:
        print(f"python -m tdlib verify: {error}", file=sys.stderr)
        return 1
    bad = sum(not o.reproduced for o in outcomes)
    print(f"{len(outcomes) - bad} of {len(outcomes)} reproduced" + (f"; {bad} NOT" if bad else ""))
    return 1 if bad else 0


def load_study(claims: Path, required: bool = False) -> None:
    """Import ``claims/conftest.py`` as pytest would (its directory on ``sys.path``), so that what it
    registers (a study's conditions, figures and report sections) is registered here too."""
    import importlib.util
    import sys

    conftest = claims / "conftest.py"
    if not conftest.is_file():
        if required:
            raise SystemExit(f"python -m tdlib train: --claims {claims}: no conftest.py there")
        return
    if str(claims.resolve()) not in sys.path:
        sys.path.insert(0, str(claims.resolve()))
    spec = importlib.util.spec_from_file_location(f"{claims.name}_conftest", conftest)
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


def train(argv: list[str] | None = None) -> None:
    """``python -m tdlib train PROFILE``: train a profile's runs into the cache (``--help`` says how)."""
    import argparse

    from tdlib.executors import ENGINES, describe, train_all
    from tdlib.factories import check_data, check_names
    from tdlib.plan import plan

    parser = argparse.ArgumentParser(prog="python -m tdlib train",
                                     description="Train every run of a profile into the run cache (resumable).")
    parser.add_argument("profile", help="a registered profile: smoke, default, paper, or one the claims directory's "
                        "conftest.py registers")
    parser.add_argument("--cache", default="cache", help="the run cache (default: cache)")
    parser.add_argument("--seeds", default=None, help="a count (5) or a list (0,3,7); default: the profile's")
    parser.add_argument("--sequence", nargs="?", type=int, const=0, default=None, metavar="N",
                        help="train each condition along the profile's sequence (its seeds, then the fresh seeds "
                        "100, 101, ...) to N seeds (default: the profile's budget), condition by condition in the "
                        "order of --conditions; the plan says what each has done and has left. Leaves out the "
                        "report sections' runs")
    parser.add_argument("--claims", default="claims", metavar="DIR",
                        help="a claims directory whose conftest.py registers its study's conditions and report "
                        "sections, as under pytest (default: claims, if it has one)")
    parser.add_argument("--conditions", default=None,
                        help="comma-separated registered conditions (default: every condition of the profile's group, "
                        "'claims' for this study's profiles)")
    parser.add_argument("--no-sections", action="store_true",
                        help="leave out the runs of the report's registered sections (the study's gamma x alpha "
                        "map: one seed per cell, in runs of at most 15 epochs; included by default)")
    parser.add_argument("--engine", choices=ENGINES, default="local", help="where runs train (default: local)")
    parser.add_argument("--workers", type=positive, default=2, help="local worker processes (default: 2)")
    parser.add_argument("--threads", type=positive, default=None,
                        help="torch threads per run (default: 1 for local workers, else the process's)")
    parser.add_argument("--archive", default=None, metavar="DIR",
                        help="a run archive (e.g. archive/paper): its runs the cache lacks are taken from it first, "
                        "and not trained again")
    parser.add_argument("--plan", action="store_true", help="print what would be trained, and stop")
    args = parser.parse_args(argv)
    load_study(Path(args.claims), required=args.claims != "claims")
    try:
        profile = PROFILES.named(args.profile)
        if args.seeds is not None and args.sequence is not None:
            raise ValueError("--seeds and --sequence name the seeds two ways: give one of them")
        if args.seeds is not None:
            profile = profile.with_seeds(parse_seeds(args.seeds))
        names = args.conditions or ",".join(c.name for c in CONDITIONS.values() if c.group == profile.group)
        conditions = [c.strip() for c in names.split(",") if c.strip()]
        if args.sequence is not None:
            if args.sequence < 0:
                raise ValueError(f"--sequence takes a number of seeds, at least 1, got {args.sequence}")
            seeds = profile.sequence(args.sequence or None)
            specs = [profile.spec(name, seed) for name in conditions for seed in seeds]
        else:
            specs = [profile.spec(name, seed) for seed in profile.seeds for name in conditions]
        for spec in {(s.model, s.dataset): s for s in specs}.values():
            check_names(spec)
        if not args.no_sections and args.sequence is None:
            from tdlib.claims.report import section_runs

            specs += [s for s in section_runs(profile) if s not in specs]
        lock_timeout()
    except ValueError as error:
        parser.error(str(error))
    if args.archive is not None:
        from tdlib.claims.archive import restore
        from tdlib.runs import RunCache

        print(restore(Path(args.archive), RunCache(args.cache, progress=False)).restored(Path(args.archive)),
              flush=True)
    planned = plan(specs, Path(args.cache), args.workers, args.engine)
    print(f"{profile.name}: {planned.summary()}", flush=True)
    if args.sequence is not None:
        print(f"sequence: {planned.by_condition()}", flush=True)
    if args.plan:
        return
    if planned.to_train:
        from tdlib.data import DataError

        try:
            check_data(list(planned.to_train))
        except DataError as error:
            raise SystemExit(f"python -m tdlib train: {error}") from None
    results = train_all(specs, args.cache, engine=args.engine, workers=args.workers, threads=args.threads)
    for r in results:
        print(f"{r.name}: {r.final_accuracy:.4f} ({'trained' if r.trained_now else 'cached'}, {r.wall_seconds:.0f} s, "
              f"{r.threads} threads)", flush=True)
    print(describe(results), flush=True)
