"""treadle built-in plugin: the experiment-store logger: a run's metrics into ExperimentDB."""
