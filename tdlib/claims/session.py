"""A claims session's settings: what the ``--claims-*`` options ask for, checked once, in one object.

The plugin makes one :class:`ClaimsSession` from pytest's options before any work (a bad option is one usage
error); everything after reads it, and the session's :class:`~tdlib.claims.evidence.Evidence` is made by it,
read as the options say (:class:`~tdlib.claims.evidence.Reading`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tdlib.claims.profiles import Profile

if TYPE_CHECKING:
    from tdlib.claims.evidence import Evidence, Reading
    from tdlib.executors import Engine
    from tdlib.runs import RunCache


@dataclass(frozen=True)
class ClaimsSession:
    """The checked options of one claims session."""

    profile: Profile  # with the seeds and budget the options give
    cache: Path  # the run cache
    device: str = "cpu"
    report: Path | None = None  # where the report goes (None: no report)
    executor: Engine = "local"
    workers: int = 2
    follow: bool = False  # --claims-continue: the sequence goes on while parts are open
    stored_only: bool = False  # --claims-stored-only: nothing trained or measured
    measure_finished: bool = False  # --claims-measure-finished: the finished runs measured, no report
    archive: Path | None = None  # runs taken from it first, and the finished ones written back

    @property
    def reading(self) -> Reading:
        """How the session's evidence is read."""
        from tdlib.claims.evidence import Reading

        if self.stored_only:
            return Reading.STORED_ONLY
        return Reading.FINISHED if self.measure_finished else Reading.TRAIN

    def evidence(self, cache: RunCache) -> Evidence:
        """The session's evidence: the profile's runs in ``cache``, read as the options say."""
        from tdlib.claims.evidence import Evidence

        return Evidence(self.profile, cache, device=self.device, reading=self.reading)
