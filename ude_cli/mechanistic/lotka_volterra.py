"""Lotka–Volterra predator–prey model.

    dx/dt = alpha*x - beta*x*y
    dy/dt = -gamma*y + delta*x*y

x is the prey, y the predator; alpha is the prey's growth rate, beta the predation rate, gamma
the predator's death rate and delta the predator's growth per prey eaten.

Citation: A. J. Lotka, *Elements of Physical Biology*, Williams & Wilkins (1925);
V. Volterra, "Fluctuations in the abundance of a species considered mathematically",
*Nature* 118, 558–560 (1926).
"""

from .base import BuiltinModel, ParameterDefault

MODEL = BuiltinModel(
    name="lotka_volterra",
    summary="predator-prey interaction (Lotka 1925, Volterra 1926)",
    states={"x": "prey", "y": "predator"},
    parameters={
        "alpha": ParameterDefault(1.0, "prey growth rate", unit="1/{t}"),
        "beta": ParameterDefault(0.1, "predation rate", unit="1/({y}·{t})"),
        "gamma": ParameterDefault(1.0, "predator death rate", unit="1/{t}"),
        "delta": ParameterDefault(0.1, "predator growth per prey eaten", unit="1/({x}·{t})"),
    },
    equations={"x": "alpha*x - beta*x*y", "y": "-gamma*y + delta*x*y"},
    citation="Lotka (1925) Elements of Physical Biology; Volterra (1926) Nature 118:558-560",
)
