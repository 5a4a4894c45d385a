"""treadle built-in plugin: the five loss strategies."""
