"""treadle built-in plugin: metric loggers: console and JSON lines."""
