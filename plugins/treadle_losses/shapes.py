"""Input checks shared by the built-in loss strategies: errors that name expected and actual
shapes and dtypes."""

from __future__ import annotations

import torch

__all__ = ["describe", "is_floating", "is_integer", "shape_error"]


def describe(tensor: torch.Tensor) -> str:
    """``(4, 16, 259) torch.float32``: a tensor's shape and dtype, for messages."""
    return f"{tuple(tensor.shape)} {tensor.dtype}"


def is_integer(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` holds integers (class ids, token ids)."""
    return (
        not tensor.dtype.is_floating_point
        and not tensor.dtype.is_complex
        and (tensor.dtype != torch.bool)
    )


def is_floating(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` holds real floating-point numbers (logits)."""
    return tensor.dtype.is_floating_point


def shape_error(
    strategy: str,
    expected: str,
    logits: torch.Tensor,
    labels: torch.Tensor,
    problem: str,
) -> ValueError:
    """A ValueError naming the strategy, what it expects, what it got, and the problem."""
    msg = (
        f"{strategy} expects {expected}; got logits {describe(logits)} and labels "
        f"{describe(labels)}: {problem}."
    )
    return ValueError(msg)
