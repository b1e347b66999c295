"""Mechanistic parameters and initial states as torch modules, with bounds by smooth transforms.

A learned parameter is stored as an unconstrained number ``u`` and used as ``value = g(u)``:

==========================  ==========================================================
settings                    transform ``g``
==========================  ==========================================================
no bounds                   ``u``
positive                    ``exp(u)``
lower only                  ``lower + exp(u)``
upper only                  ``upper - exp(u)``
lower and upper             ``lower + (upper - lower) * sigmoid(u)``
positive, 0 < lower, upper  ``exp(log lower + (log upper - log lower) * sigmoid(u))``
==========================  ==========================================================

so a bound is never crossed and the optimiser never sees a constraint (as lmfit's ``Parameter``).
Every value carries a leading start dimension ``S`` (a multistart fits ``S`` sets at once).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..problem import Initial, Parameter


def _kind(p: Parameter) -> str:
    lo, hi = p.lower, p.upper
    if p.positive:
        lo = lo if lo is not None and lo > 0 else None
        if lo is not None and hi is not None:
            return "logbox"
        if hi is not None:
            return "logupper"  # 0 < value < hi: exp(log hi + log sigmoid(u))
        if lo is not None:
            return "lower"
        return "log"
    if lo is not None and hi is not None:
        return "box"
    if lo is not None:
        return "lower"
    if hi is not None:
        return "upper"
    return "free"


def _bounds(p: Parameter) -> tuple[float, float]:
    """The bounds as numbers, -inf/inf where absent (each kind reads only the bounds it has)."""
    return (-math.inf if p.lower is None else p.lower, math.inf if p.upper is None else p.upper)


def to_unconstrained(p: Parameter, value: float) -> float:
    """The unconstrained ``u`` with ``g(u) = value``."""
    k, (lo, hi) = _kind(p), _bounds(p)
    if k == "free":
        return value
    if k == "log":
        return math.log(value)
    if k == "lower":
        return math.log(value - lo)
    if k == "upper":
        return math.log(hi - value)
    if k == "box":
        f = (value - lo) / (hi - lo)
    elif k == "logbox":
        f = (math.log(value) - math.log(lo)) / (math.log(hi) - math.log(lo))
    else:  # logupper
        f = value / hi
    f = min(max(f, 1e-12), 1 - 1e-12)
    return math.log(f / (1 - f))


def to_constrained(p: Parameter, u: torch.Tensor) -> torch.Tensor:
    """``g(u)`` for tensors."""
    k, (lo, hi) = _kind(p), _bounds(p)
    if k == "free":
        return u
    if k == "log":
        return torch.exp(u)
    if k == "lower":
        return lo + torch.exp(u)
    if k == "upper":
        return hi - torch.exp(u)
    if k == "box":
        return lo + (hi - lo) * torch.sigmoid(u)
    if k == "logbox":
        return torch.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * torch.sigmoid(u))
    return hi * torch.sigmoid(u)  # logupper


class ParameterSet(nn.Module):
    """Parameters: learned ones as unconstrained tensors, fixed ones as buffers; ``(S,)`` each, or
    ``(S, B)`` for a parameter with one value per experiment (``per_experiment``).

    Arguments:
        parameters: name -> resolved parameter.
        n_starts: starts fitted at once (``S``).
        dtype: torch dtype.
        starts: optional ``(n_learned, S)`` starting values of the learned parameters.
        n_experiments: experiments (``B``), for per-experiment parameters.
    """

    def __init__(self, parameters: Mapping[str, Parameter], n_starts: int, dtype: torch.dtype,
                 starts: np.ndarray | None = None, n_experiments: int = 1):
        super().__init__()
        self.specs = dict(parameters)
        self.learned = [n for n, p in self.specs.items() if not p.fixed]
        self.fixed = [n for n, p in self.specs.items() if p.fixed]
        self.per_experiment = {n for n, p in self.specs.items() if p.per_experiment}
        self.n_experiments = n_experiments
        raw = {}
        for n in self.learned:
            values = [self.specs[n].init] * n_starts if starts is None else list(starts[self.learned.index(n)])
            u = torch.tensor([to_unconstrained(self.specs[n], v) for v in values], dtype=dtype)
            raw[n] = nn.Parameter(u[:, None].repeat(1, n_experiments) if n in self.per_experiment else u)
        self.raw = nn.ParameterDict(raw)
        for n in self.fixed:
            shape = (n_starts, n_experiments) if n in self.per_experiment else (n_starts,)
            self.register_buffer(f"fixed_{n}", torch.full(shape, self.specs[n].init, dtype=dtype))

    def values(self, experiments: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """name -> value ``(S, 1)``, ready to broadcast against a state column ``(S, B)``; a per-experiment
        parameter is ``(S, B)``, or its values for the experiments indexed by ``experiments``."""
        out = {}
        for n in (*self.learned, *self.fixed):
            v = to_constrained(self.specs[n], self.raw[n]) if n in self.raw else getattr(self, f"fixed_{n}")
            if n in self.per_experiment:
                out[n] = v if experiments is None else v.index_select(1, experiments)
            else:
                out[n] = v[:, None]
        return out

    def numpy(self) -> dict[str, np.ndarray]:
        """name -> values per start ``(S,)`` (``(S, B)`` for a per-experiment parameter)."""
        with torch.no_grad():
            return {n: (v if n in self.per_experiment else v[:, 0]).detach().cpu().numpy().copy()
                    for n, v in self.values().items()}


class NoiseParameterSet(ParameterSet):
    """The noise parameters: their own (learned or fixed, as :class:`ParameterSet`), and those given by a formula
    of the shared mechanistic parameters and constants (``sigma: {formula: ...}``), computed from ``source``."""

    def __init__(self, parameters: Mapping[str, Parameter], n_starts: int, dtype: torch.dtype,
                 formulas: Mapping | None = None, source: ParameterSet | None = None,
                 constants: Mapping[str, torch.Tensor] | None = None):
        super().__init__(parameters, n_starts, dtype)
        self._formulas = {n: e.compile("torch") for n, e in (formulas or {}).items()}
        self._source = [source]  # in a list: its tensors belong to the mechanistic set, not to this module
        self._constants = dict(constants or {})
        self._ones = torch.ones((n_starts, 1), dtype=dtype)

    def values(self, experiments: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        out = super().values(experiments)
        source = self._source[0]
        if self._formulas:
            env = {**self._constants, **(source.values() if source is not None else {})}  # shared ones: (S, 1)
            for n, f in self._formulas.items():
                out[n] = self._ones * f(env)
        return out


class InitialStates(nn.Module):
    """The initial state of every experiment: ``(S, B, n_states)``.

    Each state's value comes from its first observation, a given number, or a CSV column; a
    learned initial value is one unconstrained number per start and experiment.
    """

    base: torch.Tensor  # a buffer
    _parameter_set: ParameterSet | None  # the model's (set with object.__setattr__: not a submodule here)

    def __init__(self, states: Sequence[str], initial: Mapping[str, Initial], first_values: np.ndarray,
                 covariates: Sequence[Mapping[str, float]], n_starts: int, dtype: torch.dtype,
                 parameters: ParameterSet | None = None, constants: Mapping[str, float | torch.Tensor] | None = None,
                 t0: Sequence[float] | None = None):
        super().__init__()
        self.states = list(states)
        self.specs = dict(initial)
        n_exp = first_values.shape[0]
        base = np.zeros((n_exp, len(states)))
        self._formulas = {}
        for j, s in enumerate(states):
            spec = self.specs[s]
            if spec.source == "observed":
                base[:, j] = first_values[:, j]
            elif spec.source == "value":
                base[:, j] = spec.value
            elif spec.source == "formula":
                assert spec.expression is not None  # resolve gives a formula its expression
                nets = {n for n, _ in spec.expression.network_refs}
                self._formulas[j] = spec.expression.compile("torch", networks=sorted(nets))
            else:
                assert spec.column is not None  # source "column"
                base[:, j] = [c[spec.column] for c in covariates]
        # a formula's environment: the parameters (not registered here: they are the model's), constants, t0
        object.__setattr__(self, "_parameter_set", parameters)
        self._formula_env: dict[str, float | torch.Tensor] = {
            n: (v[None, :] if torch.is_tensor(v) and v.ndim == 1 else v) for n, v in (constants or {}).items()}
        if t0 is not None:
            self._formula_env["t0"] = torch.tensor(list(t0), dtype=dtype)[None, :]
        self.register_buffer("base", torch.tensor(base, dtype=dtype))
        self.learned = [j for j, s in enumerate(states) if self.specs[s].learn]
        raw = {}
        for j in self.learned:
            s = states[j]
            v = base[:, j]
            if self.specs[s].positive:
                v = np.log(np.maximum(v, 1e-12))
            raw[s] = nn.Parameter(torch.tensor(np.tile(v, (n_starts, 1)), dtype=dtype))
        self.raw = nn.ParameterDict(raw)
        self.n_starts = n_starts
        #: networks that initial formulas use (NET[i]): name -> (the model's network, its inputs); see use_networks
        self._networks: dict[str, tuple[nn.Module, list]] = {}

    def use_networks(self, networks: Mapping[str, tuple[nn.Module, Sequence[str]]]) -> None:
        """The networks (fed parameters and constants only) that initial formulas use: name -> (the module, its
        inputs: names or formulas). They belong to the model (not registered here)."""
        from ..expressions import parse_expression

        for name, (net, inputs) in networks.items():
            compiled = [i if i.isidentifier() else parse_expression(i).compile("torch") for i in inputs]
            object.__setattr__(self, "_networks", {**self._networks, name: (net, compiled)})

    def settle_with(self, steady_state, constants: Mapping[str, float | torch.Tensor]) -> None:
        """Start every experiment at a steady state (:class:`~ude_cli.fitting.steady_state.SteadyState`), settled
        from the initial values that formulas give with ``constants`` changed."""
        object.__setattr__(self, "_steady_state", steady_state)
        self._settling_env = {**self._formula_env, **{
            n: (v[None, :] if torch.is_tensor(v) and v.ndim == 1 else v) for n, v in constants.items()}}

    def forward(self) -> torch.Tensor:
        y0 = self._values(self._formula_env)
        steady = getattr(self, "_steady_state", None)
        if steady is None:
            return y0
        y_pre = self._values(self._settling_env) if self._formulas else y0
        return steady(y_pre, y0)

    def unsettled(self) -> torch.Tensor:
        """The initial values that :meth:`forward` returns without pre-equilibration: ``(S, B, n)``."""
        return self._values(self._formula_env)

    def _values(self, formula_env: Mapping[str, float | torch.Tensor]) -> torch.Tensor:
        y0 = self.base.expand(self.n_starts, *self.base.shape)
        if not self.learned and not self._formulas:
            return y0
        cols = list(y0.unbind(-1))
        for j in self.learned:
            s = self.states[j]
            cols[j] = torch.exp(self.raw[s]) if self.specs[s].positive else self.raw[s]
        if self._formulas:
            assert self._parameter_set is not None  # a formula's parameters are given with it
            env = {**formula_env, **self._parameter_set.values()}
            shape = y0.shape[:-1]
            for name, (net, inputs) in self._networks.items():  # each start's and experiment's inputs
                x = [torch.as_tensor(env[i] if isinstance(i, str) else i(env), dtype=y0.dtype).expand(shape)
                     for i in inputs]
                env[name] = net(torch.stack(x, -1))
            for j, f in self._formulas.items():
                cols[j] = torch.as_tensor(f(env), dtype=y0.dtype).expand(y0.shape[:-1])
        return torch.stack(cols, -1)
