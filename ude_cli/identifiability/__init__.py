"""How sure a fit is: intervals for the learned values, and which of them the data cannot identify.

- :mod:`.structural`: before fitting, from the equations: which learned parameters a network can imitate;
- :mod:`.function`: the likelihood whose curvature and profiles give the intervals, and its calibration;
- :mod:`.hessian`: quick Wald intervals from the observed (or Gauss-Newton) information, with the
  network held fixed or profiled out;
- :mod:`.profile`: profile likelihoods, everything else (network included) re-optimised at each point;
- :mod:`.bands`: confidence and prediction bands of the predictions by sampling the Wald distribution;
- :mod:`.uncertainty`: what runs after a fit, which interval is reported, and the table columns.
"""

from .uncertainty import Uncertainty, assess, learned_names, profile_request, table_columns

__all__ = ["Uncertainty", "assess", "learned_names", "profile_request", "table_columns"]
