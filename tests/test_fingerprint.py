"""The identity of measuring code: it changes with the code a measurement runs (its own, and this project's
that it calls), and not with comments, docstrings, blank lines or libraries' code."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from functools import partial
from pathlib import Path

import pytest

from tdlib.claims import fingerprint
from tdlib.claims.fingerprint import _methods, code_identity

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
    return import_source(tmp_path, name, MODULE.format(scale=scale, comment=comment, change=change))


def import_source(tmp_path: Path, name: str, source: str):
    """``source`` written to ``tmp_path/<name>.py`` and imported as the module ``name``."""
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
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


KERNEL_MODULE = '''
import enum
from dataclasses import dataclass
from functools import cached_property, update_wrapper

from tdlib.claims.fingerprint import follows_methods


def kernel(x):
    return x * 2{kernel}


class Intrinsic:  # as numba's: a callable object that wraps the function generating its code
    def __init__(self, defn):
        update_wrapper(self, defn)

    def __call__(self, *args):
        raise NotImplementedError


def _codegen():
    return "fma"{intrinsic}


fma = Intrinsic(_codegen)


def _store(x):
    return x{setter}


def _half(x):
    return x / 2{static}


def _scale_of(x):
    return float(x){classmethod}


class Base:
    def prepare(self, x):
        return x{base}


class Kind(enum.Enum):
    DENSE = 0


@dataclass
class Runner(Base):
    scale: float = 1.0

    def __call__(self, x):
        return kernel(self.prepare(x)) * self.scale

    @cached_property
    def code(self):
        return fma

    @property
    def value(self):
        return self.scale

    @value.setter
    def value(self, x):
        self.scale = _store(x)

    @staticmethod
    def helper(x):
        return _half(x)

    @classmethod
    def make(cls, x):
        return cls(_scale_of(x))

    def kind(self):
        return Kind.DENSE


def timing(run, model):
    return Runner()(model)


@follows_methods
def deep_timing(run, model):
    return Runner()(model)
'''


# Each place of KERNEL_MODULE a change can go, by what it changes: (the place, the change)
KERNEL_CHANGES = {
    "a kernel a method calls": ("kernel", " + 1"),
    "an intrinsic's generator": ("intrinsic", " + '!'"),
    "an own base class": ("base", " + 1"),
    "a property's setter": ("setter", " + 1"),
    "a static method": ("static", " + 1"),
    "a class method": ("classmethod", " + 1"),
}


def load_kernels(tmp_path: Path, name: str, **changes: str):
    unchanged = {place: "" for place, _ in KERNEL_CHANGES.values()}
    return import_source(tmp_path, name, KERNEL_MODULE.format(**{**unchanged, **changes}))


@pytest.mark.parametrize("change", [dict([c]) for c in KERNEL_CHANGES.values()], ids=list(KERNEL_CHANGES))
def test_a_timing_follows_the_methods_of_the_classes_it_reaches(tmp_path: Path, change: dict) -> None:
    # A class is hashed as its source; the functions its methods call are followed only for a measurement
    # marked follows_methods (the timings), so that the archived sizes and accuracies keep the identities
    # they were stored under.
    before = load_kernels(tmp_path, "fp_kernels")
    deep, shallow = code_identity(before.deep_timing), code_identity(before.timing)
    (tmp_path / "again").mkdir()
    after = load_kernels(tmp_path / "again", "fp_kernels", **change)
    assert code_identity(after.deep_timing) != deep
    assert code_identity(after.timing) == shallow
    assert code_identity(partial(after.deep_timing, model=1)) == code_identity(after.deep_timing)  # as stored


def test_following_methods_leaves_out_what_a_decorator_generates_and_the_standard_library(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # dataclass's __init__, __repr__ and __eq__ have no source, an Enum's methods are the standard library's:
    # both differ from one Python version to another
    module = load_kernels(tmp_path, "fp_generated")
    assert sorted(f.__name__ for f in _methods(module.Runner)) == ["__call__", "code", "helper", "kind", "make",
                                                                  "value", "value"]
    assert _methods(module.Kind) == []
    hashed = []
    source = fingerprint._source
    monkeypatch.setattr(fingerprint, "_source", lambda obj: hashed.append(obj) or source(obj))
    code_identity(module.deep_timing)
    assert {obj.__module__ for obj in hashed} == {"fp_generated"}  # Kind's base, Enum, is not followed
    assert module.Kind in hashed and module.Base in hashed
