"""The identity of measuring code: it changes with the code a measurement runs (its own, and this project's
that it calls), and not with comments, docstrings, blank lines or libraries' code."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

from tdlib.claims.fingerprint import code_identity

MODULE = '''
import numpy as np

SCALE = {scale}


def helper(x):
    """What the measurement calls."""{comment}
    return np.mean(x) * SCALE{change}


def measurement(run, model):
    return helper(model)


def with_closure(k):
    def inner(run, model):
        return helper(model) + k
    return inner
'''


def load(tmp_path: Path, name: str, scale: int = 100, comment: str = "", change: str = ""):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(MODULE.format(scale=scale, comment=comment, change=change)))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def base(tmp_path: Path):
    return load(tmp_path, "fp_base")


def test_the_same_code_has_the_same_identity_whatever_its_module_is_named(base, tmp_path: Path) -> None:
    # pytest imports a claims file under a name that depends on how it was invoked.
    other = load(tmp_path, "fp_other")
    assert code_identity(other.measurement) == code_identity(base.measurement)
    assert code_identity(other.with_closure(1)) != code_identity(base.measurement)


@pytest.mark.parametrize(("changes", "same"), [
    ({"comment": "\n    # a comment, and a blank line\n"}, True),
    ({"change": "  # a trailing comment"}, True),
    ({"change": " + 0"}, False),  # the helper it calls computes something else
    ({"scale": 101}, False),  # a constant it reads
])
def test_a_change_to_what_it_runs_changes_it_and_nothing_else_does(tmp_path: Path, changes: dict,
                                                                     same: bool) -> None:
    before = load(tmp_path, "fp_changed")
    identity = code_identity(before.measurement)
    (tmp_path / "again").mkdir()
    after = load(tmp_path / "again", "fp_changed", **changes)
    assert (code_identity(after.measurement) == identity) is same


def test_closures_are_followed_and_their_plain_values_left_out(base) -> None:
    assert code_identity(base.with_closure(1)) == code_identity(base.with_closure(2))  # the key names k
    assert code_identity(base.with_closure(1)) != code_identity(base.measurement)


def test_tdlibs_own_code_is_followed_into_other_modules() -> None:
    from tdlib import metrics

    def measured(run, model):
        return metrics.accuracy(model, None, None)

    def measured_other(run, model):
        return metrics.pruning_sweep(model, "weight", None, None, ())

    assert code_identity(measured) != code_identity(measured_other)
