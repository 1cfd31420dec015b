"""Profiles: how much training a claims run does (the conditions it trains are in :mod:`tdlib.claims.conditions`).

- ``smoke``: a small class-balanced subset (2,000 training images, 500 test images), two epochs, two seeds,
  an MLP a tenth as wide as the writeup's (100, 100, 50, 20: the same four hidden layers, 1/25 of the
  weights), and speed-ups timed for a hundredth of a report's time (they show that every path runs, not
  what pruning buys); for CI (a few minutes in all).
- ``default``: all of Fashion-MNIST, 15 epochs, five seeds; a cold run (8 conditions) takes about 2.5 hours on a
  2-core CPU.
- ``paper``: the writeup's 100 epochs, five seeds; for a GPU or a patient user.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from tdlib.claims.conditions import condition
from tdlib.model import PAPER_HIDDEN
from tdlib.registry import Registry
from tdlib.spec import DataSpec, RunSpec

# The first fresh seed: every profile's own seeds lie below it, so that its sequence never meets them twice.
FRESH_SEEDS_FROM = 100

# Epochs every B run keeps when it is that long: the default profile's end, and the marks at which the
# paper report shows the verdicts by training length.
MARKS = (15, 30, 50, 100)


@dataclass(frozen=True)
class Profile:
    """How a claims run trains: data, epochs, batch, seeds, and the floor the baseline must clear."""

    name: str
    epochs: int
    seeds: tuple[int, ...]
    batch_size: int = 256
    data: DataSpec = field(default_factory=DataSpec)
    accuracy_floor: float = 0.8  # B's dense test accuracy below this means the evidence is broken
    budget: int = 0  # the most seeds any condition's sequence reaches (0: the profile's own seeds alone)
    # The share of a report's measuring time behind each measured speed-up: below 1 for a profile whose
    # report checks that every number is measured and drawn, not what the speed-ups are.
    timing: float = 1.0
    # The share of the study's 5% chance of any wrong verdict that this profile's report spends: the README
    # shows the 15-epoch and the 100-epoch reports side by side, so together they keep to 0.05.
    alpha: float = 0.05
    hidden: tuple[int, ...] = PAPER_HIDDEN  # the MLP's hidden widths
    # The condition whose every seed must clear ``accuracy_floor`` (the evidence is broken otherwise), and
    # whose runs stand in for a condition not yet finished when finished runs are measured.
    baseline: str = "B"
    group: str = "claims"  # the conditions python -m tdlib train trains by default: those of this group
    description: str = ""

    def with_seeds(self, seeds: tuple[int, ...]) -> Profile:
        return replace(self, seeds=seeds)

    def sequence(self, n: int | None = None) -> tuple[int, ...]:
        """The first ``n`` seeds (default: the budget's) of the order in which every condition is trained
        and judged: the profile's own seeds, then the fresh seeds from :data:`FRESH_SEEDS_FROM` in order.
        The order is fixed before any of its runs, and a seed once trained is never left out."""
        n = max(self.budget, len(self.seeds)) if n is None else n
        if n < 0:
            raise ValueError(f"a sequence has at least 0 seeds, got {n}")
        fresh = tuple(range(FRESH_SEEDS_FROM, FRESH_SEEDS_FROM + max(0, n - len(self.seeds))))
        return (self.seeds + fresh)[:n]

    @property
    def checkpoints(self) -> tuple[int, ...]:
        """The epochs at which B keeps its weights: every tenth of the run, the start and the end, the
        lengths of the other profiles' runs (:data:`MARKS`) that fall inside it, and a tenth and a half of
        each of those, for the verdicts by training length. The default profile's set is unchanged by the
        marks; a paper-length B wants epoch 5 (a tenth of 50), which a default run does not keep, so it
        trains from scratch (as TWR does, its ramp being a share of the whole run), while the conditions that
        keep no checkpoints continue from their default runs (:meth:`RunSpec.continues`)."""
        tenths = {round(i * self.epochs / 10) for i in range(11)}
        marks = {m for m in MARKS if m <= self.epochs}
        # At each mark, the epochs C7 and C8 compare with it (a tenth and a half of it), so that the claims
        # can be judged as if training had stopped there.
        within = {e for m in marks for e in (replace(self, epochs=m).tenth, replace(self, epochs=m).half)}
        return tuple(sorted(tenths | marks | within))

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
            hidden=self.hidden, device=device, model=recipe.model, dataset=recipe.dataset,
        )

    def describe(self) -> dict[str, object]:
        unlike_a_report: dict[str, object] = {}  # only where a profile differs from the writeup's setting
        if self.hidden != PAPER_HIDDEN:
            unlike_a_report["hidden layers"] = ", ".join(map(str, self.hidden))
        if self.timing != 1:
            unlike_a_report["speed-up timing"] = f"{self.timing:g} of a report's"
        return {
            "profile": self.name,
            "epochs": self.epochs,
            "batch size": self.batch_size,
            "training images": self.data.n_train or 60_000,
            "test images": self.data.n_test or 10_000,
            "seeds": list(self.seeds),
            "optimizer": "Adam, lr 1e-3, cross-entropy",
            "baseline accuracy floor": self.accuracy_floor,
            **unlike_a_report,
        }


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"5"`` -> (0, 1, 2, 3, 4); ``"0,3,7"`` -> (0, 3, 7); ``"0,"`` -> (0,). Raises ``ValueError`` naming
    ``--seeds``."""
    try:
        count = int(text) if "," not in text else None
        seeds = () if count is not None else tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ValueError(f"--seeds must be a count or a comma-separated list of integers, got {text!r}") from None
    if count is not None:
        if count < 1:
            raise ValueError(f"--seeds {text.strip()} is a count of seeds (seeds 0 .. n-1) and must be at least 1; "
                             "to name seed 0 alone, write '0,'")
        if count > FRESH_SEEDS_FROM:  # before a range of a billion seeds is made
            raise ValueError(f"--seeds {text.strip()}: a profile's own seeds lie under {FRESH_SEEDS_FROM}, where its "
                             f"sequence's fresh seeds begin, so there are at most {FRESH_SEEDS_FROM} of them")
        return tuple(range(count))
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"--seeds must name distinct non-negative seeds, got {text!r}")
    return seeds


