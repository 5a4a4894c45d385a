"""SmallCNN: a few conv + BatchNorm + ReLU stages, global average pooling and a linear head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from treadle_models.tracing import is_tracing

__all__ = ["SmallCNN"]


class SmallCNN(nn.Module):
    """An image classifier for small images (any size: the pooling is adaptive).

    Each stage is ``Conv2d(3x3, padding 1) -> BatchNorm2d -> ReLU``; a ``MaxPool2d(2)`` (ceil
    mode, so even 1x1 inputs pass) sits between stages. Then global average pooling, dropout
    and ``Linear(channels[-1], num_classes)``. With the default ``(16, 32)`` channels and one
    input channel, 10 classes, it has 5,178 parameters.

    :param in_channels: channels of ``pixel_values``.
    :param num_classes: output classes.
    :param channels: output channels of each stage.
    :param dropout: dropout probability in ``[0, 1)`` before the linear head.
    :raises ValueError: a size is not positive, ``channels`` is empty, or ``dropout`` lies
        outside ``[0, 1)``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: Sequence[int] = (16, 32),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        problems = [
            f"{name} must be >= 1: {value}"
            for name, value in (("in_channels", in_channels), ("num_classes", num_classes))
            if value < 1
        ]
        if not channels or any(width < 1 for width in channels):
            problems.append(f"channels must be a non-empty list of widths >= 1: {list(channels)}")
        if not 0 <= dropout < 1:
            problems.append(f"dropout must lie in [0, 1): {dropout}")
        if problems:
            msg = "cannot build SmallCNN: " + "; ".join(problems)
            raise ValueError(msg)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.channels = tuple(channels)
        layers: list[nn.Module] = []
        previous = in_channels
        for index, width in enumerate(self.channels):
            if index > 0:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            layers += [
                nn.Conv2d(previous, width, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            previous = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(previous, num_classes)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Class logits.

        :param pixel_values: ``(batch, in_channels, height, width)`` float.
        :returns: ``(batch, num_classes)`` float logits.
        :raises ValueError: ``pixel_values`` is not 4-D or has another number of channels.
        """
        # Under torch.jit.trace a shape comparison would be frozen with a TracerWarning.
        wrong_channels = not is_tracing() and pixel_values.shape[1] != self.in_channels
        if pixel_values.dim() != 4 or wrong_channels:
            msg = (
                f"SmallCNN expects pixel_values of shape (batch, {self.in_channels}, height, "
                f"width), got {tuple(pixel_values.shape)}"
            )
            raise ValueError(msg)
        pooled = self.pool(self.features(pixel_values)).flatten(1)
        return self.classifier(self.dropout(pooled))  # type: ignore[no-any-return]
