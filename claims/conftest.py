"""The writeup's study (``study.py``): its conditions, figures and report sections, registered in tdlib's
registries before pytest collects the claims of this directory."""

import study  # noqa: F401
