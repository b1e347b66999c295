"""The operations of a PEtab SciML forward graph's ``call_function`` and ``call_method`` nodes.

A whitelist: each target names a torch function, called with the node's arguments (tensors of earlier
nodes, numbers) and keyword arguments; a target outside it is refused with a line naming the node.
Traps of the format, as its test suite's references show:

- ``gelu`` is evaluated with the tanh approximation (``approximate="tanh"``) unless the node says otherwise:
  the references were computed so (test case 029: 5e-8 from the tanh approximation, 3e-4 from the exact gelu);
- ``log_sigmoid`` is torch's ``logsigmoid``;
- ``inplace`` is ignored (the graph never overwrites a value) and ``_stacklevel`` (a warning's depth) too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.nn import functional as F


def _gelu(x: torch.Tensor, approximate: str = "tanh") -> torch.Tensor:
    return F.gelu(x, approximate=approximate)


#: ``call_function`` target -> function
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "relu": F.relu, "relu6": F.relu6, "hardtanh": F.hardtanh, "hardswish": F.hardswish, "selu": F.selu,
    "leaky_relu": F.leaky_relu, "gelu": _gelu, "log_sigmoid": F.logsigmoid, "logsigmoid": F.logsigmoid,
    "tanhshrink": F.tanhshrink, "softsign": F.softsign, "softplus": F.softplus, "hardsigmoid": F.hardsigmoid,
    "mish": F.mish, "elu": F.elu, "celu": F.celu, "silu": F.silu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
    "softmax": F.softmax, "log_softmax": F.log_softmax, "cat": torch.cat, "concat": torch.cat,
    "flatten": torch.flatten, "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
    "exp": torch.exp, "log": torch.log, "sqrt": torch.sqrt, "abs": torch.abs, "pow": torch.pow,
    "stack": torch.stack, "sum": torch.sum, "mean": torch.mean, "square": torch.square,
}

#: ``call_method`` target (a tensor's method) -> function of the tensor first
METHODS: dict[str, Callable[..., Any]] = {
    "tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu, "exp": torch.exp, "log": torch.log,
    "abs": torch.abs, "sqrt": torch.sqrt, "square": torch.square, "flatten": torch.flatten,
    "reshape": torch.reshape, "view": lambda x, *shape: x.reshape(*shape), "softmax": torch.softmax,
    "log_softmax": torch.log_softmax, "sum": torch.sum, "mean": torch.mean, "add": torch.add, "mul": torch.mul,
    "pow": torch.pow, "squeeze": torch.squeeze, "unsqueeze": torch.unsqueeze, "permute": torch.permute,
    "transpose": torch.transpose,
}

#: targets that act element by element (with their default keyword arguments)
ELEMENTWISE = ("relu", "relu6", "hardtanh", "hardswish", "selu", "leaky_relu", "gelu", "log_sigmoid", "logsigmoid",
               "tanhshrink", "softsign", "softplus", "hardsigmoid", "mish", "elu", "celu", "silu", "sigmoid", "tanh",
               "exp", "log", "sqrt", "abs", "square")

#: keyword arguments left out of every call
IGNORED = ("inplace", "_stacklevel")


def operation(op: str, target: str, node: str, where: str) -> Callable[..., Any]:
    """The function of a ``call_function`` / ``call_method`` node; one not in the whitelist is a ConfigError."""
    from ...errors import ConfigError

    table = FUNCTIONS if op == "call_function" else METHODS
    fn = table.get(target)
    if fn is None:
        raise ConfigError(f"{node}: {op} {target!r} is not supported (supported: {', '.join(table)})", where=where)
    return fn


def keywords(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A node's keyword arguments without those left out of every call (:data:`IGNORED`, ``dtype: None``)."""
    return {k: v for k, v in kwargs.items() if k not in IGNORED and not (k == "dtype" and v is None)}
