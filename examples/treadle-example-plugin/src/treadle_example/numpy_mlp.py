"""The ``numpy_mlp`` export format: a stack of Linear layers and activations, as arrays that
numpy alone runs. A third party's format, shaped exactly like treadle's own: the bundle ships
:mod:`treadle_example.numpy_loader` and its ``inference.py`` runs the artifact with it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
from torch import nn
from treadle.export import BundleLoader

if TYPE_CHECKING:
    from treadle.export import ExportRequest

__all__ = ["NumpyMLPExporter"]

_ACTIVATIONS = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid"}
_SKIPPED_IN_EVAL = (nn.Dropout, nn.Identity)


class NumpyMLPExporter:
    """Writes ``model.mlp.npz``: ``layers`` (a JSON list of operations) and each Linear's
    ``weight_<i>`` and ``bias_<i>``.

    It takes a model with one input tensor whose leaf modules, in the order they are
    registered, are what its forward runs: Linear, ReLU, Tanh, Sigmoid (Dropout and Identity
    are skipped, as in eval mode). A model that computes anything else still exports, and the
    bundle's verification then fails this format with the difference: that check is what
    makes a simple format safe.
    """

    artifact_name = "model.mlp.npz"
    runtime = "numpy"
    requirements = ("numpy>=1.24",)
    loader = BundleLoader(module="treadle_example.numpy_loader")

    def export(self, request: ExportRequest) -> None:
        if len(request.input_names) != 1:
            msg = (
                f"the numpy_mlp format takes models with one input tensor, not "
                f"{', '.join(request.input_names)}"
            )
            raise ValueError(msg)
        layers: list[dict[str, object]] = []
        arrays: dict[str, np.ndarray] = {}
        leaves = [module for module in request.user_model.modules() if not list(module.children())]
        for index, module in enumerate(leaves):
            if isinstance(module, nn.Linear):
                arrays[f"weight_{index}"] = module.weight.detach().cpu().numpy()
                if module.bias is not None:
                    arrays[f"bias_{index}"] = module.bias.detach().cpu().numpy()
                layers.append({"op": "linear", "index": index, "bias": module.bias is not None})
            elif type(module) in _ACTIVATIONS:
                layers.append({"op": _ACTIVATIONS[type(module)]})
            elif not isinstance(module, _SKIPPED_IN_EVAL):
                msg = (
                    f"the numpy_mlp format cannot write a {type(module).__name__}: only Linear, "
                    f"ReLU, Tanh, Sigmoid, Dropout and Identity layers"
                )
                raise ValueError(msg)
        with request.path.open("wb") as handle:
            np.savez(handle, layers=np.array(json.dumps(layers)), **arrays)
