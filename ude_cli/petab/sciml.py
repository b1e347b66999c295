"""PEtab SciML networks: the network YAML (layers + a torch.fx forward graph) as a ``ude`` network, and its
weights from the HDF5 array file.

``ude``'s own networks (:class:`~ude_cli.fitting.neural.MLP`, which the compiled engine compiles) are chains
of fully connected layers with one activation between them and none after the last. A PEtab network that is
such a chain -- ``Linear`` layers with bias, the forward graph placeholder(s) [-> ``cat`` of the arguments] ->
layer -> activation -> ... -> layer -> output -- becomes one (:func:`read_network`), with its inputs in the
mapping table's order and its weights from ``parameters/<net>/<layer>/weight|bias`` (PyTorch layout: weight
``(out, in)``). Any other network the format's layers and operations make (:mod:`ude_cli.petab.network`)
becomes a ``file`` network: the YAML itself, evaluated point by point on torchdiffeq (:func:`import_network`).
What neither can build raises :class:`~ude_cli.errors.ConfigError` naming the file and the layer or node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import ACTIVATIONS
from ..errors import ConfigError


@dataclass(frozen=True)
class Chain:
    """A network YAML as ``ude`` sees it."""

    id: str
    layers: list[str]  # layer ids, in order
    sizes: list[int]  # [n_in, hidden..., n_out]
    activation: str
    arguments: int  # forward arguments (placeholders), concatenated in order


def read_network(path: Path, net: str) -> Chain:
    """The network YAML ``path`` of network ``net`` as a :class:`Chain`."""
    from ..config import read_yaml

    raw = read_yaml(path)
    where = str(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("layers"), list) or not isinstance(raw.get("forward"), list):
        raise ConfigError("expected a network: nn_model_id, inputs, layers and forward", where=where)
    layers: dict[str, dict] = {}
    for k, layer in enumerate(raw["layers"]):
        if not isinstance(layer, dict):
            raise ConfigError("expected {layer_id, layer_type, args}", where=f"{where}: layers[{k}]")
        kind = layer.get("layer_type")
        if kind != "Linear":
            raise ConfigError(f"layer {layer.get('layer_id')!r}: layer type {kind!r} is not supported yet (ude's "
                              f"networks are chains of Linear layers)", where=where)
        args = layer.get("args") or {}
        if not args.get("bias", True):
            raise ConfigError(f"layer {layer.get('layer_id')!r}: a Linear layer without bias is not supported yet",
                              where=where)
        layers[str(layer.get("layer_id"))] = args
    placeholders: list[str] = []
    order: list[str] = []
    activations: list[str] = []
    current: str | None = None
    expect_activation = False
    for k, node in enumerate(raw["forward"]):
        op, target, args = node.get("op"), str(node.get("target")), node.get("args") or []
        at = f"forward[{k}] ({node.get('name')})"
        if op == "placeholder":
            if order:
                raise ConfigError(f"{at}: an input after the first layer is not supported yet", where=where)
            placeholders.append(str(node.get("name")))
            current = None
        elif op == "call_function" and target == "cat" and not order:
            if [str(a) for a in (args[0] if args else [])] != placeholders:
                raise ConfigError(f"{at}: only a concatenation of all the inputs in order is supported", where=where)
        elif op == "call_module":
            if target not in layers:
                raise ConfigError(f"{at}: unknown layer {target!r}", where=where)
            if order and not expect_activation:
                raise ConfigError(f"{at}: two layers without an activation between them are not supported yet",
                                  where=where)
            order.append(target)
            expect_activation = False
            current = str(node.get("name"))
        elif op in ("call_method", "call_function") and order and not expect_activation:
            name = {"log_sigmoid": "logsigmoid"}.get(target, target)
            if name not in ACTIVATIONS or name == "rbf":
                raise ConfigError(f"{at}: {target!r} is not supported yet (activations: tanh, relu, gelu, "
                                  f"softplus, sigmoid, silu)", where=where)
            if name == "gelu":  # the suite's references use the tanh approximation, ude's gelu is exact
                raise ConfigError(f"{at}: gelu is not supported yet (PEtab SciML's references use its tanh "
                                  f"approximation)", where=where)
            activations.append(name)
            expect_activation = True
        elif op == "output":
            if expect_activation or [str(a) for a in args] != [current]:
                raise ConfigError(f"{at}: the output must be the last layer's (no activation after it)", where=where)
        else:
            raise ConfigError(f"{at}: the operation {op} {target!r} is not supported yet", where=where)
    if not order or len(set(activations)) > 1:
        raise ConfigError("one activation between all layers is supported (found "
                          f"{', '.join(dict.fromkeys(activations)) or 'no layer'})", where=where)
    sizes = [int(layers[order[0]]["in_features"])]
    for lid in order:
        a = layers[lid]
        if int(a["in_features"]) != sizes[-1]:
            raise ConfigError(f"layer {lid!r}: in_features {a['in_features']} after {sizes[-1]} outputs", where=where)
        sizes.append(int(a["out_features"]))
    return Chain(id=net, layers=order, sizes=sizes, activation=activations[0] if activations else "tanh",
                 arguments=max(len(placeholders), 1))


def read_weights(arrays: list[Path], chain: Chain) -> dict[str, np.ndarray]:
    """``weight0, bias0, ...`` of ``chain`` from the array files (``parameters/<net>/<layer>/...``)."""
    import h5py

    for path in arrays:
        with h5py.File(path, "r") as f:
            group = f.get("parameters")
            if group is None or chain.id not in group:
                continue
            net = group[chain.id]
            out = {}
            for k, lid in enumerate(chain.layers):
                if lid not in net or "weight" not in net[lid] or "bias" not in net[lid]:
                    raise ConfigError(f"parameters/{chain.id}/{lid}: weight and bias expected", where=str(path))
                w = np.asarray(net[lid]["weight"], dtype=float)
                b = np.asarray(net[lid]["bias"], dtype=float).reshape(-1)
                if w.shape != (chain.sizes[k + 1], chain.sizes[k]):
                    raise ConfigError(f"parameters/{chain.id}/{lid}/weight: shape {w.shape}, expected "
                                      f"{(chain.sizes[k + 1], chain.sizes[k])}", where=str(path))
                out[f"weight{k}"], out[f"bias{k}"] = w, b
            return out
    raise ConfigError(f"no weights of network {chain.id} (parameters/{chain.id}) in the array files",
                      where=", ".join(map(str, arrays)) or "extensions.sciml.array_files")


def to_mlp(chain: Chain, weights: dict[str, np.ndarray], dtype=None):
    """The network as ``ude``'s :class:`~ude_cli.fitting.neural.MLP` (one start, no input or output scaling)
    with the given weights: what a config's ``networks.NET`` with ``normalize: false`` and ``weights`` builds."""
    import torch

    from ..fitting.model import set_weights
    from ..fitting.neural import MLP

    n_in, *hidden, n_out = chain.sizes
    net = MLP(n_in, n_out, hidden, chain.activation, [0], 1.0, [0.0] * n_in, [1.0] * n_in, [1.0] * n_out,
              dtype or torch.float64)
    set_weights(net, weights, f"network {chain.id}")
    return net


