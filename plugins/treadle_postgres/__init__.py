"""treadle built-in plugin: PostgreSQL storage for registry, experiments and jobs, for many
workers on many machines (optional extra: ``pip install "treadle[postgres]"``)."""
