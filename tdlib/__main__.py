"""``python -m tdlib``: the run cache, training a profile, and compressing a cached run, from the shell.

The commands of the ML library (``runs``, ``compress``) are here; those of the claims framework (``train``,
``findings``, ``report``) are in :mod:`tdlib.claims.cli`.

    python -m tdlib runs [--cache DIR] [--verify]          list the cached runs (and check every file)
    python -m tdlib train PROFILE [options]                train a profile's runs (see ``train --help``)
    python -m tdlib compress RUN --kind weight --k 99 -o tw.safetensors
                                                           prune a cached run and save it compressed
    python -m tdlib findings reports/claims.json [--readme README.md] [--block NAME]
                                                           the README's verdict table, from a report
    python -m tdlib report reports/CLAIMS.md [--profile default] [--claims claims]
                                                           draw a report again from stored evidence alone
    python -m tdlib verify archive/paper --sample 2        train archived runs again and compare them with it

The claims report itself comes from the pytest plugin: ``pytest claims --claims-report reports/CLAIMS.md``,
which trains and measures what it lacks; ``report`` runs the same with ``--claims-stored-only``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tdlib.claims import cli
from tdlib.prune import PRUNINGS
from tdlib.runs import ARCHIVED, RECORD, RunCache
from tdlib.spec import DEFAULT_MODEL, RunSpec


def _cached_specs(cache: Path) -> list[tuple[Path, RunSpec | None, str]]:
    """(directory, spec or None, what went wrong) for every entry with a record, in name order."""
    entries = []
    for record in sorted(cache.glob(f"*/{RECORD}")):
        try:
            entries.append((record.parent, RunSpec.from_json(json.loads(record.read_text())["spec"]), ""))
        except (OSError, ValueError, KeyError, TypeError) as error:
            entries.append((record.parent, None, f"unreadable record ({error})"))
    return entries


def runs(args: argparse.Namespace) -> int:
    cache_dir = Path(args.cache)
    if not cache_dir.is_dir():
        print(f"no run cache at {cache_dir}", file=sys.stderr)
        return 1
    cache, bad = RunCache(cache_dir, progress=False), 0
    for directory, spec, problem in _cached_specs(cache_dir):
        run = None
        if spec is not None:
            run = cache.cached(spec) if args.verify else None
            if args.verify and run is None:
                problem = "FAILS its checks (python -m tdlib train, or the claims run, retrains it)"
        if problem:
            bad += 1
            print(f"{directory.name}: {problem}")
            continue
        record = run.record if run is not None else json.loads((directory / RECORD).read_text())
        history = json.loads((directory / "history.json").read_text()) if (directory / "history.json").exists() else []
        accuracy = f"{history[-1]['test_accuracy']:.4f}" if history else "n/a"
        print(f"{directory.name}: {spec.epochs} epochs, test accuracy {accuracy}, "  # type: ignore[union-attr]
              f"{record.get('threads', '?')} threads, {record['wall_seconds']:.0f} s, "
              f"code {record['provenance']['code_version']}"
              + (", archived: its record and history verified, its weights not here" if (directory / ARCHIVED).exists()
                 else ", verified" if args.verify else ""))
    return 1 if bad else 0


def compress_run(args: argparse.Namespace) -> int:
    from tdlib.compress import compress, save
    from tdlib.data import DataError, load_fashion_mnist
    from tdlib.metrics import masks_for

    output = Path(args.output)
    if not output.parent.is_dir():  # checked before the run is loaded and its layouts timed
        print(f"python -m tdlib compress: -o {args.output}: no directory {output.parent} to write it in",
              file=sys.stderr)
        return 2
    directory = Path(args.run) if Path(args.run).is_dir() else Path(args.cache) / args.run
    try:
        spec = RunSpec.from_json(json.loads((directory / RECORD).read_text())["spec"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        print(f"{directory}: not a finished run of the cache ({error})", file=sys.stderr)
        return 1
    if spec.model != DEFAULT_MODEL:
        print(f"{directory}: a run of the model {spec.model!r}; compress shrinks tdlib's MLP ({DEFAULT_MODEL!r}) only",
              file=sys.stderr)
        return 2
    run = RunCache(directory.parent, progress=False).cached(spec)
    if run is None:
        print(f"{directory}: the run fails its checks; train it again first", file=sys.stderr)
        return 1
    try:
        sample = load_fashion_mnist().train_x[:256] if args.timed_on == "images" else None
    except DataError as error:
        print(f"{error}\n(--timed-on random times the layouts without the images)", file=sys.stderr)
        return 1
    model = run.model()
    small = compress(model, masks_for(model, args.kind, args.k, spec.seed), batch=args.batch, sample=sample)
    save(small, args.output)
    print(f"{spec.name}, {args.kind} pruning {args.k:g}%: {small.parameter_count():,} parameters, {small.form} "
          f"(fastest at batch {args.batch} on {'images' if sample is not None else 'random inputs'}) -> {args.output}")
    return 0


def _percent(text: str) -> float:
    """A percentage in [0, 100], for argparse: anything else is a usage error naming the option."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a percentage is a number, got {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"a percentage lies in [0, 100], got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:  # handed whole to the profile trainer, --help included
        cli.train(argv[1:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m tdlib", description="The run cache, training a profile, "
                                     "compressing a cached run, and drawing a report from stored evidence, from the "
                                     "shell.")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("runs", help="list the cached runs; --verify checks every file")
    listing.add_argument("--cache", default="cache", help="the run cache (default: cache)")
    listing.add_argument("--verify", action="store_true", help="check every file against its record")
    listing.set_defaults(handler=runs)
    commands.add_parser("train", help="train a profile's runs (python -m tdlib train --help)")
    packing = commands.add_parser("compress", help="prune a cached run and save it compressed")
    packing.add_argument("run", help="a run's directory, or its name in --cache")
    packing.add_argument("--cache", default="cache", help="the run cache the run is named in (default: cache)")
    packing.add_argument("--kind", choices=sorted(PRUNINGS), default="weight", metavar="KIND",
                         help=f"how to prune: {', '.join(sorted(PRUNINGS))} (default: weight)")
    packing.add_argument("--k", type=_percent, required=True, help="percent pruned, in [0, 100]")
    packing.add_argument("--batch", type=cli.positive, default=1,
                         help="the batch size to choose the fastest layout for (default: 1)")
    packing.add_argument("--timed-on", choices=["images", "random"], default="images",
                         help="choose the layout on 256 Fashion-MNIST training images (default), whose blank "
                              "pixels a dense first layer can skip, or on uniform random inputs")
    packing.add_argument("-o", "--output", required=True, help="the .safetensors file to write (tdlib.compress.load "
                         "reads it back as an nn.Module)")
    packing.set_defaults(handler=compress_run)
    found = commands.add_parser("findings", help="write a report's verdict table and figure into a README's "
                                "findings block")
    found.add_argument("report", help="the report's claims.json (e.g. reports/claims.json)")
    found.add_argument("--readme", default="README.md", help="the README to write into (default: README.md)")
    found.add_argument("--block", default="", help="the block's name in its markers, '<!-- findings NAME: start "
                       "-->' (default: the unnamed block, '<!-- findings: start -->')")
    found.set_defaults(handler=cli.findings)
    about = ("judge the claims and draw their report again from stored evidence alone: nothing is trained or "
             "measured, and missing evidence is an error (pytest with --claims-stored-only)")
    drawing = commands.add_parser("report", help=about, description=about)
    drawing.add_argument("report", help="where the report goes, e.g. reports/CLAIMS.md")
    drawing.add_argument("--claims", nargs="+", default=["claims"], help="the claim files or directories (default: "
                         "claims)")
    drawing.add_argument("--profile", default="default",
                         help="the profile the report was trained under: smoke, default (the default), paper, or one "
                         "the claims' conftest.py registers")
    drawing.add_argument("--seeds", default=None, help="as pytest's --claims-seeds (default: the profile's)")
    drawing.add_argument("--cache", default=None, help="the run cache (default: cache/ under pytest's rootdir)")
    drawing.add_argument("--archive", default=None, help="a run archive to take the runs the cache lacks from "
                         "(e.g. archive/paper)")
    drawing.set_defaults(handler=cli.report)
    about = ("train archived runs again from scratch (at the thread count each record names) and check every "
             "certified weight file bit for bit, the history and every stored measurement; one line a run")
    checking = commands.add_parser("verify", help=about, description=about)
    checking.add_argument("archive", help="a run archive, e.g. archive/paper")
    checking.add_argument("runs", nargs="*", help="the runs to verify, by name (default: --sample 1)")
    checking.add_argument("--sample", type=cli.positive, default=None, help="verify N runs drawn at random")
    checking.add_argument("--seed", type=int, default=None, help="the seed of the draw (default: a random one, "
                          "printed, so that the same draw can be asked for again)")
    checking.add_argument("--profile", default=None,
                          help="the profile the runs were trained under: smoke, default, paper, or one the claims' "
                          "conftest.py registers (default: the one whose training they share)")
    checking.add_argument("--claims", nargs="+", default=["claims"], help="the claim files or directories that "
                          "measure them (default: claims)")
    checking.set_defaults(handler=cli.verify)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
