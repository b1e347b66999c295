"""A network YAML's graph as a ``ude`` network term (``networks.NET.file``): ``(S, B, n_in) -> (S, B, n_out)``.

``ude``'s networks take a batch of points ``(S starts, B points, inputs)``; a PEtab SciML network takes one
input vector (or several: its placeholders), as the format evaluates it in a right-hand side or an
observable. :class:`BatchedGraph` evaluates the graph point by point (``torch.func.vmap`` over the points,
so that an operation over the first dimension, like ``softmax(dim=0)``, acts on the input vector as the
format means it) with one set of arrays per start (a second ``vmap``), and flattens its output. Layers run in
eval mode: the right-hand side is a function of its inputs (batch normalisation with its running
statistics, not of a batch of points).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .graph import GraphNetwork, Ref, _resolve, read_graph


class BatchedGraph(nn.Module):
    """One :class:`~.graph.GraphNetwork` per start, evaluated point by point.

    Arguments:
        graphs: one graph per start (its initial arrays), all of the same file.
        arguments: how many of the input vector's entries each placeholder takes, in order, or its shape
            (a tuple: those entries as an array of that shape, row-major).
        in_shift, in_scale: inputs are used as ``(x - in_shift) / in_scale``.
        out_scale: outputs are multiplied by it.
        dtype: floating point type.
    """

    in_shift: torch.Tensor  # buffers
    in_scale: torch.Tensor
    out_scale: torch.Tensor

    def __init__(self, graphs: Sequence[GraphNetwork], arguments: Sequence[int | tuple[int, ...]], in_shift: Sequence[float],
                 in_scale: Sequence[float], out_scale: Sequence[float], dtype: torch.dtype):
        super().__init__()
        template = copy.deepcopy(graphs[0]).to(dtype).eval().requires_grad_(False)
        # the template is not a submodule: its own arrays are never used, the starts' below are
        self.__dict__["template"] = template
        self.source = template.source
        self.shapes = [tuple(a) if isinstance(a, (tuple, list)) else (int(a),) for a in arguments]
        self.arguments = [math.prod(shape) for shape in self.shapes]
        self.names = [n for n, _ in template.layers.named_parameters()]
        self.buffer_names = [n for n, _ in template.layers.named_buffers()]
        self.arrays = nn.ParameterList(
            nn.Parameter(torch.stack([dict(g.layers.named_parameters())[n].detach().to(dtype) for g in graphs]))
            for n in self.names)
        for k, n in enumerate(self.buffer_names):
            stacked = torch.stack([dict(g.layers.named_buffers())[n].detach() for g in graphs])
            self.register_buffer(f"buffer{k}", stacked.to(dtype) if stacked.is_floating_point() else stacked)
        self.register_buffer("in_shift", torch.tensor(list(in_shift), dtype=dtype))
        self.register_buffer("in_scale", torch.tensor(list(in_scale), dtype=dtype))
        self.register_buffer("out_scale", torch.tensor(list(out_scale), dtype=dtype))
        self.identity_in = bool(np.allclose(in_shift, 0) and np.allclose(in_scale, 1))
        self.identity_out = bool(np.allclose(out_scale, 1))
        self.n_outputs = len(out_scale)
        self._n_starts = len(graphs)
        #: whether the graph acts on each row of a batch alone (fully connected layers, elementwise
        #: functions): then it is evaluated on all rows at once, else point by point (vmap)
        self.rowwise = template.rowwise and all(len(shape) == 1 for shape in self.shapes)
        self._array_list = list(self.arrays)  # plain list: no ParameterList lookups per call
        self._placeholders = list(template.placeholders)
        self._steps = self._plan() if self.rowwise else []

    def _rows(self, arrays: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The graph at input vectors ``x (..., n_in)`` (one, or rows of them for a row-wise graph) with one
        start's ``arrays``: its outputs ``(..., n_out)``."""
        args = list(torch.split(x, self.arguments, dim=-1)) if len(self.arguments) > 1 else [x]
        args = [a if len(shape) == 1 else a.reshape(*a.shape[:-1], *shape) for a, shape in zip(args, self.shapes,
                                                                                                 strict=True)]
        template: GraphNetwork = self.__dict__["template"]
        return torch.func.functional_call(template, arrays, tuple(args)).reshape(*x.shape[:-1], -1)

    def _plan(self) -> list[tuple]:
        """A row-wise graph's steps: ``(name, kind, function or layer, args, kwargs, weight index, bias index,
        whether the args are all earlier nodes)``."""
        template: GraphNetwork = self.__dict__["template"]
        index = {n: k for k, n in enumerate(self.names)}
        steps: list[tuple[Any, ...]] = []
        for node in template.nodes:
            if node.op == "placeholder":
                continue
            if node.op == "output":
                steps.append((node.name, "output", None, node.args, {}, None, None, _plain(node.args)))
                break
            if node.op == "call_module":
                layer = template.layers[node.target]
                kind = "linear" if isinstance(layer, nn.Linear) else "bilinear" if isinstance(layer, nn.Bilinear) else "layer"
                steps.append((node.name, kind, layer, node.args, node.kwargs, index.get(f"{node.target}.weight"),
                              index.get(f"{node.target}.bias"), _plain(node.args)))
            else:
                steps.append((node.name, "function", template._functions[node.name], node.args, node.kwargs, None, None,
                              _plain(node.args)))
        return steps

    def _rowwise(self, x: torch.Tensor) -> torch.Tensor:
        """A row-wise graph on all starts and rows at once: its fully connected layers as batched products
        with each start's arrays ``(S, out, in)``, its elementwise functions as they are."""
        arrays = self._array_list
        args = torch.split(x, self.arguments, dim=-1) if len(self.arguments) > 1 else (x,)
        values: dict[str, Any] = dict(zip(self._placeholders, args, strict=True))
        for name, kind, fn, node_args, kwargs, w, b, plain in self._steps:
            a = [values[r] for r in node_args] if plain else _resolve(node_args, values)
            if kind == "output":
                return a[0]
            if kind == "linear":  # one batched product per layer, as ude's MLP: (S, B, in) x (S, in, out)
                values[name] = (torch.bmm(a[0], arrays[w].transpose(1, 2)) if b is None
                                else torch.baddbmm(arrays[b].unsqueeze(1), a[0], arrays[w].transpose(1, 2)))
                continue
            if kind == "bilinear":
                z = torch.einsum("sbi,soij,sbj->sbo", a[0], arrays[w], a[1])
            else:  # an elementwise function, or a dropout's expectation (no arrays)
                z = fn(*a, **(_resolve(kwargs, values) if kwargs else {}))
            values[name] = z if b is None else z + arrays[b][:, None, :]
        raise ValueError(f"{self.source}: the forward graph has no output node")

    def _arrays(self) -> dict[str, torch.Tensor]:
        out = {f"layers.{n}": p for n, p in zip(self.names, self.arrays, strict=True)}
        out.update({f"layers.{n}": getattr(self, f"buffer{k}") for k, n in enumerate(self.buffer_names)})
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.identity_in:
            x = (x - self.in_shift) / self.in_scale
        if self.rowwise:
            y = self._rowwise(x)
        else:  # point by point
            y = torch.func.vmap(torch.func.vmap(self._rows, in_dims=(None, 0)), in_dims=(0, 0))(self._arrays(), x)
        return y if self.identity_out else y * self.out_scale

    @property
    def n_starts(self) -> int:
        return self._n_starts

    @property
    def weights(self) -> list[nn.Parameter]:
        """The arrays named ``weight`` (the weight penalty's; biases and normalisation offsets are not)."""
        return [p for n, p in zip(self.names, self.arrays, strict=True) if n.rsplit(".", 1)[-1] == "weight"]

    def array(self, name: str) -> nn.Parameter:
        """The start-batched array ``LAYER.ARRAY`` (``(S, *shape)``)."""
        return self.arrays[self.names.index(name)]

    def weight_penalty(self) -> torch.Tensor:
        """Sum of squared weights (not biases), per start: ``(S,)``."""
        total = torch.zeros(self.n_starts, dtype=self.in_shift.dtype)
        for w in self.weights:
            total = total + (w * w).reshape(w.shape[0], -1).sum(1)
        return total

    def n_parameters_per_start(self) -> int:
        return sum(p[0].numel() for p in self.arrays)

    def set_arrays(self, stored: dict[str, np.ndarray], where: str) -> None:
        """Every start's arrays from ``LAYER.ARRAY`` -> array (PyTorch layout); each learnable one must be given."""
        from ...errors import ConfigError

        own = dict(zip(self.names, self.arrays, strict=True))
        own.update({n: getattr(self, f"buffer{k}") for k, n in enumerate(self.buffer_names)})
        unknown = sorted(set(stored) - set(own))
        missing = [n for n in self.names if n not in stored]
        if unknown or missing:
            raise ConfigError(f"{'no array ' + unknown[0] + ' in the network' if unknown else missing[0] + ' missing'} "
                              f"(its arrays: {', '.join(self.names)})", where=where)
        with torch.no_grad():
            for name, value in stored.items():
                target = own[name]
                if tuple(value.shape) != tuple(target.shape[1:]):
                    raise ConfigError(f"{name}: shape {tuple(value.shape)}, expected {tuple(target.shape[1:])}",
                                      where=where)
                target.copy_(torch.as_tensor(value, dtype=target.dtype).expand_as(target))


