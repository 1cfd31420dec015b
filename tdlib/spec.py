"""Run descriptions: small frozen dataclasses whose content hash names a run in the cache."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace

from tdlib.dropout import TargetedDropout
from tdlib.model import PAPER_HIDDEN
from tdlib.schedules import Schedule

# Bump when training changes meaning, so that runs cached by older code are not reused.
# 2: writing a checkpoint no longer draws from the training generator (format 1's uninterrupted runs with
#    checkpoints differed from their resumed twins), and a run keeps its final training state.
TRAINING_FORMAT = 2


@dataclass(frozen=True)
class DataSpec:
    """Which images a run sees: all of them (``None``) or a class-balanced seeded subset."""

    n_train: int | None = None
    n_test: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class RunSpec:
    """Everything that decides a trained model. Same description, same bits (on one machine)."""

    condition: str
    seed: int
    epochs: int
    batch_size: int = 256
    lr: float = 1e-3
    bias: bool = True
    hidden: tuple[int, ...] = PAPER_HIDDEN
    dropout: float = 0.0  # standard dropout on hidden units
    targeted: TargetedDropout | None = None
    data: DataSpec = DataSpec()
    checkpoints: tuple[int, ...] = ()  # epochs after which to keep the weights; 0 is the initialisation
    device: str = "cpu"  # where it trains; bit-identical results are promised on the CPU only

    def __post_init__(self) -> None:
        if not self.condition or not self.condition.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"condition must be a short name of letters, digits, - and _, got {self.condition!r}")
        for name in ("epochs", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be 'cpu' or 'cuda[:n]', got {self.device!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}")
        bad = [e for e in self.checkpoints if not 0 <= e <= self.epochs]
        if bad or list(self.checkpoints) != sorted(set(self.checkpoints)):
            raise ValueError(
                f"checkpoints must be distinct ascending epochs in [0, {self.epochs}], got {self.checkpoints!r}"
            )

    @property
    def length_independent(self) -> bool:
        """True if no step depends on how long the run is (no schedule ramps over the run's progress)."""
        return self.targeted is None or self.targeted.length_independent

    def continues(self, shorter: RunSpec) -> bool:
        """True if this run is ``shorter`` trained for more epochs, so it can start from ``shorter``'s end.

        Everything but the epochs and the checkpoints must agree, no schedule may depend on the run's
        length, and every checkpoint this run wants up to ``shorter.epochs`` must be one ``shorter`` kept.
        """
        return (
            self.length_independent
            and shorter.epochs < self.epochs
            and replace(shorter, epochs=self.epochs, checkpoints=self.checkpoints) == self
            and {e for e in self.checkpoints if e <= shorter.epochs} <= set(shorter.checkpoints)
        )

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> RunSpec:
        """The description :meth:`to_json` gave (raises ``TypeError``/``KeyError``/``ValueError`` if it is not one)."""
        fields = dict(data)
        fields["hidden"] = tuple(fields["hidden"])
        fields["checkpoints"] = tuple(fields["checkpoints"])
        fields["data"] = DataSpec(**fields["data"])
        if fields.get("targeted") is not None:
            t = fields["targeted"]
            gamma, alpha = (Schedule(t[k]["name"], tuple(map(tuple, t[k]["knots"]))) for k in ("gamma", "alpha"))
            fields["targeted"] = TargetedDropout(t["level"], gamma, alpha)
        return cls(**fields)

    def key(self) -> str:
        """A 16-hex-digit hash of the description (and of :data:`TRAINING_FORMAT`)."""
        payload = json.dumps({"format": TRAINING_FORMAT, "spec": self.to_json()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @property
    def name(self) -> str:
        """The run's directory name: readable condition and seed, then the hash."""
        return f"{self.condition}-s{self.seed}-{self.key()}"
