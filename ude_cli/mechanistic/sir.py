"""SIR epidemic model (Kermack–McKendrick) in a closed population of size N.

    dS/dt = -beta*S*I/N
    dI/dt = beta*S*I/N - gamma*I
    dR/dt = gamma*I

S, I and R are the susceptible, infectious and removed; beta is the transmission rate, gamma the
recovery rate (1/gamma the infectious period) and R0 = beta/gamma. N is a constant of the config.

Citation: W. O. Kermack and A. G. McKendrick, "A contribution to the mathematical theory of
epidemics", *Proc. R. Soc. Lond. A* 115, 700–721 (1927).
"""

from .base import BuiltinModel, ParameterDefault

MODEL = BuiltinModel(
    name="sir",
    summary="susceptible-infectious-removed epidemic (Kermack & McKendrick 1927)",
    states={"S": "susceptible", "I": "infectious", "R": "removed"},
    parameters={
        "beta": ParameterDefault(1.0, "transmission rate", unit="1/{t}"),
        "gamma": ParameterDefault(0.5, "recovery rate", unit="1/{t}"),
    },
    equations={"S": "-beta*S*I/N", "I": "beta*S*I/N - gamma*I", "R": "gamma*I"},
    constants={"N": None},
    constant_descriptions={"N": "population size"},
    citation="Kermack & McKendrick (1927) Proc. R. Soc. Lond. A 115:700-721",
)