PROFILES: Registry[Profile] = Registry("profile", "profile", lambda names: ", ".join(sorted(names)))


def register_profile(profile: Profile, replace: bool = False) -> Profile:
    """Add ``profile`` to :data:`PROFILES`, for ``--claims-profile`` and ``python -m tdlib train`` (a second,
    different profile of the same name is refused unless ``replace``). A project registers its own in the
    ``conftest.py`` beside its claims, which pytest and ``python -m tdlib train --claims DIR`` load first."""
    return PROFILES.register(profile, replace)


register_profile(Profile("smoke", epochs=2, seeds=(0, 1), batch_size=64,
                         data=DataSpec(n_train=2000, n_test=500, seed=0), accuracy_floor=0.5, timing=0.01,
                         hidden=(100, 100, 50, 20), description="for CI: 2 epochs on 2,000 images, a narrow MLP"))
# The 5% split, registered 2026-12-04 before either report is judged by the convention of that day: half
# each to the 15-epoch and the 100-epoch reports (the smoke profile's report is shown nowhere).
register_profile(Profile("default", epochs=15, seeds=(0, 1, 2, 3, 4), accuracy_floor=0.85, budget=35, alpha=0.025,
                         description="15 epochs on all of Fashion-MNIST"))
# Registered 2026-12-04, before any 100-epoch run beyond seeds 0-4: up to 20 seeds a condition.
register_profile(Profile("paper", epochs=100, seeds=(0, 1, 2, 3, 4), accuracy_floor=0.85, budget=20, alpha=0.025,
                         description="the writeup's 100 epochs on all of Fashion-MNIST"))
