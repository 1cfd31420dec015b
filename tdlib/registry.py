"""A registry of named recipes (training conditions, pruning kinds): a dict from name to entry that
refuses a second, different entry under a name it holds, and names what it holds when asked for another."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, Protocol, TypeVar


class Named(Protocol):
    name: str
    description: str


T = TypeVar("T", bound=Named)


class Registry(dict[str, T], Generic[T]):
    """``noun`` names an entry in the refusal ("condition 'X' is already registered as ..."), ``option``
    the name asked for in a lookup's error ("kind must be one of ..., got 'Y'"); ``listed`` shows the
    names held there (in registration order by default)."""

    def __init__(self, noun: str, option: str, listed: Callable[[Iterable[str]], object] = tuple) -> None:
        super().__init__()
        self.noun, self.option, self.listed = noun, option, listed

    def copy(self) -> Registry[T]:  # type: ignore[override]
        """A registry of the same entries and messages (dict's copy would be a plain dict)."""
        duplicate: Registry[T] = Registry(self.noun, self.option, self.listed)
        duplicate.update(self)
        return duplicate

    def register(self, entry: T, replace: bool = False) -> T:
        """Add ``entry``; another of the same name is refused unless ``replace`` (the same one is harmless)."""
        known = self.get(entry.name)
        if known is not None and known != entry and not replace:
            raise ValueError(f"{self.noun} {entry.name!r} is already registered as {known.description!r}")
        self[entry.name] = entry
        return entry

    def named(self, name: str) -> T:
        """The entry ``name``; ``ValueError`` naming the registered ones otherwise."""
        if name not in self:
            raise ValueError(f"{self.option} must be one of {self.listed(self)}, got {name!r}")
        return self[name]
