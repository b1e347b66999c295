"""PEtab: read a PEtab v1 problem (SBML model + TSV tables) and translate it into a ``ude`` config.

One module per concern:

- :mod:`.tables`: the problem YAML and the TSV tables, checked column by column;
- :mod:`.sbml`: the SBML model (python-libsbml + sbmlmath) as sympy, printed in ``ude``'s expression language;
- :mod:`.problem`: the two together, resolved: states, their right-hand sides and initial values, parameters,
  conditions, observables with their noise models, the measurements;
- :mod:`.convert`: a resolved problem as a ``ude`` config (YAML) + data CSV that ``ude fit`` runs;
- :mod:`.export` (with :mod:`.writer`): a ``ude`` config or fitted run as a PEtab SciML problem;
- :mod:`.evaluate`: the log-likelihood, its gradient and the simulations at given parameter values,
  computed by the ordinary ``ude`` machinery from the converted config.

What a problem uses that is not supported raises :class:`~ude_cli.errors.ConfigError` naming the file and
the feature (exit code 3 on the command line).
"""

from __future__ import annotations

from .convert import import_problem
from .evaluate import Evaluation, evaluate
from .export import Exported, export
from .problem import PetabProblem, load_problem

__all__ = ["Evaluation", "Exported", "PetabProblem", "evaluate", "export", "import_problem", "load_problem"]
