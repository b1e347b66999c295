"""ude: fit universal differential equations (a mechanistic ODE plus neural corrections) to data.

The public library API::

    from ude_cli import load_config, fit
    result = fit(load_config("configs/lotka_volterra.yaml"))
    result.values, result.predictions, result.metrics
    result.save("runs/lotka_volterra")

Names are imported on first use, so ``import ude_cli`` (and ``ude --help``) stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "load_config": "ude_cli.config",
    "Config": "ude_cli.config",
    "fit": "ude_cli.api",
    "check": "ude_cli.api",
    "FitResult": "ude_cli.runs.results",
    "UdeError": "ude_cli.errors",
    "ConfigError": "ude_cli.errors",
    "DataError": "ude_cli.errors",
    "FitError": "ude_cli.errors",
    "MODELS": "ude_cli.mechanistic",
    # discover, forecast, report (issue 5)
    "load_run": "ude_cli.runs.load",
    "discover": "ude_cli.discovery.discover",
    "DiscoverSettings": "ude_cli.discovery.discover",
    "Discovery": "ude_cli.discovery.discover",
    "discover_run": "ude_cli.discovery.files",
    "forecast": "ude_cli.forecast",
    "write_report": "ude_cli.runs.report",
    # PEtab (issue 17)
    "import_problem": "ude_cli.petab.convert",
    "evaluate": "ude_cli.petab.evaluate",
}

__all__ = [*sorted(_EXPORTS), "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .api import check as check
    from .api import fit as fit
    from .config import Config as Config
    from .config import load_config as load_config
    from .discovery.discover import DiscoverSettings as DiscoverSettings
    from .discovery.discover import Discovery as Discovery
    from .discovery.discover import discover as discover
    from .discovery.files import discover_run as discover_run
    from .errors import ConfigError as ConfigError
    from .errors import DataError as DataError
    from .errors import FitError as FitError
    from .errors import UdeError as UdeError
    from .forecast import forecast as forecast
    from .mechanistic import MODELS as MODELS
    from .petab.convert import import_problem as import_problem
    from .petab.evaluate import evaluate as evaluate
    from .runs.load import load_run as load_run
    from .runs.report import write_report as write_report
    from .runs.results import FitResult as FitResult


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ude_cli' has no attribute '{name}'")
