"""Michaelis–Menten substrate depletion.

    dS/dt = -Vmax*S/(Km + S)

S is the substrate concentration, Vmax the maximal reaction rate and Km the Michaelis constant
(the concentration at half the maximal rate).

Citation: L. Michaelis and M. L. Menten, "Die Kinetik der Invertinwirkung", *Biochem. Z.* 49,
333–369 (1913); K. A. Johnson and R. S. Goody, "The original Michaelis constant", *Biochemistry*
50, 8264–8269 (2011).
"""

from .base import BuiltinModel, ParameterDefault

MODEL = BuiltinModel(
    name="michaelis_menten",
    summary="enzyme-catalysed substrate depletion (Michaelis & Menten 1913)",
    states={"S": "substrate concentration"},
    parameters={
        "Vmax": ParameterDefault(1.0, "maximal reaction rate", unit="{S}/{t}"),
        "Km": ParameterDefault(1.0, "Michaelis constant", unit="{S}"),
    },
    equations={"S": "-Vmax*S/(Km + S)"},
    citation="Michaelis & Menten (1913) Biochem. Z. 49:333-369",
)
