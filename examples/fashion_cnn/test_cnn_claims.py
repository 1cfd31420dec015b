"""A claim about a network that is not the writeup's MLP, judged as the writeup's claims are.

The rule was committed before any of the ``cnn`` profile's runs. Accuracies are top-1 on the profile's test
images, in percent; the comparison pairs the two conditions by seed.
"""

from __future__ import annotations

from tdlib.claims.claim import Comparison, Finding, Part, claim, values
from tdlib.claims.evidence import Evidence


@claim(
    "E1",
    quote="a network trained with targeted dropout is robust to post-hoc pruning (Gomez et al.), for a CNN's filters",
    rule="CNN-TU (unit-level targeted dropout, gamma 0.5, alpha 0.5, on every conv filter and hidden unit), with "
    "half the filters of each conv layer and half the hidden units removed (lowest L2 norm, weights and bias), "
    "keeps more test accuracy than CNN pruned the same way",
    conditions=("CNN-TU", "CNN"),
    figures=("sweeps",),
)
def test_e1_targeted_dropout_makes_filters_prunable(ev: Evidence) -> Finding:
    gain = ev.pruned("CNN-TU", "unit", 50) - ev.pruned("CNN", "unit", 50)
    return Finding([Part("CNN-TU keeps more at unit 50%",
                         (Comparison("CNN-TU - CNN, unit 50%", values(gain), 0.0, "greater", "pp"),))])
