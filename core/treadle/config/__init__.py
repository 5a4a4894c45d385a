"""Configuration: TrainingConfig, its builder and presets, and strict loading from files."""

from treadle.config.builder import PRESETS, TrainingConfigBuilder
from treadle.config.training import PluginsConfig, TrainingConfig

__all__ = ["PRESETS", "PluginsConfig", "TrainingConfig", "TrainingConfigBuilder"]
