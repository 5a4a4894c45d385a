"""treadle's test kit: the ``plugin_manager`` fixture and ``--treadle-conformance``."""

pytest_plugins = ["treadle.testing"]
