"""The writeup's study (``study.py``): its conditions, figures and report sections, registered in tdlib's
registries before pytest collects the claims of this directory."""

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # pytest's default import mode puts it there; --import-mode=importlib does not
    sys.path.insert(0, HERE)

import study  # noqa: E402, F401
