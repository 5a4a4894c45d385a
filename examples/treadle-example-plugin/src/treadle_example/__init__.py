"""The example treadle plugin: see README.md for what it registers."""

__version__ = "0.5.0"
