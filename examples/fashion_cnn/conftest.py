"""What the claims beside this file train, registered before pytest collects them (and before ``python -m tdlib
train --claims examples/fashion_cnn`` plans): the network, two conditions, and two profiles."""

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # pytest's default import mode puts it there; --import-mode=importlib does not
    sys.path.insert(0, HERE)

from cnn import SMALL_CNN  # noqa: E402  (registers the model "small-cnn")

from tdlib.claims.conditions import Condition, register  # noqa: E402
from tdlib.claims.profiles import Profile, register_profile  # noqa: E402
from tdlib.claims.report import set_title  # noqa: E402
from tdlib.dropout import TargetedDropout  # noqa: E402
from tdlib.spec import DataSpec  # noqa: E402

set_title("Claims report: targeted dropout on a small CNN, Fashion-MNIST")
register(Condition("CNN", "the small CNN, plain", model=SMALL_CNN.name, group="cnn"))
register(Condition("CNN-TU", "the small CNN with unit-level targeted dropout on every conv filter and hidden unit, "
                   "gamma 0.5, alpha 0.5", model=SMALL_CNN.name, group="cnn",
                   targeted=TargetedDropout.constant("unit", 0.5, 0.5)))

# Registered before any of its runs: 3 epochs on a class-balanced 20,000 of the 60,000 training images (about a
# minute a run on one CPU thread), judged on all 10,000 test images; seeds 0-4, then the fresh seeds 100, 101, ...
# up to 12 a condition while the claim is undecided (8 seeds, all on one side, decide it: the report says how).
register_profile(Profile("cnn", epochs=3, seeds=(0, 1, 2, 3, 4), batch_size=64, data=DataSpec(n_train=20_000),
                         accuracy_floor=0.8, budget=12, baseline="CNN", group="cnn",
                         description="the small CNN: 3 epochs on 20,000 Fashion-MNIST images"))
# For CI: every path at a toy size (its report shows that the example runs, not what it finds).
register_profile(Profile("cnn-smoke", epochs=1, seeds=(0, 1), batch_size=64,
                         data=DataSpec(n_train=1000, n_test=500), accuracy_floor=0.3, baseline="CNN", group="cnn",
                         timing=0.01,
                         description="the small CNN for CI: 1 epoch on 1,000 images"))
