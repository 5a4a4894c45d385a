"""The core's ``treadle`` sub-commands, one module each, imported only when run."""
