"""An example third-party treadle plugin."""

__version__ = "0.4.0"