def _plain(args: tuple) -> bool:
    return all(isinstance(a, Ref) for a in args)


def build(path: Path, n_inputs: int, n_outputs: int, arguments: Sequence[int | Sequence[int]] | None, seeds: Sequence[int],
          in_shift: Sequence[float], in_scale: Sequence[float], out_scale: Sequence[float], dtype: torch.dtype,
          where: str, read: Callable[[Path], GraphNetwork] = read_graph) -> BatchedGraph:
    """The network of file ``path`` for ``len(seeds)`` starts (PyTorch's initialisation, seeded per start),
    checked on one input vector: it must give ``n_outputs`` numbers."""
    from ...errors import ConfigError

    if not path.is_file():
        raise ConfigError(f"network file {path} not found", where=where)
    graphs = []
    for seed in seeds:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            graphs.append(read(path))
    sizes: list[int | tuple[int, ...]] = [n_inputs]
    if arguments:
        sizes = [a if isinstance(a, int) else tuple(a) for a in arguments]
    if len(sizes) != len(graphs[0].placeholders):
        raise ConfigError(f"the network in {path} takes {len(graphs[0].placeholders)} inputs (placeholders "
                          f"{', '.join(graphs[0].placeholders)}); give arguments: [sizes] to split `inputs` among them",
                          where=where)
    net = BatchedGraph(graphs, sizes, in_shift, in_scale, out_scale, dtype)
    try:
        with torch.no_grad():
            y = net(torch.zeros((net.n_starts, 1, n_inputs), dtype=dtype))
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"the network in {path} cannot be evaluated on an input vector of {n_inputs} "
                          f"(arguments {sizes}): {first}", where=where) from None
    if y.shape[-1] != n_outputs:
        raise ConfigError(f"the network in {path} gives {y.shape[-1]} outputs on an input vector of {n_inputs}; "
                          f"outputs: {n_outputs}", where=where)
    return net


def from_spec(spec, base_dir: Path, seeds: Sequence[int], in_shift: Sequence[float], in_scale: Sequence[float],
              out_scale: Sequence[float], dtype: torch.dtype, where: str) -> BatchedGraph:
    """A config's ``networks.NET`` with ``file``: the network, its ``weights`` (a .npz of ``LAYER.ARRAY``),
    ``fixed`` and ``frozen`` arrays applied."""
    from ...errors import ConfigError

    net = build(base_dir / spec.file, len(spec.inputs), spec.outputs, spec.arguments, seeds, in_shift, in_scale,
                out_scale, dtype, f"{where}.file")
    if spec.weights is not None:
        path = base_dir / spec.weights
        try:
            with np.load(path) as arrays:
                stored = {k: np.asarray(arrays[k]) for k in arrays.files}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}", where=f"{where}.weights") from None
        net.set_arrays(stored, f"{where}.weights: {path}")
    if spec.fixed:  # not learned: left out of the optimiser, the weight penalty and the counts
        net.requires_grad_(False)
    for name in spec.frozen:
        if name not in net.names:
            raise ConfigError(f"frozen: {name} is not an array of the network (its arrays: {', '.join(net.names)})",
                              where=where)
        net.array(name).requires_grad_(False)
    return net
