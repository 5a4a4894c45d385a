"""treadle built-in plugin: job types (training, evaluation, export, retraining)."""