def parse_entity(text: str) -> tuple[str, str, int, int | None]:
    """``net1.inputs[0][1]`` -> ``("net1", "inputs", 0, 1)``; ``net1.outputs[0][0]``; ``net1.inputs[1]`` -> index None."""
    import re

    m = re.fullmatch(r"([A-Za-z_]\w*)\.(inputs|outputs)\[(\d+)\](?:\[(\d+)\])?", text.strip())
    if m is None:
        raise ValueError(text)
    return m.group(1), m.group(2), int(m.group(3)), None if m.group(4) is None else int(m.group(4))


@dataclass(frozen=True)
class Imported:
    """A PEtab SciML network as a config's ``networks.NET`` section."""

    id: str
    file: Path  # the network YAML
    layers: list[str]  # ids of the layers with arrays, in order
    names: dict[tuple[str, str], str]  # (layer id, array) -> the config's name of it (weight0, or layer1.weight)
    section: dict  # networks.NET without inputs, fixed and frozen
    arrays: dict[str, np.ndarray]  # the weights file's contents (NET.npz)
    compiled: str | None  # None: an MLP chain; else why the network is a graph (``file``) instead


def import_network(path: Path, net: str, arrays: list[Path], arguments: Sequence[int | tuple[int, ...]]) -> Imported:
    """The network ``net`` of YAML ``path``, its weights from the array files, fed per placeholder an input
    vector of ``arguments`` entries (or an array of that shape, a tuple): an MLP chain
    (``hidden``/``activation``) where it is one, else a graph (``file``)."""
    import math

    import torch

    from .network import load_hdf5, read_graph

    graph = read_graph(path)  # every layer and operation checked
    try:
        chain: Chain | None = read_network(path, net)
        why = None
    except ConfigError as exc:
        chain, why = None, exc.message
    shapes = [tuple(a) if isinstance(a, tuple) else (a,) for a in arguments]
    n_inputs = sum(math.prod(shape) for shape in shapes)
    if chain is not None and n_inputs != chain.sizes[0]:
        raise ConfigError(f"network {net} takes {chain.sizes[0]} inputs; the hybridization table sets "
                          f"{n_inputs}", where=str(path))
    if chain is not None and all(len(shape) == 1 for shape in shapes):
        weights = read_weights(arrays, chain)
        names = {(lid, part): f"{part}{k}" for k, lid in enumerate(chain.layers) for part in ("weight", "bias")}
        section = {"outputs": chain.sizes[-1], "hidden": chain.sizes[1:-1], "activation": chain.activation,
                   "normalize": False, "weights": f"{net}.npz"}
        return Imported(net, path, chain.layers, names, section, weights, None)
    graph = graph.double()
    load_hdf5(graph, arrays, net)
    if len(arguments) != len(graph.placeholders):
        raise ConfigError(f"network {net} takes {len(graph.placeholders)} inputs (placeholders); the hybridization "
                          f"sets {len(arguments)}", where=str(path))
    try:
        with torch.no_grad():
            out = graph.eval()(*(torch.zeros(shape, dtype=torch.float64) for shape in shapes))
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"network {net} cannot be evaluated on inputs of shapes {shapes}: {first}",
                          where=str(path)) from None
    layers = list(dict.fromkeys(lid for lid, _ in graph.arrays))
    names = {(lid, part): f"{lid}.{part}" for lid, part in graph.arrays}
    stored = {f"{lid}.{part}": p.detach().numpy().copy()
              for lid, layer in graph.layers.items() for part, p in layer.named_parameters()}
    section = {"outputs": int(out.numel()), "file": f"{net}.yaml", "normalize": False, "weights": f"{net}.npz"}
    if len(shapes) > 1 or any(len(shape) > 1 for shape in shapes):
        section["arguments"] = [list(shape) if len(shape) > 1 else shape[0] for shape in shapes]
    return Imported(net, path, layers, names, section, stored, why)
