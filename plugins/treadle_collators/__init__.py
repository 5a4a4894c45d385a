"""treadle built-in plugin: the four batch collators."""
