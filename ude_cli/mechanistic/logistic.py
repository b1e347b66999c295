"""Logistic growth (Verhulst).

    dN/dt = r*N*(1 - N/K)

N is the population (or size), r the intrinsic growth rate and K the carrying capacity.

Citation: P.-F. Verhulst, "Notice sur la loi que la population suit dans son accroissement",
*Correspondance mathématique et physique* 10, 113–121 (1838).
"""

from .base import BuiltinModel, ParameterDefault

MODEL = BuiltinModel(
    name="logistic",
    summary="logistic growth to a carrying capacity (Verhulst 1838)",
    states={"N": "population or size"},
    parameters={
        "r": ParameterDefault(1.0, "intrinsic growth rate", unit="1/{t}"),
        "K": ParameterDefault(100.0, "carrying capacity", unit="{N}"),
    },
    equations={"N": "r*N*(1 - N/K)"},
    citation="Verhulst (1838) Correspondance mathematique et physique 10:113-121",
)
