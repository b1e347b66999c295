"""Damped, optionally forced, Duffing oscillator.

    dx/dt = v
    dv/dt = -delta*v - alpha*x - beta*x**3 + gamma*cos(omega*t)

With beta = 0 and gamma = 0 (their defaults, fixed) it is the damped harmonic oscillator
x'' + delta x' + alpha x = 0; free beta gives the Duffing oscillator's cubic stiffness, and
gamma, omega a periodic forcing.

Citation: G. Duffing, *Erzwungene Schwingungen bei veränderlicher Eigenfrequenz und ihre
technische Bedeutung*, Vieweg (1918); I. Kovacic and M. J. Brennan (eds.), *The Duffing
Equation*, Wiley (2011), ch. 1.
"""

from .base import BuiltinModel, ParameterDefault

MODEL = BuiltinModel(
    name="damped_oscillator",
    summary="damped oscillator with optional cubic (Duffing) stiffness and forcing (Duffing 1918)",
    states={"x": "displacement", "v": "velocity"},
    parameters={
        "delta": ParameterDefault(0.1, "damping coefficient", unit="1/{t}"),
        "alpha": ParameterDefault(1.0, "linear stiffness (squared natural frequency)", unit="1/{t}²"),
        "beta": ParameterDefault(0.0, "cubic stiffness (Duffing term)", positive=False, fixed=True, unit="1/({x}²·{t}²)"),
        "gamma": ParameterDefault(0.0, "forcing amplitude", positive=False, fixed=True, unit="{x}/{t}²"),
        "omega": ParameterDefault(1.0, "forcing angular frequency", fixed=True, unit="rad/{t}"),
    },
    equations={"x": "v", "v": "-delta*v - alpha*x - beta*x**3 + gamma*cos(omega*t)"},
    citation="Duffing (1918) Erzwungene Schwingungen; Kovacic & Brennan (2011) The Duffing Equation, ch. 1",
)
