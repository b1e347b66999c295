"""A PEtab SciML network YAML as a torch module: its layers and its torch.fx-like ``forward`` graph.

The YAML (``nn_model_id``, ``inputs``, ``layers``, ``forward``) is what ``petab_sciml`` writes from a
PyTorch module with torch.fx: ``forward`` is a list of nodes ``{name, op, target, args, kwargs}``, where
``op`` is ``placeholder`` (an input argument), ``call_module`` (a layer of ``layers``), ``call_function``
or ``call_method`` (an operation of :mod:`.functions`) or ``output``, and a string in ``args`` is the value
of an earlier node. :class:`GraphNetwork` evaluates the nodes in order, as torch.fx's interpreter does.

Arrays follow PyTorch's layout (row-major, channels first), as the format's HDF5 files store them.

Modes, as the format's test suite's references were computed (PyTorch modules as constructed, so in
training mode): normalisation layers use the statistics of the batch they are given (BatchNorm in training
mode: in eval mode the suite's cases 042-045 miss by 1.5 to 3.5); a dropout layer is the expectation of its
random output (deterministic, :data:`~.layers.EXPECTED`): the identity for Dropout, Dropout1d-3d (their eval
mode), ``a (1 - p) x`` for AlphaDropout (its eval mode, the identity, misses case 020 by 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .functions import ELEMENTWISE, keywords, operation
from .layers import ROWWISE, build_layer

OPS = ("placeholder", "call_module", "call_function", "call_method", "output")


@dataclass(frozen=True)
class Node:
    name: str
    op: str
    target: str
    args: tuple
    kwargs: dict


class Ref(str):
    """The value of an earlier node (a string in a node's ``args``)."""


class GraphNetwork(nn.Module):
    """A network YAML's layers (``self.layers``, keyed by layer id) evaluated along its forward graph.

    ``forward(*inputs)`` takes one tensor per ``placeholder`` node, in order, and returns the ``output``
    node's value. The parameters' names are ``layers.<layer id>.<array>`` (``weight``, ``bias``): the
    format's ``parameters/<net>/<layer id>/<array>``.
    """

    def __init__(self, layers: dict[str, nn.Module], nodes: list[Node], source: str):
        super().__init__()
        self.layers = nn.ModuleDict(layers)
        self.nodes = nodes
        self.source = source
        self.placeholders = [n.name for n in nodes if n.op == "placeholder"]
        self._functions = {n.name: operation(n.op, n.target, _label(nodes, n), source)
                           for n in nodes if n.op in ("call_function", "call_method")}
        #: whether every layer and function acts on each row of a batch alone (a batch of input vectors
        #: gives the batch of their outputs)
        self.rowwise = (all(type(m).__name__ in ROWWISE for m in layers.values())
                        and all(n.target in ELEMENTWISE for n in nodes
                                if n.op in ("call_function", "call_method")))

    def forward(self, *inputs: torch.Tensor) -> Any:
        if len(inputs) != len(self.placeholders):
            raise ValueError(f"{self.source}: the network takes {len(self.placeholders)} inputs, got {len(inputs)}")
        values: dict[str, Any] = dict(zip(self.placeholders, inputs, strict=True))
        for node in self.nodes:
            if node.op == "placeholder":
                continue
            args = _resolve(node.args, values)
            if node.op == "output":
                return args[0] if len(args) == 1 else args
            kwargs = _resolve(node.kwargs, values)
            if node.op == "call_module":
                values[node.name] = self.layers[node.target](*args, **kwargs)
            else:
                values[node.name] = self._functions[node.name](*args, **kwargs)
        raise ValueError(f"{self.source}: the forward graph has no output node")

    @property
    def arrays(self) -> list[tuple[str, str]]:
        """``(layer id, array)`` of every learnable array, in the layers' order."""
        return [(lid, name) for lid, layer in self.layers.items() for name, _ in layer.named_parameters()]


def _resolve(x: Any, values: dict[str, Any]) -> Any:
    if isinstance(x, Ref):
        return values[x]
    if isinstance(x, (list, tuple)):
        return type(x)(_resolve(v, values) for v in x)
    if isinstance(x, dict):
        return {k: _resolve(v, values) for k, v in x.items()}
    return x


def _label(nodes: list[Node], node: Node) -> str:
    return f"forward[{nodes.index(node)}] ({node.name})"


def read_graph(path: Path) -> GraphNetwork:
    """The network YAML ``path`` as a :class:`GraphNetwork` (PyTorch's initial weights); anything it cannot
    build (an unknown layer type, argument or operation, a reference to no earlier node) is a one-line
    ConfigError naming the file and the layer or node."""
    from ...config import read_yaml
    from ...errors import ConfigError

    where = str(path)
    raw = read_yaml(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("layers"), list) or not isinstance(raw.get("forward"), list):
        raise ConfigError("expected a network: nn_model_id, inputs, layers and forward", where=where)
    layers: dict[str, nn.Module] = {}
    for k, layer in enumerate(raw["layers"]):
        if not isinstance(layer, dict) or "layer_id" not in layer or "layer_type" not in layer:
            raise ConfigError(f"layers[{k}]: expected {{layer_id, layer_type, args}}", where=where)
        lid = str(layer["layer_id"])
        if not lid.isidentifier() or lid in layers:
            raise ConfigError(f"layers[{k}]: layer id {lid!r} is {'repeated' if lid in layers else 'not a name'}",
                              where=where)
        layers[lid] = build_layer(lid, layer["layer_type"], layer.get("args"), where)
    nodes: list[Node] = []
    known: set[str] = set()
    for k, raw_node in enumerate(raw["forward"]):
        if not isinstance(raw_node, dict) or raw_node.get("op") not in OPS or "name" not in raw_node:
            raise ConfigError(f"forward[{k}]: expected {{name, op, target, args, kwargs}} with op one of "
                              f"{', '.join(OPS)}", where=where)
        name, op, target = str(raw_node["name"]), str(raw_node["op"]), str(raw_node.get("target"))
        at = f"forward[{k}] ({name})"
        args, kwargs = raw_node.get("args") or [], raw_node.get("kwargs") or {}
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise ConfigError(f"{at}: args must be a list and kwargs a mapping", where=where)
        if op == "call_module" and target not in layers:
            raise ConfigError(f"{at}: no layer {target!r} in layers", where=where)
        node = Node(name=name, op=op, target=target, args=tuple(_refs(args, known, at, where, strict=True)),
                    kwargs=_refs(keywords(kwargs), known, at, where, strict=False))
        nodes.append(node)
        known.add(name)
        if op == "output":
            break
    if not any(n.op == "output" for n in nodes):
        raise ConfigError("the forward graph has no output node", where=where)
    if not any(n.op == "placeholder" for n in nodes):
        raise ConfigError("the forward graph has no input (placeholder) node", where=where)
    return GraphNetwork(layers, nodes, where)


def _refs(x: Any, known: set[str], at: str, where: str, strict: bool) -> Any:
    """Strings naming earlier nodes as :class:`Ref`; in ``args`` (strict) any other string is an error."""
    from ...errors import ConfigError

    if isinstance(x, str):
        if x in known:
            return Ref(x)
        if strict:
            raise ConfigError(f"{at}: {x!r} is not an earlier node of the forward graph", where=where)
        return x
    if isinstance(x, list):
        return [_refs(v, known, at, where, strict) for v in x]
    if isinstance(x, dict):
        return {k: _refs(v, known, at, where, strict) for k, v in x.items()}
    return x


def load_hdf5(module: GraphNetwork, paths: list[Path], net: str) -> Path:
    """Set ``module``'s arrays from ``parameters/<net>/<layer>/<array>`` of the first of ``paths`` that has
    the network (PyTorch layout); returns that file. A missing or misshapen array is a ConfigError."""
    import h5py

    from ...errors import ConfigError

    for path in paths:
        with h5py.File(path, "r") as f:
            group = f.get("parameters")
            if group is None or net not in group:
                continue
            stored = {f"{lid}.{name}": np.asarray(arr) for lid, layer in group[net].items()
                      for name, arr in layer.items()}
        set_arrays(module, stored, f"{path}: parameters/{net}")
        return path
    raise ConfigError(f"no weights of network {net} (parameters/{net}) in the array files",
                      where=", ".join(map(str, paths)) or "extensions.sciml.array_files")


def set_arrays(module: GraphNetwork, stored: dict[str, np.ndarray], where: str) -> None:
    """Set ``module``'s parameters (and buffers such as a batch norm's running statistics, where given)
    from ``"<layer>.<array>"`` -> array; every parameter must be given, with its shape."""
    from ...errors import ConfigError

    own = {**dict(module.layers.named_buffers()), **dict(module.layers.named_parameters())}
    for key in stored:
        if key not in own:
            raise ConfigError(f"{key}: the network has no such array (it has {', '.join(own) or 'none'})",
                              where=where)
    with torch.no_grad():
        for key, tensor in own.items():
            value = stored.get(key)
            if value is None:
                if key in dict(module.layers.named_parameters()):
                    raise ConfigError(f"{key}: missing (shape {tuple(tensor.shape)} expected)", where=where)
                continue
            if value.size == 0 and tensor.numel() == 0:
                continue
            if tuple(value.shape) != tuple(tensor.shape):
                raise ConfigError(f"{key}: shape {tuple(value.shape)}, expected {tuple(tensor.shape)}", where=where)
            tensor.copy_(torch.as_tensor(value, dtype=tensor.dtype))
