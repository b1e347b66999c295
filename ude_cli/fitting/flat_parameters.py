"""The trainable tensors of a model as views of one buffer, and their gradients as views of another.

Why: a training iteration clears the gradients, checks them for NaN, keeps the best values per start and
takes an optimiser step. Done tensor by tensor that is ~40 small torch operations (a UDE has one tensor
per layer's weights and biases, per parameter, per learned initial state), about 0.25 ms per iteration:
as much as the compiled engine's solve and its gradient. On one buffer each is one operation.

The updates are the same arithmetic (Adam's is elementwise, and LBFGS concatenates the gradients in this
same order anyway), but not always to the last bit: torch's vectorised kernels now run over one long
tensor instead of many short ones, so some elements take the vector path instead of the scalar one. The
model's parameters stay ``nn.Parameter`` objects (their ``.data`` and ``.grad`` are views while training;
:meth:`FlatParameters.release` gives each its own memory again), so everything that reads or copies them
works as before.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn


class FlatParameters:
    """``params`` (name -> parameter, each with the start dimension first) bound to one buffer.

    :attr:`parameter` is one ``nn.Parameter`` over the whole buffer, with :attr:`grad` as its gradient:
    what an optimiser is given. :meth:`bind` puts the views back if something replaced a gradient.
    """

    def __init__(self, params: Mapping[str, nn.Parameter], n_starts: int):
        self.names = list(params)
        self.params = list(params.values())
        dtypes = {p.dtype for p in self.params}
        if len(dtypes) > 1:
            raise ValueError(f"parameters of several dtypes cannot share a buffer: {sorted(map(str, dtypes))}")
        sizes = [p.numel() for p in self.params]
        with torch.no_grad():
            data = (torch.cat([p.detach().reshape(-1) for p in self.params]) if self.params
                    else torch.zeros(0, dtype=torch.get_default_dtype()))
        self.grad = torch.zeros_like(data)
        self.parameter = nn.Parameter(data)
        self._grad_views = list(self.views(self.grad).values())
        for p, view in zip(self.params, self.views(data).values(), strict=True):
            p.data = view
        #: the start each value belongs to (every parameter has the start dimension first)
        self.start_of = torch.cat([torch.arange(n_starts).repeat_interleave(max(size // n_starts, 1))
                                   for size in sizes]) if sizes else torch.zeros(0, dtype=torch.long)
        self.bind()

    def bind(self) -> None:
        """Every parameter's ``.grad`` a view of the gradient buffer again (a ``zero_grad`` with
        ``set_to_none`` elsewhere drops it; autograd would then write a new tensor the optimiser never sees)."""
        for p, g in zip(self.params, self._grad_views, strict=True):
            if p.grad is not g:
                p.grad = g
        if self.parameter.grad is not self.grad:
            self.parameter.grad = self.grad

    def release(self) -> None:
        """Each parameter its own memory again, and no gradient: after training, a parameter that is
        pickled or saved alone must not carry the whole buffer."""
        with torch.no_grad():
            for p in self.params:
                p.data = p.data.clone()
                p.grad = None

    def zero_grad(self) -> None:
        self.bind()
        self.grad.zero_()

    def gradient_finite(self) -> bool:
        """No NaN or infinity in the gradient (its sum is finite then, unless it overflows: looked at closely)."""
        return math.isfinite(float(self.grad.sum())) or bool(torch.isfinite(self.grad).all())

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """``flat`` (a buffer like :attr:`parameter`) as a tensor per parameter name, sharing its memory."""
        out, offset = {}, 0
        for name, p in zip(self.names, self.params, strict=True):
            out[name] = flat[offset:offset + p.numel()].view(p.shape)
            offset += p.numel()
        return out

    def flatten(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Tensors by parameter name (e.g. a resumed checkpoint's best values) as one buffer."""
        return torch.cat([tensors[name].detach().reshape(-1).to(self.grad.dtype) for name in self.names])

    def where(self, better: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> None:
        """``old`` := ``new`` for the starts where ``better`` (``(S,)`` bool), in place."""
        torch.where(better[self.start_of], new, old, out=old)
