"""The claims suite's pytest plugin is ``tdlib.claims.plugin``, loaded through its ``pytest11`` entry point when
tdlib is installed (``pip install .``, or ``./dev``): its options are ``--claims-profile``,
``--claims-seeds``, ``--claims-device``, ``--claims-cache`` and ``--claims-report``. Nothing else is needed here."""
