"""A collator for tabular rows: ``{"features": [float, ...], "label": int}`` samples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch


class TabularCollator:
    """Stacks feature rows into ``features`` ``(batch, num_features)`` float32 and ``labels``
    ``(batch,)`` long.

    :param task_spec: unused; accepted because treadle builds collators as
        ``cls(task_spec=...)``.
    """

    def __init__(self, task_spec: Any = None) -> None:
        self.task_spec = task_spec

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not samples:
            msg = "tabular collator: no samples to collate"
            raise ValueError(msg)
        width = len(samples[0]["features"])
        for index, sample in enumerate(samples):
            if "features" not in sample or "label" not in sample:
                msg = f"tabular collator: sample {index} needs 'features' and 'label'"
                raise ValueError(msg)
            if len(sample["features"]) != width:
                msg = (
                    f"tabular collator: sample {index} has {len(sample['features'])} features, "
                    f"sample 0 has {width}"
                )
                raise ValueError(msg)
        features = torch.tensor(
            [list(sample["features"]) for sample in samples], dtype=torch.float32
        )
        labels = torch.tensor([int(sample["label"]) for sample in samples], dtype=torch.long)
        return {"features": features, "labels": labels}
