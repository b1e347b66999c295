"""SEIR epidemic model: SIR with a latent (exposed, not yet infectious) class.

    dS/dt = -beta*S*I/N
    dE/dt = beta*S*I/N - sigma*E
    dI/dt = sigma*E - gamma*I
    dR/dt = gamma*I

1/sigma is the mean latent period, 1/gamma the mean infectious period, R0 = beta/gamma.
N is a constant of the config.

Citation: R. M. Anderson and R. M. May, *Infectious Diseases of Humans: Dynamics and Control*,
Oxford University Press (1991), ch. 6; M. J. Keeling and P. Rohani, *Modeling Infectious Diseases
in Humans and Animals*, Princeton University Press (2008), §2.5.
"""

from .base import BuiltinModel, ParameterDefault

MODEL = BuiltinModel(
    name="seir",
    summary="SIR with a latent class (Anderson & May 1991; Keeling & Rohani 2008)",
    states={"S": "susceptible", "E": "exposed (latent)", "I": "infectious", "R": "removed"},
    parameters={
        "beta": ParameterDefault(1.0, "transmission rate", unit="1/{t}"),
        "sigma": ParameterDefault(0.5, "rate of becoming infectious (1/latent period)", unit="1/{t}"),
        "gamma": ParameterDefault(0.5, "recovery rate", unit="1/{t}"),
    },
    equations={
        "S": "-beta*S*I/N",
        "E": "beta*S*I/N - sigma*E",
        "I": "sigma*E - gamma*I",
        "R": "gamma*I",
    },
    constants={"N": None},
    constant_descriptions={"N": "population size"},
    citation="Anderson & May (1991) Infectious Diseases of Humans, ch. 6; Keeling & Rohani (2008) sec. 2.5",
)
