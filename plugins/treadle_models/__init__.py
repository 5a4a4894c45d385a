"""treadle built-in plugin: built-in model factories: tiny GPT, MLP classifier, small CNN."""
