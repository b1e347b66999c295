"""The right-hand side of a universal differential equation: mechanism + neural terms.

:class:`HybridRHS` *holds* the compiled equations (the mechanism, with ``NN[i]`` placeholders)
and the networks; it subclasses neither. Evaluating it fills an environment with the states, the
parameter values, the constants, ``t`` and each network's outputs, then evaluates each state's
equation. A neural ODE is the case whose equations are only network outputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import cast

import torch
from torch import nn

from ..expressions import Expression, parse_expression
from .neural import MLP
from .parameters import ParameterSet


class HybridRHS(nn.Module):
    """``dy/dt = f(t, y)`` for states ``y`` of shape ``(S, B, n_states)``.

    Arguments:
        states: state names, in order.
        equations: state -> checked expression (mechanism and corrections).
        networks: network name -> :class:`~ude_cli.fitting.neural.MLP`.
        network_inputs: network name -> its inputs (state names and/or ``"t"``).
        parameters: the mechanistic parameters.
        constants: name -> value: a float, or a tensor ``(B,)`` of per-experiment values.
    """

    def __init__(self, states: Sequence[str], equations: Mapping[str, Expression], networks: Mapping[str, MLP],
                 network_inputs: Mapping[str, Sequence[str]], parameters: ParameterSet,
                 constants: Mapping[str, float | torch.Tensor]):
        super().__init__()
        self.states = list(states)
        self.networks = nn.ModuleDict(dict(networks))
        self.parameters_ = parameters
        self.network_inputs = {n: list(v) for n, v in network_inputs.items()}
        #: inputs that are neither states nor t: shared parameters and constants, read from the environment
        self._other_inputs = {n: [i for i in v if i != "t" and i not in self.states]
                              for n, v in self.network_inputs.items()}
        self._state_index = {n: [self.states.index(i) for i in v if i != "t" and i in self.states]
                             for n, v in self.network_inputs.items()}
        self._uses_t = {n: "t" in v for n, v in self.network_inputs.items()}
        self._t_position = {n: v.index("t") if "t" in v else -1 for n, v in self.network_inputs.items()}
        #: inputs that are formulas (``S/N``) of states, t, parameters and constants: compiled once
        self._input_formulas = {i: parse_expression(i).compile("torch") for v in self.network_inputs.values()
                                for i in v if not i.isidentifier()}
        self._index_tensors: dict[str, torch.Tensor] = {}
        self.expressions = dict(equations)
        self._functions = [equations[s].compile("torch", networks=list(networks)) for s in self.states]
        self._constants = dict(constants)
        self._experiments: torch.Tensor | None = None
        self._bound: dict[str, float | torch.Tensor] | None = None
        self.networks_enabled = True
        self.nfe = 0

    # -- per-experiment values ---------------------------------------------------------------------
    @property
    def constants(self) -> dict[str, float | torch.Tensor]:
        """name -> a number, or a tensor ``(B,)`` of per-experiment values (all experiments)."""
        return dict(self._constants)

    def select(self, experiments: torch.Tensor | None) -> None:
        """Evaluate for these experiments (an index per batch position) from now on: their per-experiment
        constants and parameters; None: all experiments in order."""
        self._experiments = experiments

    @contextlib.contextmanager
    def overridden(self, constants: Mapping[str, float | torch.Tensor], experiments: torch.Tensor | None,
                   bound: bool = False) -> Iterator[None]:
        """Evaluate with ``constants`` in place of (or beside) the model's, for ``experiments``, until the block
        ends (pre-equilibration's settling); ``bound``: with the parameters' values bound, without gradients."""
        saved = self._constants, self._experiments, self._bound
        try:
            self._constants = {**saved[0], **constants}
            self._experiments = experiments
            self._bound = None
            if bound:
                with torch.no_grad():
                    self.bind()
            yield
        finally:
            self._constants, self._experiments, self._bound = saved

    # -- binding parameters once per solve --------------------------------------------------------
    def bind(self) -> None:
        """Compute parameter values once for the coming solve (not with the adjoint method)."""
        self._bound = self._base_env()

    def unbind(self) -> None:
        self._bound = None

    def values(self, experiments: torch.Tensor | None) -> dict[str, float | torch.Tensor]:
        """The parameters' and constants' values for ``experiments`` (an index per batch position), as the
        equations read them: shared ones ``(S, 1)`` or numbers, per-experiment ones ``(·, B)``."""
        saved = self._experiments
        try:
            self._experiments = experiments
            return self._base_env()
        finally:
            self._experiments = saved

    def _base_env(self) -> dict[str, float | torch.Tensor]:
        index = self._experiments
        env: dict[str, float | torch.Tensor] = dict(self.parameters_.values(index))
        for name, value in self._constants.items():
            if torch.is_tensor(value) and value.ndim == 1:
                env[name] = (value if index is None else value.index_select(0, index))[None, :]
            else:
                env[name] = value
        return env

    # -- evaluation -----------------------------------------------------------------------------
    def network_outputs(self, t: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each network's outputs at ``(t, y)``: name -> ``(S, B, outputs)``."""
        out = {}
        for name, net in cast(Mapping[str, MLP], self.networks).items():  # a ModuleDict of MLPs (untyped)
            x = self.inputs(name, t, y)
            out[name] = net(x) if self.networks_enabled else torch.zeros(
                (*y.shape[:-1], net.n_outputs), dtype=y.dtype, device=y.device)
        return out

    def inputs(self, name: str, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Network ``name``'s inputs at ``(t, y)``: the states (and ``t``) it is fed, in its order."""
        idx = self._state_index[name]
        if self._other_inputs[name]:
            env = self._bound if self._bound is not None else self._base_env()
            shape = y.shape[:-1]
            cols = []
            for i in self.network_inputs[name]:
                if i == "t":
                    cols.append(torch.as_tensor(t, dtype=y.dtype, device=y.device).expand(shape))
                elif i in self.states:
                    cols.append(y[..., self.states.index(i)])
                elif i in self._input_formulas:
                    values = {**env, "t": t, **dict(zip(self.states, y.unbind(-1), strict=True))}
                    cols.append(_spread(torch.as_tensor(self._input_formulas[i](values), dtype=y.dtype,
                                                        device=y.device), shape))
                else:  # a shared parameter (S, 1) or constant: the same at every point
                    cols.append(_spread(torch.as_tensor(env[i], dtype=y.dtype, device=y.device), shape))
            return torch.stack(cols, -1)
        if not self._uses_t[name]:
            if idx == list(range(len(self.states))):
                return y
            key = name
            if key not in self._index_tensors or self._index_tensors[key].device != y.device:
                self._index_tensors[key] = torch.tensor(idx, device=y.device)
            return y.index_select(-1, self._index_tensors[key])
        cols = [y[..., i] for i in idx]
        tt = torch.as_tensor(t, dtype=y.dtype, device=y.device).expand(y.shape[:-1])
        cols.insert(self._t_position[name], tt)
        return torch.stack(cols, -1)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        env = dict(self._bound) if self._bound is not None else self._base_env()
        env["t"] = t
        env.update(zip(self.states, y.unbind(-1), strict=True))
        env.update(self.network_outputs(t, y))
        shape = y.shape[:-1]
        rates = []
        for f in self._functions:
            r = f(env)
            if not torch.is_tensor(r) or r.shape != shape:  # a constant, or a term without states
                r = torch.as_tensor(r, dtype=y.dtype, device=y.device).expand(shape)
            rates.append(r)
        return torch.stack(rates, -1)

    def terms(self, t: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Alias of :meth:`network_outputs`, the learned terms."""
        return self.network_outputs(t, y)


def _spread(value: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``value`` at every point of ``shape``; a per-experiment value ``(1, B)`` where the points are laid out
    ``(S, T*B)`` (an observable's networks at every solved time) is repeated over the times."""
    if value.ndim and value.shape[-1] not in (1, shape[-1]) and shape[-1] % value.shape[-1] == 0:
        value = value.repeat(*([1] * (value.ndim - 1)), shape[-1] // value.shape[-1])
    return value.expand(shape)
