"""Profiles: how much training a claims run does, and the training conditions of ``claims.md``.

- ``smoke``: a small class-balanced subset, two epochs, two seeds; for CI (a few minutes in all).
- ``default``: all of Fashion-MNIST, 15 epochs, five seeds; a cold run takes about 45 minutes on a
  2-core CPU.
- ``paper``: the writeup's 100 epochs, five seeds; for a GPU or a patient user.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from tdlib.conditions import CONDITIONS, condition
from tdlib.spec import DataSpec, RunSpec


@dataclass(frozen=True)
class Profile:
    """How a claims run trains: data, epochs, batch, seeds, and the floor the baseline must clear."""

    name: str
    epochs: int
    seeds: tuple[int, ...]
    batch_size: int = 256
    data: DataSpec = field(default_factory=DataSpec)
    accuracy_floor: float = 0.8  # B's dense test accuracy below this means the evidence is broken

    def with_seeds(self, seeds: tuple[int, ...]) -> Profile:
        return replace(self, seeds=seeds)

    @property
    def checkpoints(self) -> tuple[int, ...]:
        """The epochs at which B keeps its weights: every tenth of the run, and the start and end."""
        return tuple(sorted({round(i * self.epochs / 10) for i in range(11)}))

    @property
    def tenth(self) -> int:
        """The checkpoint closest to a tenth of training (C7), at least one epoch in."""
        return max(1, round(self.epochs / 10))

    @property
    def half(self) -> int:
        """The checkpoint closest to half of training (C8)."""
        return round(self.epochs / 2)

    def spec(self, condition_name: str, seed: int, device: str = "cpu") -> RunSpec:
        """The run description of the registered condition ``condition_name`` at ``seed``."""
        recipe = condition(condition_name)
        return RunSpec(
            recipe.name, seed, self.epochs, batch_size=self.batch_size, bias=recipe.bias, dropout=recipe.dropout,
            targeted=recipe.targeted, data=self.data, checkpoints=self.checkpoints if recipe.checkpoints else (),
            device=device,
        )

    def describe(self) -> dict[str, object]:
        return {
            "profile": self.name,
            "epochs": self.epochs,
            "batch size": self.batch_size,
            "training images": self.data.n_train or 60_000,
            "test images": self.data.n_test or 10_000,
            "seeds": list(self.seeds),
            "optimizer": "Adam, lr 1e-3, cross-entropy",
            "baseline accuracy floor": self.accuracy_floor,
        }


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"5"`` -> (0, 1, 2, 3, 4); ``"0,3,7"`` -> (0, 3, 7). Raises ``ValueError`` naming ``--seeds``."""
    try:
        seeds = tuple(range(int(text))) if "," not in text else tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ValueError(f"--seeds must be a count or a comma-separated list of integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"--seeds must name distinct non-negative seeds, got {text!r}")
    return seeds


PROFILES: dict[str, Profile] = {
    "smoke": Profile("smoke", epochs=2, seeds=(0, 1), batch_size=64,
                     data=DataSpec(n_train=2000, n_test=2000, seed=0), accuracy_floor=0.5),
    "default": Profile("default", epochs=15, seeds=(0, 1, 2, 3, 4), accuracy_floor=0.85),
    "paper": Profile("paper", epochs=100, seeds=(0, 1, 2, 3, 4), accuracy_floor=0.85),
}


def main() -> None:
    """``python -m tdlib.profiles PROFILE [CACHE_DIR]``: train every run of a profile into the cache."""
    import sys

    from tdlib.runs import RunCache

    profile = PROFILES[sys.argv[1]]
    cache = RunCache(sys.argv[2] if len(sys.argv) > 2 else "cache")
    for seed in profile.seeds:
        for name in CONDITIONS:
            run = cache.get(profile.spec(name, seed))
            print(f"{run.spec.name}: {run.final_accuracy:.4f} ({'trained' if run.trained_now else 'cached'}, "
                  f"{run.record['wall_seconds']:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
