"""Observables: what each CSV column measures, as a function of the solved states.

An observable is a formula of the states, parameters (mechanistic and observation parameters, shared
or per experiment), constants and ``t``, compiled once through the equation language's torch backend. A
directly observed state (``data.columns: {x: prey}``, or an observable whose formula is a state's name)
is that state's column of the solution, with no arithmetic at all, so that such fits give the numbers
they always gave.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..problem import Problem


class ObservationModel:
    """Predictions of every observable from a solution ``(T, S, B, n_states)``.

    Arguments:
        problem: the resolved problem (its observables, in the data's column order).
    """

    def __init__(self, problem: Problem):
        self.names = list(problem.dataset.observables)
        self.states = list(problem.states)
        self.state_index: list[int | None] = []
        self.functions: list[Callable | None] = []
        nets = list(problem.networks)
        #: the networks observable formulas use (their outputs at the solved states); :attr:`rhs` computes them
        self.networks: list[str] = []
        self.rhs = None
        for name in self.names:
            o = problem.observables[name]
            if o.state is not None:
                self.state_index.append(self.states.index(o.state))
                self.functions.append(None)
            else:
                self.state_index.append(None)
                self.functions.append(o.expression.compile("torch", networks=nets))
                used = {n for n, _ in o.expression.network_refs} | (o.expression.names & set(nets))
                self.networks += [n for n in nets if n in used and n not in self.networks]
        self.direct = all(j is not None for j in self.state_index)
        self._index = torch.tensor([j if j is not None else 0 for j in self.state_index], dtype=torch.long)
        self._identity = self.state_index == list(range(len(self.states)))  # every state, in order

    def predict(self, solution: torch.Tensor, times: torch.Tensor, parameters: dict[str, torch.Tensor],
                constants: dict[str, float | torch.Tensor], experiments: torch.Tensor | None,
                cells: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
        """Observable predictions ``(T, S, B, n_observables)``.

        Arguments:
            solution: the states ``(T, S, B, n_states)``.
            times: ``(T,)``.
            parameters: name -> ``(S, 1)`` or ``(S, B)`` (per experiment, already selected).
            constants: name -> a number or a tensor of every experiment's values ``(n_experiments,)``.
            experiments: the experiment of each batch position (selects per-experiment constants).
            cells: observable index -> the (time, batch) indices of the only cells its formula is evaluated at;
                its other cells read 1. The formula's graph then never touches the others, where it may not be
                finite (a NaN there would reach the gradient through any weight, 0 included).
        """
        if self._identity:
            return solution
        if self.direct:
            return solution.index_select(-1, self._index)
        env: dict[str, object] = {"t": times[:, None, None]}
        env.update(parameters)
        for name, value in constants.items():
            if torch.is_tensor(value) and value.ndim == 1:
                env[name] = value if experiments is None else value.index_select(0, experiments)
            else:
                env[name] = value
        env.update(zip(self.states, solution.unbind(-1), strict=True))
        shape = solution.shape[:-1]
        if self.networks:
            env.update(self._network_outputs(solution, times))
        columns = []
        for j, f in zip(self.state_index, self.functions, strict=True):
            if f is None:
                columns.append(solution[..., j])
            elif cells is not None and len(columns) in cells:
                rows, batch = cells[len(columns)]
                part = {k: _take(v, shape, rows, batch) for k, v in env.items()}
                r = torch.as_tensor(f(part), dtype=solution.dtype).expand(len(rows), shape[1])
                column = solution.new_ones((shape[0], shape[2], shape[1])).index_put((rows, batch), r)
                columns.append(column.permute(0, 2, 1))
            else:
                r = f(env)
                columns.append(torch.as_tensor(r, dtype=solution.dtype).expand(shape))
        return torch.stack(columns, -1)

    def _network_outputs(self, solution: torch.Tensor, times: torch.Tensor) -> dict[str, torch.Tensor]:
        """The observed networks' outputs at every solved point: name -> ``(T, S, B, outputs)``."""
        rhs = self.rhs
        if rhs is None:
            raise RuntimeError("an observable uses a network: set ObservationModel.rhs (the model's HybridRHS)")
        n_t, n_s, n_b, n = solution.shape
        y = solution.permute(1, 0, 2, 3).reshape(n_s, n_t * n_b, n)  # (S, T*B, n): the networks' batch layout
        t = times[None, :, None].expand(n_s, n_t, n_b).reshape(n_s, n_t * n_b)
        out = {}
        for name in self.networks:
            net = rhs.networks[name]
            if rhs.networks_enabled:
                z = net(rhs.inputs(name, t, y))
            else:
                z = torch.zeros((n_s, n_t * n_b, net.n_outputs), dtype=y.dtype, device=y.device)
            out[name] = z.reshape(n_s, n_t, n_b, -1).permute(1, 0, 2, 3)
        return out


def _take(value, shape: torch.Size, rows: torch.Tensor, batch: torch.Tensor):
    """An environment value at the cells ``(rows, batch)`` of a ``(T, S, B)`` grid, as ``(cells, S)`` (a network's
    outputs ``(cells, S, outputs)``); a number as it is."""
    if not torch.is_tensor(value):
        return value
    full = torch.broadcast_to(value, tuple(shape) + tuple(value.shape[3:]) if value.ndim > 3 else shape)
    return full[rows, :, batch]
