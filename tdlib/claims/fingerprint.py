"""The identity of the code that takes a measurement, so that a stored number is tied to what computed it.

:func:`code_identity` hashes a measuring function's source together with the source of every function and
class it reaches through its globals and closures that this project or its user wrote (tdlib, a claims file:
any module not installed as a library), and the small constants it reads (a tuple of sparsities, a
threshold). So a change to ``tdlib.metrics.accuracy`` changes the identity of every measurement that calls
it, and of nothing else; a change to a comment, a docstring or a blank line changes none. The source is
read as tokens, not as bytecode, so the identity is the same on every Python version that reads the file.

Closure values that are plain data (the ``k`` of a pruning) are left out: a stored key names them already.
Module names are left out too: pytest imports a claims file under a name that depends on how it was invoked.

A class counts as its own source: the functions its methods call are not followed, so a change to a compiled
kernel that only a method calls (``tdlib.compress.chain._run_one``, under ``Chain.__call__``) changes no
identity. A measuring function marked :func:`follows_methods` also follows, from every class it reaches, the
methods written in the class's body (their calls, kernels included, and their closures) and its own base
classes. The timings are marked: what they measure is the speed of those kernels. The sizes and accuracies
of the archived runs keep the rule they were stored under, and their runs keep no weights to measure them
again; a change to such a kernel's arithmetic, which could move what they measured, has to be checked
against them by hand.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import io
import sys
import sysconfig
import textwrap
import tokenize
import types
from collections.abc import Callable
from functools import cached_property, lru_cache, partial, partialmethod
from pathlib import Path
from typing import Any

PLAIN = (bool, int, float, str, bytes, type(None))
_SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}
FSTRING_START, FSTRING_END = (getattr(tokenize, name, -1) for name in ("FSTRING_START", "FSTRING_END"))


def _own(obj: Any) -> bool:
    """Whether ``obj`` is code this project or its user wrote (tdlib, a claims file, a conftest), not a library's
    (an installed package, the standard library, a builtin): the code whose changes change a measurement."""
    module = getattr(obj, "__module__", None) or ""
    if module == "tdlib" or module.startswith("tdlib."):
        return True
    return _user_module(module)


@lru_cache(maxsize=1024)
def _user_module(name: str) -> bool:
    file = getattr(sys.modules.get(name), "__file__", None)
    if not file:
        return False
    path = Path(file).resolve()
    if {"site-packages", "dist-packages"} & set(path.parts):
        return False
    return not path.is_relative_to(Path(sysconfig.get_paths()["stdlib"]).resolve())


@lru_cache(maxsize=4096)
def _tokens(source: str) -> str:
    """``source`` as its significant tokens, docstrings, comments and blank lines left out; indentation kept
    as markers (it is the structure). Joined without separators, so that tokenizers that split an f-string
    into parts (Python 3.12) give the same text as those that do not. Source that does not tokenize alone (a
    lambda's lines, cut mid-expression) is kept as its words."""
    source = textwrap.dedent(source)
    try:
        tree = ast.parse(source)
    except SyntaxError:
        docstrings: set[int] = set()
    else:
        docstrings = {node.body[0].lineno for node in ast.walk(tree)
                      if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
                      and node.body and isinstance(node.body[0], ast.Expr)
                      and isinstance(node.body[0].value, ast.Constant) and isinstance(node.body[0].value.value, str)}
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return " ".join(source.split())
    marks = {tokenize.INDENT: ">", tokenize.DEDENT: "<", tokenize.NEWLINE: "\n"}
    out, depth = [], 0  # depth: inside an f-string that the tokenizer splits (3.12), whose parts join as one
    for t in tokens:
        if t.type in _SKIP or (t.type == tokenize.STRING and t.start[0] in docstrings):
            continue
        text = marks.get(t.type, t.string)
        if t.type == FSTRING_START:
            depth += 1
        out.append(text if depth else f"{text} ")
        if t.type == FSTRING_END:
            depth -= 1
            out[-1] += " "
    return "".join(out)


def _source(obj: Any) -> str:
    try:
        return _tokens(inspect.getsource(obj))
    except (OSError, TypeError):
        return f"<no source: {getattr(obj, '__qualname__', type(obj).__name__)}>"


def _code_objects(code: types.CodeType) -> list[types.CodeType]:
    found = [code]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found += _code_objects(const)
    return found


def _plain(value: Any) -> bool:
    if isinstance(value, PLAIN):
        return True
    return isinstance(value, tuple | frozenset) and len(value) <= 64 and all(isinstance(v, PLAIN) for v in value)


FOLLOWS_METHODS = "__identity_follows_methods__"


def follows_methods(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark the measuring function ``fn`` so that its identity also follows the methods of the classes it
    reaches, and their own base classes (see the module docstring)."""
    setattr(fn, FOLLOWS_METHODS, True)
    return fn


def _methods(cls: type) -> list[Callable[..., Any]]:
    """What ``cls``'s body defines to be called, as this project or its user wrote it: methods, static and
    class methods, partial methods, the accessors of properties and cached properties, compiled kernels
    assigned there. Not what a decorator such as ``dataclass`` generates (compiled from a string, it has no
    source file, and differs between Python versions), nor what a class takes from the standard library
    (an ``Enum``'s ``__new__``)."""
    found = []
    for name, value in vars(cls).items():
        if name == "__annotate__":  # made by the compiler for annotations (Python 3.14), not written
            continue
        if isinstance(value, staticmethod | classmethod | partialmethod):
            candidates = [getattr(value, "__func__", None) or value.func]
        elif isinstance(value, property):
            candidates = [value.fget, value.fset, value.fdel]
        elif isinstance(value, cached_property):
            candidates = [value.func]
        else:
            candidates = [value]
        for candidate in candidates:
            if not callable(candidate) or isinstance(candidate, type):
                continue
            try:
                inner = inspect.unwrap(candidate)
            except ValueError:  # a cycle of __wrapped__
                continue
            code = getattr(inner, "__code__", None)
            if _own(inner) and (code is None or not code.co_filename.startswith("<")):
                found.append(candidate)
    return found


def code_identity(fn: Callable[..., Any]) -> str:
    """A short hash of ``fn``'s code and of this project's code it reaches (see the module docstring)."""
    seen: dict[int, str] = {}
    parts: list[str] = []
    root = fn
    while isinstance(root, partial):
        root = root.func
    deep = bool(getattr(inspect.unwrap(root), FOLLOWS_METHODS, False))

    def visit(obj: Any) -> None:
        obj = inspect.unwrap(obj) if callable(obj) else obj
        if isinstance(obj, types.MethodType):
            obj = obj.__func__
        if isinstance(obj, partial):
            visit(obj.func)
            return
        if id(obj) in seen:
            return
        seen[id(obj)] = ""
        if isinstance(obj, type):
            parts.append(f"class {obj.__qualname__}:{_source(obj)}")
            if deep:
                for base in obj.__bases__:
                    if _own(base):
                        visit(base)
                for method in _methods(obj):
                    visit(method)
            return
        if not isinstance(obj, types.FunctionType):
            dispatched = getattr(obj, "py_func", None)  # a numba dispatcher: its Python source is the code
            if dispatched is not None:
                visit(dispatched)
            return
        parts.append(f"def {obj.__qualname__}:{_source(obj)}")
        names = {name for code in _code_objects(obj.__code__) for name in code.co_names}
        for name in sorted(names):
            if name not in obj.__globals__:
                continue
            value = obj.__globals__[name]
            if isinstance(value, types.ModuleType):
                if value.__name__.startswith("tdlib"):  # module.attribute: follow the attributes named
                    for attribute in sorted(names):
                        inner = getattr(value, attribute, None)
                        if inner is not None and not isinstance(inner, types.ModuleType) and _own(inner):
                            visit(inner)
                continue
            if _plain(value):
                parts.append(f"{obj.__qualname__}: {name}={value!r}")
            elif _own(value) and (callable(value) or isinstance(value, type)):
                visit(value)
        for cell in obj.__closure__ or ():
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if callable(value) and _own(value):
                visit(value)

    visit(fn)
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()[:16]

