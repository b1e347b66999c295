"""One-compartment pharmacokinetic model with first-order absorption and elimination.

    d(depot)/dt = -ka*depot
    dC/dt       = ka*depot/V - ke*C

depot is the amount of drug at the absorption site (start it at the dose), C the concentration
in the central compartment, ka the absorption rate constant, ke the elimination rate constant and
V the apparent volume of distribution (clearance CL = ke*V). Its solution with C(0) = 0 is R's
``SSfol``: C(t) = dose*ka/(V*(ka - ke)) * (exp(-ke*t) - exp(-ka*t)).

Citation: M. Gibaldi and D. Perrier, *Pharmacokinetics*, 2nd ed., Marcel Dekker (1982), ch. 1;
J. C. Pinheiro and D. M. Bates, *Mixed-Effects Models in S and S-PLUS*, Springer (2000), §C.
"""

from .base import BuiltinModel, ParameterDefault

MODEL = BuiltinModel(
    name="pk_oral",
    summary="one-compartment pharmacokinetics, first-order absorption (Gibaldi & Perrier 1982)",
    states={"depot": "amount at the absorption site", "C": "central concentration"},
    parameters={
        "ka": ParameterDefault(1.0, "absorption rate constant", unit="1/{t}"),
        "ke": ParameterDefault(0.1, "elimination rate constant", unit="1/{t}"),
        "V": ParameterDefault(1.0, "volume of distribution", unit="{depot}/{C}"),
    },
    equations={"depot": "-ka*depot", "C": "ka*depot/V - ke*C"},
    citation="Gibaldi & Perrier (1982) Pharmacokinetics, ch. 1; Pinheiro & Bates (2000) Mixed-Effects Models",
)
