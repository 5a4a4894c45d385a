"""treadle built-in plugin: SQLite storage for registry, experiments and jobs."""
