"""treadle built-in plugin: streaming validation metrics (accuracy, perplexity, ...)."""
