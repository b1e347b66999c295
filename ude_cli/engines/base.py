"""What an engine is given: the ODE problem as data (:class:`OdeSpec`), never the model that holds it.

Every engine solves ``dy/dt = f(t, y; p, c, w)`` for trajectories that are (start, experiment) pairs:

- the symbolic side, fixed for a fit: the states, the mechanistic parameters' names (the order of ``p``),
  each state's checked equation, the networks (torch modules, whose weight tensors ``w`` are read at every
  solve) and their inputs, the constants shared by all experiments and those that differ by experiment;
- the numbers of each solve, passed to it: the initial states ``y0`` and the parameter values ``p`` of
  every trajectory (differentiable tensors, from :meth:`ude_cli.fitting.model.UDEModel.trajectory_inputs`).

:class:`~ude_cli.fitting.model.UDEModel` builds its :class:`OdeSpec` once (:meth:`~ude_cli.fitting.model.UDEModel.ode_spec`);
the torchdiffeq path evaluates the same description in torch (:class:`~ude_cli.fitting.hybrid.HybridRHS`), the
compiled engine (:mod:`ude_cli.engines.compiled`) as a CasADi graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .torchdiffeq import SolverSettings

if TYPE_CHECKING:
    from ..expressions import Expression
    from ..fitting.neural import MLP


@dataclass(frozen=True)
class Grid:
    """Experiments solved together (the same start time) on the union of their observation times."""

    experiments: tuple[int, ...]  # indices into the dataset's experiments
    times: np.ndarray  # (T,), times[0] is the start


@dataclass(frozen=True)
class OdeSpec:
    """The ODE problem as every engine sees it (see the module docstring)."""

    states: tuple[str, ...]
    parameters: tuple[str, ...]  # mechanistic parameter names: the order of p
    equations: Mapping[str, Expression]  # state -> checked expression (networks as NET[i])
    networks: Mapping[str, MLP]
    network_inputs: Mapping[str, tuple[str, ...]]  # states, t, shared parameters or constants
    constants: Mapping[str, float]  # the same in every experiment
    experiment_constants: Mapping[str, torch.Tensor]  # name -> (B,) values, one per experiment
    experiment_names: tuple[str, ...]
    grids: tuple[Grid, ...]
    n_starts: int
    dtype: torch.dtype
    settings: SolverSettings
    #: the largest magnitude of the data and of the initial states (a blow-up is judged against it)
    scale: float
