"""The tabular collator: what it makes, beyond the contract the conformance kit checks."""

from __future__ import annotations

import pytest
import torch

from treadle_example.collate import TabularCollator


def test_rows_become_features_and_labels() -> None:
    rows = [{"features": [0.5, 1.0], "label": 2}, {"features": [0.0, 1.5], "label": 0}]
    batch = TabularCollator()(rows)
    assert batch["features"].dtype == torch.float32
    assert batch["features"].shape == (2, 2)
    assert batch["labels"].tolist() == [2, 0]


def test_rows_of_other_widths_are_refused() -> None:
    rows = [{"features": [0.5, 1.0, 2.0], "label": 0}, {"features": [0.0, 1.0], "label": 1}]
    with pytest.raises(ValueError, match="sample 1 has 2 features, sample 0 has 3"):
        TabularCollator()(rows)
