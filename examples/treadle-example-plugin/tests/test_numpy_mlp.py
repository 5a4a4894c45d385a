"""The numpy_mlp format: what it refuses, beyond the contract the conformance kit checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from treadle.export import ExportRequest

from treadle_example.numpy_mlp import NumpyMLPExporter


def test_a_layer_it_cannot_write_is_refused_by_name(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    request = ExportRequest(
        model=model,
        example_inputs=(torch.randn(1, 4),),
        path=tmp_path / NumpyMLPExporter.artifact_name,
        input_names=("features",),
        output_names=("logits",),
        dynamic_axes={},
        metadata={},
    )
    with pytest.raises(ValueError, match="LayerNorm"):
        NumpyMLPExporter().export(request)
