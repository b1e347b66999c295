"""The registry of built-in mechanistic models: one small module per model.

Each module holds one :class:`~ude_cli.mechanistic.base.BuiltinModel` named ``MODEL`` whose
docstring gives the equations and the citation. To add a model, write its module and add it to
``_MODULES`` below.
"""

from __future__ import annotations

from ..errors import ConfigError, did_you_mean, one_of
from . import logistic, lotka_volterra, michaelis_menten, oscillator, pk_oral, seir, sir
from .base import BuiltinModel, ParameterDefault

_MODULES = (lotka_volterra, logistic, sir, seir, michaelis_menten, oscillator, pk_oral)

#: model name -> model
MODELS: dict[str, BuiltinModel] = {m.MODEL.name: m.MODEL for m in _MODULES}


def get_model(name: str, where: str | None = None) -> BuiltinModel:
    """The built-in model called ``name``; a :class:`ConfigError` naming the nearest one if unknown."""
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(
            f"unknown built-in model '{name}'{did_you_mean(name, MODELS)}; expected {one_of(MODELS)}",
            where=where,
        ) from None


__all__ = ["MODELS", "BuiltinModel", "ParameterDefault", "get_model"]
