"""The layers of a PEtab SciML network YAML (``layers: [{layer_id, layer_type, args}]``) as torch modules.

A layer is PyTorch's module of that name with the YAML's ``args`` as keyword arguments (the format writes
them as PyTorch's constructor takes them), checked against the constructor's signature; a dropout layer is
the expectation of its random output (:data:`EXPECTED`). Only the layer types below are built; any other is
refused with a line naming the layer.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

#: PEtab SciML ``layer_type`` -> torch module class (the ``ml_model_import`` cases' layers and their kin)
LAYERS: dict[str, type[nn.Module]] = {cls.__name__: cls for cls in (
    nn.Linear, nn.Bilinear,
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.LPPool1d, nn.LPPool2d, nn.LPPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.Flatten, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
    nn.LayerNorm,
)}

#: arguments the format writes that the torch constructor does not take, and why they can be left out:
#: a normalisation layer's ``bias`` repeats ``affine`` (its bias exists exactly when it is affine)
REDUNDANT = {"bias": ("BatchNorm", "InstanceNorm")}


#: PyTorch's alpha of AlphaDropout (SELU's -lambda*alpha: ATen's Dropout.cpp)
ALPHA = 1.7580993408473766


class ExpectedDropout(nn.Module):
    """The expectation of ``torch.nn.Dropout(p)``'s (and Dropout1d-3d's) random output in training mode: the
    identity (PyTorch scales the kept elements by ``1 / (1 - p)``)."""

    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability has to be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x):
        return x


class ExpectedAlphaDropout(nn.Module):
    """The expectation of ``torch.nn.AlphaDropout(p)``'s random output in training mode: ``a (1 - p) x``.

    PyTorch keeps an element with probability ``1 - p`` and computes ``a x n + ALPHA a (n - 1) + ALPHA a p``
    for the keep mask ``n`` with ``a = ((ALPHA^2 p + 1)(1 - p))^(-1/2)``; the mean of the last two terms is 0.
    (Its eval mode, the identity, is not the expectation: the format's references are, test case 020.)
    """

    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability has to be in [0, 1), got {p}")
        self.p = float(p)
        self.factor = (1 - self.p) / ((ALPHA * ALPHA * self.p + 1) * (1 - self.p)) ** 0.5

    def forward(self, x):
        return x * self.factor


#: dropout layers, whose training-mode output is random, as the expectation of that output (deterministic)
EXPECTED: dict[str, type[nn.Module]] = {"Dropout": ExpectedDropout, "Dropout1d": ExpectedDropout,
                                        "Dropout2d": ExpectedDropout, "Dropout3d": ExpectedDropout,
                                        "AlphaDropout": ExpectedAlphaDropout}


#: layers that act on each row of a batch alone (on the last dimension)
ROWWISE = ("Linear", "Bilinear", "ExpectedDropout", "ExpectedAlphaDropout")


def build_layer(layer_id: str, layer_type: Any, args: Any, where: str) -> nn.Module:
    """The torch module of one YAML layer; an unknown type or argument is a one-line ConfigError."""
    from ...errors import ConfigError

    cls = EXPECTED.get(str(layer_type)) or LAYERS.get(str(layer_type))
    if cls is None:
        raise ConfigError(f"layer {layer_id!r}: layer type {layer_type!r} is not supported (supported: Linear, "
                          f"Bilinear, Conv and ConvTranspose 1-3d, Max/Avg/LP/AdaptiveMax/AdaptiveAvgPool 1-3d, "
                          f"Flatten, Dropout, Dropout1d-3d, AlphaDropout, BatchNorm and InstanceNorm 1-3d, LayerNorm)",
                          where=where)
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ConfigError(f"layer {layer_id!r}: args must be a mapping of {cls.__name__}'s arguments", where=where)
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {}
    for name, value in args.items():
        if name in accepted and name not in ("self", "device", "dtype"):
            kwargs[name] = tuple(value) if isinstance(value, list) else value
        elif not any(cls.__name__.startswith(prefix) for prefix in REDUNDANT.get(name, ())):
            raise ConfigError(f"layer {layer_id!r}: {name!r} is not an argument of torch.nn.{cls.__name__}",
                              where=where)
    if kwargs.get("inplace"):
        kwargs["inplace"] = False  # the graph's values are kept: never overwritten
    if "bias" in args and "affine" in kwargs and bool(args["bias"]) != bool(kwargs["affine"]):
        raise ConfigError(f"layer {layer_id!r}: bias {args['bias']} with affine {kwargs['affine']} (a "
                          f"{cls.__name__} has a bias exactly when it is affine)", where=where)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"layer {layer_id!r}: torch.nn.{cls.__name__}: {exc}", where=where) from None
