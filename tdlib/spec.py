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

# The registered network and data set a run names by default (:mod:`tdlib.factories`): this study's.
DEFAULT_MODEL = "mlp"
DEFAULT_DATASET = "fashion-mnist"


@dataclass(frozen=True)
class DataSpec:
    """Which images a run sees: all of them (``None``) or a class-balanced seeded subset."""

    n_train: int | None = None
    n_test: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_train", "n_test"):
            value = getattr(self, name)
            if value is not None and not (_is_int(value) and value >= 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        if not (_is_int(self.seed) and self.seed >= 0):
            raise ValueError(f"the data's seed must be a non-negative integer, got {self.seed!r}")


def _is_int(value: object) -> bool:
    """An integer, and not a bool (which Python counts as one): ``"0"``, ``0.7`` and ``True`` are not seeds."""
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class RunSpec:
    """Everything that decides a trained model. Same description, same bits (on one machine)."""

    condition: str
    seed: int
    epochs: int
    batch_size: int = 256
    lr: float = 1e-3
    bias: bool = True
    hidden: tuple[int, ...] = PAPER_HIDDEN  # the MLP's hidden widths (what the "mlp" model reads)
    dropout: float = 0.0  # standard dropout on hidden units
    targeted: TargetedDropout | None = None
    data: DataSpec = DataSpec()
    checkpoints: tuple[int, ...] = ()  # epochs after which to keep the weights; 0 is the initialisation
    device: str = "cpu"  # where it trains; bit-identical results are promised on the CPU only
    model: str = DEFAULT_MODEL  # a registered network (tdlib.factories.MODELS)
    dataset: str = DEFAULT_DATASET  # a registered data set (tdlib.factories.DATASETS)

    def __post_init__(self) -> None:
        if (not isinstance(self.condition, str) or not self.condition
                or not self.condition.replace("-", "").replace("_", "").isalnum()):
            raise ValueError(f"condition must be a short name of letters, digits, - and _, got {self.condition!r}")
        # A seed given as "0" or 0.7 would train seed 0's weights under another name.
        if not (_is_int(self.seed) and self.seed >= 0):
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        for name in ("epochs", "batch_size"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not 0 < self.lr < float("inf"):
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")
        if not isinstance(self.bias, bool):
            raise ValueError(f"bias must be True or False, got {self.bias!r}")
        if not isinstance(self.hidden, tuple) or not self.hidden or not all(_is_int(h) and h >= 1 for h in self.hidden):
            raise ValueError(f"hidden must be a non-empty tuple of positive integers, got {self.hidden!r}")
        for name in ("model", "dataset"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or not value.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"{name} must be a registered name of letters, digits, - and _, got {value!r}")
        if not isinstance(self.data, DataSpec):
            raise ValueError(f"data must be a DataSpec, got {self.data!r}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be 'cpu' or 'cuda[:n]', got {self.device!r}")
        if (isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float))
                or not 0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}")
        if self.targeted is not None and not isinstance(self.targeted, TargetedDropout):
            raise ValueError(f"targeted must be a TargetedDropout or None, got {self.targeted!r}")
        bad = [e for e in self.checkpoints if not (_is_int(e) and 0 <= e <= self.epochs)]
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
        """Every field, but ``model`` and ``dataset`` only where they are not the defaults: a run of this
        study's MLP on Fashion-MNIST keeps the key it had before runs could name them."""
        fields = asdict(self)
        for name, default in (("model", DEFAULT_MODEL), ("dataset", DEFAULT_DATASET)):
            if fields[name] == default:
                del fields[name]
        return fields

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
