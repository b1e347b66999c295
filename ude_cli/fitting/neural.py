"""Correction networks: multilayer perceptrons, started so that their output is near zero.

Every network carries a leading *start* dimension: weights have shape ``(starts, out, in)``, so
that several independent fits (a multistart) run as one batched computation. With one start this
is an ordinary MLP. Inputs are standardised by the data's mean and spread and outputs scaled by a
typical rate of change, so the same network settings suit data in any units.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn


def _rbf(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(-x * x)


#: activation name -> function. ``rbf`` is the Gaussian exp(-z^2) of the UDE paper.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "gelu": nn.functional.gelu,
    "softplus": nn.functional.softplus,
    "rbf": _rbf,
    "sigmoid": torch.sigmoid,
    "silu": nn.functional.silu,
}


def glorot_uniform(sizes: Sequence[int], seed: int, final_scale: float = 1.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Glorot-uniform weights ``(out, in)`` and zero biases, layer by layer, from ``default_rng(seed)``.

    Drawn with numpy so that the initialisation is the same on every platform and torch version.
    The last layer's weights are multiplied by ``final_scale``.
    """
    rng = np.random.default_rng(seed)
    layers = []
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        limit = math.sqrt(6.0 / (n_in + n_out))
        w = rng.uniform(-limit, limit, (n_out, n_in))
        if k == len(sizes) - 2:
            w = w * final_scale
        layers.append((w, np.zeros(n_out)))
    return layers


class MLP(nn.Module):
    """A fully connected network batched over starts: ``(S, B, n_in) -> (S, B, n_out)``.

    Weights are stored as ``(S, in, out)`` (so a layer is one ``baddbmm``), biases as ``(S, 1, out)``.

    Arguments:
        n_in, n_out: input and output sizes.
        hidden: hidden layer sizes.
        activation: a name of :data:`ACTIVATIONS`.
        seeds: one initialisation seed per start.
        final_scale: scale of the last layer's initial weights (small: output near zero).
        in_shift, in_scale: inputs are used as ``(x - in_shift) / in_scale``.
        out_scale: outputs are multiplied by it.
        dtype: floating point type.
    """

    in_shift: torch.Tensor  # buffers
    in_scale: torch.Tensor
    out_scale: torch.Tensor

    def __init__(self, n_in: int, n_out: int, hidden: Sequence[int], activation: str, seeds: Sequence[int],
                 final_scale: float, in_shift: Sequence[float], in_scale: Sequence[float],
                 out_scale: Sequence[float], dtype: torch.dtype):
        super().__init__()
        sizes = [n_in, *hidden, n_out]
        self.activation_name = activation
        self.act = ACTIVATIONS[activation]
        inits = [glorot_uniform(sizes, seed, final_scale) for seed in seeds]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for k in range(len(sizes) - 1):
            w = np.stack([init[k][0].T for init in inits])  # (S, in, out)
            b = np.stack([init[k][1] for init in inits])[:, None, :]  # (S, 1, out)
            self.weights.append(nn.Parameter(torch.tensor(w, dtype=dtype)))
            self.biases.append(nn.Parameter(torch.tensor(b, dtype=dtype)))
        self.register_buffer("in_shift", torch.tensor(list(in_shift), dtype=dtype))
        self.register_buffer("in_scale", torch.tensor(list(in_scale), dtype=dtype))
        self.register_buffer("out_scale", torch.tensor(list(out_scale), dtype=dtype))
        #: whether the inputs are used as they are (no standardisation), and the outputs (no scaling)
        self.identity_in = bool(np.allclose(in_shift, 0) and np.allclose(in_scale, 1))
        self.identity_out = bool(np.allclose(out_scale, 1))
        self._layers = list(zip(self.weights, self.biases, strict=True))  # plain list: no ParameterList lookups

    @property
    def n_starts(self) -> int:
        return self.weights[0].shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.identity_in:
            x = (x - self.in_shift) / self.in_scale
        act = self.act
        *hidden, (w_out, b_out) = self._layers
        for w, b in hidden:
            x = act(torch.baddbmm(b, x, w))
        x = torch.baddbmm(b_out, x, w_out)
        return x if self.identity_out else x * self.out_scale

    def weight_penalty(self) -> torch.Tensor:
        """Sum of squared weights (not biases), per start: ``(S,)``."""
        return sum((w * w).sum(dim=(1, 2)) for w in self.weights)

    @property
    def n_outputs(self) -> int:
        return self.weights[-1].shape[2]

    def n_parameters_per_start(self) -> int:
        return sum(p[0].numel() for p in self.parameters())
