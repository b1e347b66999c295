"""The schema of ``config.yaml`` (pydantic) and :func:`load_config`.

Every field is documented here; ``ude check CONFIG`` prints the resolved config with every default
filled in. The schema checks each field on its own (types, ranges, known names of solvers,
optimisers and activations); :mod:`ude_cli.problem` checks how the fields fit together (states,
columns, names used in equations) and reads the data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from .errors import ConfigError, ProblemList, Problems, UdeError, did_you_mean
from .likelihood.noise import NOISE_DISTRIBUTIONS as _NOISE_DISTRIBUTIONS

#: Largest config file read (bytes): configs are small; a huge file is a mistake or an attack.
MAX_CONFIG_BYTES = 1_000_000
#: Most values a config may hold once its YAML aliases are expanded (no "billion laughs").
MAX_YAML_NODES = 200_000
#: Most YAML aliases (``*name``) expanded in one file: guards against "billion laughs" files.
MAX_YAML_ALIASES = 100

FIXED_STEP_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams")
ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
#: stiff methods, solved by the compiled engine only (:mod:`ude_cli.engines.bdf`)
STIFF_METHODS = ("bdf",)
SOLVER_METHODS = ADAPTIVE_METHODS + FIXED_STEP_METHODS + STIFF_METHODS + ("auto",)
#: methods the compiled engine solves (:mod:`ude_cli.engines.compiled`)
COMPILED_METHODS = ("euler", "midpoint", "rk4", "dopri5", "bdf", "auto")
ACTIVATIONS = ("tanh", "relu", "gelu", "softplus", "rbf", "sigmoid", "silu")


def reason_not_compiled(method: str, adjoint: bool, networks: Mapping[str, NetworkSpec] | None = None) -> str | None:
    """Why a solve with these settings (and networks) goes to torchdiffeq instead of the compiled engine
    (None: it does not)."""
    graphs = [(name, spec.file) for name, spec in (networks or {}).items() if spec.file is not None]
    if graphs:
        return (f"network {graphs[0][0]} is a network YAML's graph ({graphs[0][1]}), which only torchdiffeq "
                f"evaluates (the compiled engine compiles chains of fully connected layers: hidden/activation)")
    if adjoint:
        return "adjoint gradients were asked for (solver.adjoint: true)"
    if method not in COMPILED_METHODS:
        return f"it solves {', '.join(COMPILED_METHODS)}, not {method}"
    return None


Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Path_ = Annotated[str, Field(min_length=1)]
#: Largest seed accepted (numpy and torch both take it, with room for per-start offsets).
MAX_SEED = 2**32 - 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, populate_by_name=True)


# -- data ------------------------------------------------------------------------------------------

class ValidationSpec(_Strict):
    """A validation window held out of training and scored as a forecast. Give one of the two."""

    last_fraction: float | None = Field(
        None, gt=0, lt=1, description="The last fraction of each experiment's time points (e.g. 0.2).")
    after: Finite | None = Field(None, description="Every time point after this time.")

    @model_validator(mode="after")
    def _one(self) -> ValidationSpec:
        if (self.last_fraction is None) == (self.after is None):
            raise ValueError("give exactly one of 'last_fraction' or 'after'")
        return self


class DataSpec(_Strict):
    """Where the time series are and how their columns map to the model's states."""

    file: Path_ | None = Field(None, description="CSV file, relative to the config file.")
    files: list[Path_] | None = Field(
        None, min_length=1, description="Several CSV files, one experiment each (named by file stem).")
    time: str = Field("t", description="Name of the time column.")
    experiment: str | None = Field(
        None, description="Column naming the experiment of each row, in a long-format CSV.")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="state -> CSV column. A state without a column is never observed.")
    units: dict[str, str] = Field(
        default_factory=dict, description="CSV column (or the time column) -> unit, for axis labels.")
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="State, CSV column, observable or the time column -> how figures, tables and the report "
                    "name it, e.g. {C: Concentration, time_h: Time after the dose}; it replaces the column name, "
                    "and the unit of data.units follows it ('Concentration [mg/L]'). A state's own label wins "
                    "over its column's.")
    validation: ValidationSpec | None = Field(None, description="Held-out forecast window; none by default.")
    delimiter: str = Field(",", min_length=1, max_length=1,
                           description="Field separator of the CSV files: one character, or 'tab' or 'space'.")
    decimal: Literal[".", ","] = Field(
        ".", description="Decimal mark of the numbers: '.' or ',' (a comma-decimal file, e.g. from a German or "
                         "French spreadsheet, is usually ';'-separated: give delimiter: ';' too).")

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        if (self.file is None) == (self.files is None):
            raise ValueError("give exactly one of 'file' or 'files'")
        if self.decimal == "," and self.delimiter == ",":
            raise ValueError("decimal ',' needs another delimiter: set delimiter: ';' (or tab)")
        return self

    @field_validator("delimiter", mode="before")
    @classmethod
    def _named_delimiter(cls, value: Any) -> Any:
        # 'tab' and a YAML single-quoted '\t' (a backslash and a t) both mean the tab character
        return {"tab": "\t", "\\t": "\t", "space": " "}.get(value, value) if isinstance(value, str) else value

    @field_validator("delimiter")
    @classmethod
    def _plain_delimiter(cls, value: str) -> str:
        if value in ('"', "\r", "\n"):
            raise ValueError(f"cannot be {value!r} (a quote or a line break); use e.g. ',', ';' or tab")
        return value

    @property
    def paths(self) -> list[str]:
        return [self.file] if self.file is not None else list(self.files or [])


# -- model -------------------------------------------------------------------------------------------

class PriorSpec(_Strict):
    """A prior distribution of a value: its log-density is a term of the objective, so that a fit maximises
    the log-posterior (as PEtab's priors ask; `ude import` writes them)."""

    distribution: Literal["normal", "laplace", "log-normal", "log-laplace", "uniform", "cauchy", "chisquare",
                          "exponential", "gamma", "log-uniform", "rayleigh"] = Field(
        description="normal (mean, sd), laplace (location, scale), log-normal and log-laplace (of log x), "
                    "uniform (lower, upper), cauchy (location, scale), chisquare (degrees of freedom), exponential "
                    "(scale), gamma (shape, scale), log-uniform (lower, upper), rayleigh (scale): PEtab v2's list.")
    parameters: tuple[Finite, ...] = Field(description="The distribution's parameters (one or two), as listed there.")
    scale: Literal["lin", "log", "log10"] = Field(
        "lin", description="The density is of the value (lin) or of its logarithm (log, log10).")
    truncated: tuple[float, float] | None = Field(
        None, description="[lower, upper]: the prior truncated to this interval (its density divided by the "
                          "probability the interval has; -inf outside), as PEtab v2 truncates a prior to the "
                          "parameter's bounds. Default: not truncated.")

    @model_validator(mode="after")
    def _defined(self) -> PriorSpec:
        from .likelihood.prior import check, log_mass

        why = check(self.distribution, self.parameters)
        if why is not None:
            raise ValueError(f"prior {self.distribution} {list(self.parameters)}: {why}")
        if self.truncated is not None:
            lower, upper = self.truncated
            if not lower < upper or not math.isfinite(log_mass(self.distribution, tuple(self.parameters),
                                                                (lower, upper))):
                raise ValueError(f"prior {self.distribution} {list(self.parameters)}: truncated to "
                                 f"[{lower:g}, {upper:g}], which has no probability under it")
        return self


class ParameterSpec(_Strict):
    """One mechanistic parameter. A bare number is shorthand for ``{init: number}``."""

    init: Finite | None = Field(
        None, description="Starting value (required for custom equations; built-ins have defaults).")
    fixed: bool | None = Field(None, description="Keep at `init` instead of learning it (default: learned).")
    bounds: tuple[Finite | None, Finite | None] | None = Field(
        None, description="[lower, upper]; either may be null. Enforced by a smooth transform.")
    positive: bool | None = Field(
        None, description="Learn on log scale, so the value stays > 0 (default: true for a built-in model's "
                          "parameters, false for custom equations).")
    unit: str | None = Field(None, description="Unit, shown in tables and reports.")
    per_experiment: bool | None = Field(
        None, description="One value per experiment (each subject's own clearance, say), all starting at `init`; "
                          "params.csv lists each experiment's value (default: one value shared by all).")
    prior: PriorSpec | None = Field(
        None, description="A prior distribution of the value: the fit maximises the log-posterior.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return {"init": value}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ParameterSpec:
        if self.bounds is not None:
            lo, hi = self.bounds
            if lo is not None and hi is not None and not lo < hi:
                raise ValueError(f"bounds must have lower < upper, got [{lo}, {hi}]")
            if self.positive and hi is not None and hi <= 0:
                raise ValueError(f"a positive parameter needs an upper bound > 0, got {hi}")
        if self.prior is not None and self.init is not None and not self.fixed:
            import torch

            from .likelihood.prior import log_density

            p = self.prior
            at = float(log_density(p.distribution, tuple(p.parameters), torch.tensor([float(self.init)],
                                   dtype=torch.float64), p.scale, p.truncated)[0])
            if at == -math.inf:  # the fit could not leave it: every step would be as improbable
                raise ValueError(f"init {self.init:g} has probability 0 under its prior {p.distribution} "
                                 f"{list(p.parameters)}{' truncated to ' + str(list(p.truncated)) if p.truncated else ''}"
                                 f": start it inside the prior's support")
        return self


class ColumnRef(_Strict):
    """A value read from a CSV column: its first row in each experiment."""

    column: str = Field(description="CSV column holding the value (constant within an experiment).")


class InitialSpec(_Strict):
    """Initial value of one state. A number is shorthand for ``{value: number}``, ``learn`` for
    ``{learn: true}``. Default: the first observation of the state in each experiment."""

    value: Finite | None = Field(None, description="Given initial value (all experiments).")
    column: str | None = Field(None, description="Read from this CSV column (first row of each experiment).")
    formula: str | None = Field(
        None, description="An expression of parameters and constants, e.g. 'Asym/(1 + exp((xmid - t0)/scal))' "
                          "(`t0` is the experiment's start time), or of the outputs NET[i] of a network fed "
                          "parameters and constants only: learned through its parameters (and weights).")
    learn: bool = Field(False, description="Learn it (one value per experiment), starting from the value.")
    positive: bool = Field(False, description="When learned: keep it > 0 (log scale).")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return {"value": value}
        if value == "learn":
            return {"learn": True}
        if value in ("observed", "data"):
            return {}
        return value

    @model_validator(mode="after")
    def _one_source(self) -> InitialSpec:
        if sum(x is not None for x in (self.value, self.column, self.formula)) > 1:
            raise ValueError("give one of 'value', 'column' or 'formula'")
        if self.formula is not None and self.learn:
            raise ValueError("an initial value given by a formula is learned through its parameters; "
                             "remove 'learn'")
        return self


def _experiment_names(value: Any) -> Any:
    """A list of experiment names as text: an experiment named 2 in the data is "2"."""
    if isinstance(value, list):
        return [str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for v in value]
    return value


class PreequilibrationSpec(_Strict):
    """Start every experiment at a steady state (PEtab's pre-equilibration): the model, with some constants
    changed, is settled from its initial values until nothing moves; the experiment then starts from there,
    with its own constants. Linear conservation laws (totals that the equations keep) hold at their initial
    values, so that a model with conserved moieties has one steady state."""

    constants: dict[str, Finite | ColumnRef] = Field(
        default_factory=dict, description="Constant -> its value while the model settles: a number, or "
                                          "{column: ...} per experiment (the others keep the experiment's values).")
    reset: list[str] = Field(
        default_factory=list, description="States that take their model.initial values again after the steady "
                                          "state (a dose given at t0); the others start from the steady state.")
    experiments: list[str] | None = Field(
        None, min_length=1, description="The experiments that settle first (default: all); the others start at "
                                        "their initial values.")

    @field_validator("experiments", mode="before")
    @classmethod
    def _names_as_text(cls, value: Any) -> Any:
        return _experiment_names(value)


class EventSpec(_Strict):
    """Jumps of states at given times: a dose, a feed, a medium change, a PEtab period's condition. At each time
    the states named in ``set`` take their formulas' values, computed from the states just before (all at once),
    the parameters and the constants; the solver stops there and starts again from the new states, and the
    gradient goes through the jump. An observation at that time sees the states after the jump, or before it with
    ``observed: before`` (a trough sample taken just before a dose)."""

    at: list[Finite] | None = Field(None, min_length=1, description="The times of the jumps, e.g. [0, 12, 24] for a "
                                                                   "dose every 12 h (a jump at the model's start time "
                                                                   "changes its initial state).")
    every: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = Field(
        None, description="Instead of `at`: a jump every this many time units, from `first` to `last` (both "
                          "required, both included when on the step), e.g. every: 12, first: 0, last: 84 for a dose "
                          "every 12 h for a week; a forecast past `last` has no more.")
    first: Finite | None = Field(None, description="With `every`: the time of the first jump.")
    last: Finite | None = Field(None, description="With `every`: no jump after this time.")
    when: str | None = Field(
        None, description="Instead of `at`: a condition of the states (and parameters, constants, t), 'a < b' (or "
                          "<=, >, >=); the jump happens each time it becomes true (a population below one "
                          "individual is gone: when: 'N < 1', set: {N: '0'}), located by bisection to the solver's "
                          "tolerance, the gradient through the time it happens. True at the start, it happens only "
                          "once it has been false (SBML's initialValue true).")
    column: str | None = Field(
        None, description="Instead of `at`: a data column; each row with a value in it is a jump at that row's time "
                          "in its experiment (dosing records), and the formulas read the value under the column's "
                          "name, e.g. set: {gut: 'gut + dose'} with column: dose.")
    set: dict[str, str] = Field(min_length=1, description="state -> its value after the jump, a formula of the states "
                                                          "before it, parameters and constants, e.g. 'gut + dose'.")
    experiments: list[str] | None = Field(
        None, min_length=1, description="The experiments it happens in (default: all).")
    observed: Literal["after", "before"] = Field(
        "after", description="What an observation at a jump's time sees: the states 'after' the jump (PEtab's "
                             "convention: a measurement at a period's start sees its condition), or 'before' it (a "
                             "trough sample taken just before a dose, as NONMEM reads a sample row before its dose "
                             "row).")

    @field_validator("at", mode="before")
    @classmethod
    def _one_time(cls, value: Any) -> Any:
        return [value] if isinstance(value, int | float) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _times_or_column(self) -> EventSpec:
        given = [name for name in ("at", "every", "when", "column") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give one of 'at' (the times), 'every' (with 'first' and 'last'), 'when' (a condition) "
                             "or 'column' (a data column of dosing records)"
                             + (f", not {' and '.join(given)}" if given else ""))
        if self.when is not None and self.observed != "after":
            raise ValueError("'observed' is for jumps at given times: no observation falls exactly at the time a "
                             "condition ('when') becomes true")
        if (self.first is not None or self.last is not None) and self.every is None:
            raise ValueError("'first' and 'last' go with 'every'")
        if self.every is not None:
            if self.first is None or self.last is None:
                raise ValueError("'every' needs 'first' and 'last' (the first and the last time it may happen)")
            if self.last < self.first:
                raise ValueError(f"last ({self.last:g}) is before first ({self.first:g})")
            if len(self.times()) > 100_000:
                raise ValueError(f"every {self.every:g} from {self.first:g} to {self.last:g} is "
                                 f"{len(self.times())} jumps: at most 100000")
        if self.column is not None and not self.column.isidentifier():
            raise ValueError(f"column {self.column!r}: the formulas read it by its name, which must be a name "
                             f"(letters, digits, _)")
        return self

    @field_validator("experiments", mode="before")
    @classmethod
    def _names_as_text(cls, value: Any) -> Any:  # an experiment named 2 in the data is "2"
        return _experiment_names(value)

    def times(self) -> list[float]:
        """The times of ``at``, or of ``every`` from ``first`` to ``last`` (``last`` included when a step lands
        on it, to a relative 1e-9 of the step); none with ``column``. Each time is rounded to 15 significant digits,
        so that every: 0.1 lands on a data time 0.3 (not 0.30000000000000004, after it)."""
        if self.every is None or self.first is None or self.last is None:
            return list(self.at or ())
        count = math.floor((self.last - self.first) / self.every + 1e-9) + 1
        return [float(f"{self.first + k * self.every:.15g}") for k in range(count)]


class ModelSpec(_Strict):
    """The mechanistic model: a built-in by name, or states and equations written out."""

    builtin: str | None = Field(None, description="Name of a built-in model (`ude models` lists them).")
    states: list[str] | None = Field(None, min_length=1, description="State names, for custom equations.")
    equations: dict[str, str] | None = Field(
        None, description="state -> right-hand side of d(state)/dt, e.g. 'alpha*x + U[0]'; a network's output "
                          "is NAME[i], or a bare NAME for a network with one output ('alpha*x + H').")
    corrections: dict[str, str] = Field(
        default_factory=dict, description="state -> term added to a built-in (or written) equation, e.g. 'U[0]'.")
    parameters: dict[str, ParameterSpec] = Field(
        default_factory=dict, description="Parameter settings (overrides for a built-in).")
    constants: dict[str, Finite | ColumnRef] = Field(
        default_factory=dict, description="Named constants: a number, or {column: ...} per experiment.")
    initial: dict[str, InitialSpec] = Field(
        default_factory=dict, description="state -> initial value settings (default: first observation).")
    t0: Finite | None = Field(
        None, description="Time of the initial state (default: each experiment's first time). "
                          "May also be given as `t0` inside `initial`.")
    preequilibration: PreequilibrationSpec | None = Field(
        None, description="Start each experiment at a steady state of the model under other constants "
                          "(docs/training.md#pre-equilibration).")
    events: list[EventSpec] = Field(
        default_factory=list, description="Jumps of states at given times: doses, feeds "
                                          "(docs/training.md#events).")

    @model_validator(mode="before")
    @classmethod
    def _t0_in_initial(cls, value: Any) -> Any:
        if isinstance(value, dict) and isinstance(value.get("initial"), dict) and "t0" in value["initial"]:
            value = dict(value)
            initial = dict(value["initial"])
            t0 = initial.pop("t0")
            if value.get("t0") is not None:
                raise ValueError("give t0 once: either 'model.t0' or 'model.initial.t0'")
            value["t0"], value["initial"] = t0, initial
        return value

    @model_validator(mode="after")
    def _builtin_or_equations(self) -> ModelSpec:
        if self.builtin is None and self.equations is None:
            raise ValueError("give either 'builtin' (a model name) or 'states' and 'equations'")
        if self.builtin is not None and (self.equations is not None or self.states is not None):
            raise ValueError("give either 'builtin' or 'states' + 'equations', not both "
                             "(add terms to a built-in with 'corrections')")
        return self


class NetworkSpec(_Strict):
    """A neural network whose outputs ``NAME[i]`` can be used in equations."""

    inputs: list[str] = Field(min_length=1, description="States (and optionally 't') fed to the network; "
                                                          "shared parameters and constants may be inputs too, "
                                                          "and formulas of them (S/N).")
    outputs: int = Field(1, ge=1, le=64, description="Number of outputs, used as NAME[0], NAME[1], ...")
    hidden: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default_factory=lambda: [32, 32], max_length=16, description="Sizes of the hidden layers.")
    activation: Literal[ACTIVATIONS] = Field(  # type: ignore[valid-type]
        "tanh", description="tanh, relu, gelu, softplus, rbf (exp(-z^2), as in the UDE paper), sigmoid, silu.")
    final_scale: NonNegative = Field(
        0.01, description="Scale of the last layer's initial weights: small, so the correction "
                                "starts near zero and the fit starts from the mechanistic model.")
    normalize: bool = Field(
        True, description="Standardise each input by the data's mean and spread (and outputs by the state's "
                          "spread per unit time), so one network works for any units.")
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED, description="Seed of the weight initialisation (default: training.seed + 100 + index).")
    weights: Path_ | None = Field(
        None, description="Initial weights instead of random ones: a .npz file (relative to the config) with "
                          "weight0, bias0, weight1, ... per layer in PyTorch's layout (weight: (out, in)), as "
                          "`ude import` writes a PEtab SciML network's.")
    fixed: bool = Field(False, description="Keep the weights as given by `weights` instead of learning them.")
    frozen: list[Annotated[str, Field(pattern=r"^((weight|bias)[0-9]+|[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*)$")]] = Field(
        default_factory=list, description="Single arrays kept as given by `weights` (the rest is learned): "
                                          "weight0, bias0, weight1, ... (layer 0 is the first); LAYER.ARRAY "
                                          "(layer1.weight) for a `file` network.")
    file: Path_ | None = Field(
        None, description="A PEtab SciML network YAML (layers and a forward graph, relative to the config) "
                          "instead of hidden/activation: any layer and operation of docs/petab.md, evaluated point "
                          "by point; solved by torchdiffeq. Its `weights` name arrays LAYER.ARRAY (PyTorch layout), "
                          "without weights PyTorch's initialisation from the seed.")
    arguments: list[Annotated[int, Field(ge=1)] | list[Annotated[int, Field(ge=1)]]] | None = Field(
        None, description="A `file` network's inputs (placeholders), in order: how many of `inputs` each takes, or "
                          "its shape ([3, 10, 10]: the next 300 inputs as an array, PyTorch's layout) (default: one "
                          "vector of all of them).")
    priors: dict[Annotated[str, Field(pattern=r"^(weight|bias)[0-9]+$")], PriorSpec] = Field(
        default_factory=dict, description="A prior of every element of an array (weight0, bias0, ...; an MLP "
                                          "network's): the fit maximises the log-posterior.")

    @model_validator(mode="after")
    def _fixed_needs_weights(self) -> NetworkSpec:
        if (self.fixed or self.frozen) and self.weights is None:
            raise ValueError("a fixed network (or frozen arrays) needs its weights: give weights: FILE.npz")
        numbered = [n for n in self.frozen if "." not in n]
        if self.file is None and len(numbered) < len(self.frozen):
            raise ValueError("frozen: LAYER.ARRAY names are for a `file` network; this one's are weight0, bias0, ...")
        if self.file is not None:  # (a resolved config, every default written out, gives them as defaults)
            given = sorted(n for n in {"hidden", "activation", "final_scale"} & self.model_fields_set
                           if getattr(self, n) != type(self).model_fields[n].get_default(call_default_factory=True))
            if given:
                raise ValueError(f"a `file` network's layers are its file's: {', '.join(given)} cannot be given")
            if numbered:
                raise ValueError(f"frozen: {numbered[0]}: a `file` network's arrays are named LAYER.ARRAY "
                                 f"(layer1.weight)")
        elif self.arguments is not None:
            raise ValueError("arguments: only for a `file` network")
        taken = sum(math.prod(a) if isinstance(a, list) else a for a in self.arguments or [])
        if self.arguments is not None and taken != len(self.inputs):
            raise ValueError(f"arguments {self.arguments} take {taken} inputs; inputs has {len(self.inputs)}")
        if numbered and max(int(n.removeprefix("weight").removeprefix("bias")) for n in numbered) > len(self.hidden):
            raise ValueError(f"frozen: the network has layers 0 to {len(self.hidden)}")
        if self.priors and self.file is not None:
            raise ValueError("priors: only for a network of hidden layers (not a `file` network) yet")
        if self.priors and max(int(n.removeprefix("weight").removeprefix("bias")) for n in self.priors) > len(self.hidden):
            raise ValueError(f"priors: the network has layers 0 to {len(self.hidden)}")
        return self


# -- solver and training -------------------------------------------------------------------------

class SolverSpec(_Strict):
    """How the ODE is solved: by the compiled engine (CasADi) or torchdiffeq, see `engine`."""

    method: Literal[SOLVER_METHODS] = Field(  # type: ignore[valid-type]
        "auto", description="Adaptive (dopri5, dopri8, bosh3, ...), fixed-step (rk4, euler, midpoint, ...), "
                              "'bdf' (stiff equations: CVODES's variable-order BDF, gradients from its forward sensitivities; "
                              "compiled engine), or 'auto' (dopri5, switching to bdf when dopri5's steps show "
                              "stiffness or it fails; metrics.json says which and why).")
    rtol: Positive = Field(1e-6, description="Relative tolerance (adaptive methods).")
    atol: Positive = Field(1e-6, description="Absolute tolerance (adaptive methods).")
    step: Positive | None = Field(None, description="Step size (fixed-step methods; default: 1/10 of the "
                                                    "smallest spacing of the data).")
    adjoint: bool = Field(False, description="Adjoint gradients (memory O(1) in time) instead of direct backprop.")
    dtype: Literal["float64", "float32"] = Field("float64", description="Floating-point precision.")
    max_steps: int = Field(
        2_000, ge=10, description="Most solver steps per solve (compiled engine: between two output times); more is a "
                                   "failure (and bounds the memory a solve's gradient needs).")
    engine: Literal["auto", "compiled", "torchdiffeq"] = Field(
        "auto", description="Who solves during training: 'compiled' (the trajectory and its gradient as one "
                            "CasADi expression graph: a few milliseconds per iteration on a small UDE; methods "
                            "euler, midpoint, rk4, dopri5, bdf, auto), 'torchdiffeq' (Python stepping, every method and "
                            "the adjoint), or 'auto' (compiled where it can and is the faster: not for large "
                            "batches of large networks).")

    @model_validator(mode="after")
    def _engine_can_solve(self) -> SolverSpec:
        if self.method in STIFF_METHODS and (self.engine == "torchdiffeq" or self.adjoint):
            raise ValueError(f"method '{self.method}' is solved by the compiled engine only, with its own adjoint "
                             "gradients: use engine: auto (or compiled) and adjoint: false")
        if self.engine == "compiled":
            reason = reason_not_compiled(self.method, self.adjoint)
            if reason is not None:
                raise ValueError(f"engine 'compiled' cannot be used: {reason}; use engine: auto or torchdiffeq")
        return self


class StageSpec(_Strict):
    """One training stage."""

    optimizer: Literal["adam", "lbfgs"] = Field(description="'adam' or 'lbfgs' (strong-Wolfe line search).")
    objective: Literal["trajectory", "collocation", "multiple_shooting"] = Field(
        "trajectory", description="'trajectory': solve the ODE and compare with the data; 'collocation': match "
                                  "the right-hand side to smoothed derivatives of the data (no ODE solve; fast; "
                                  "needs every state observed); 'multiple_shooting': solve segments from free "
                                  "initial states, data term plus a continuity penalty (training.multiple_shooting).")
    window: float | None = Field(
        None, gt=0, le=1, allow_inf_nan=False,
        description="A trajectory stage on the first fraction of each experiment's time span only (curriculum; "
                    "default: the whole span).")
    iterations: int = Field(ge=1, le=10_000_000, description="Iterations of this stage.")
    lr: Positive | None = Field(None, description="Learning rate (default: 0.01 for adam, 1 for lbfgs).")
    weight_decay: NonNegative | None = Field(
        None, description="L2 penalty on network weights (default: training.weight_decay).")
    tolerance: float | None = Field(
        None, gt=0, lt=1, allow_inf_nan=False,
        description="An LBFGS stage ends early when 100 iterations lower its objective by less than this fraction "
                    "(the default stages: 1e-3; default for stages you write: only when 10 iterations gain less "
                    "than 1e-9).")

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 0.01 if self.optimizer == "adam" else 1.0


class LossSpec(_Strict):
    """The loss: mean squared error over observed cells, optionally scaled or on log scale."""

    scale: Literal["none", "std"] = Field(
        "none", description="'std' divides each state's errors by the spread of its data, so small "
                            "and large states weigh alike.")
    log: bool = Field(False, description="Compare log(predicted) with log(observed): for positive data "
                                         "whose errors are multiplicative (counts, concentrations).")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        shorthands = {"mse": {}, "scaled": {"scale": "std"}, "log": {"log": True}}
        if isinstance(value, str):
            if value not in shorthands:
                raise ValueError(f"expected one of mse, scaled, log or a mapping, got '{value}'"
                                 f"{did_you_mean(value, shorthands)}")
            return shorthands[value]
        return value


#: noise distributions (:data:`ude_cli.likelihood.noise.REGISTRY`, one module each)
NOISE_DISTRIBUTIONS = _NOISE_DISTRIBUTIONS


class NoiseParameterSpec(_Strict):
    """A noise parameter (a standard deviation, a dispersion): estimated by default. A number is
    shorthand for ``{init: number, fixed: true}`` (a known noise level), ``estimate`` for ``{}``."""

    init: Positive | None = Field(None, description="Starting value (default: from the data's spread).")
    fixed: bool = Field(False, description="Keep it at `init` instead of estimating it.")
    bounds: tuple[NonNegative | None, NonNegative | None] | None = Field(
        None, description="[lower, upper] of the estimate; either may be null (it is always > 0).")
    formula: str | None = Field(
        None, description="Instead of a value of its own: an expression of parameters (declared under "
                          "model.parameters) and constants, e.g. 's_gel1*sigma' (a PEtab noiseFormula); its "
                          "parameters are learned with the others.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return {"init": value, "fixed": True}
        if value in ("estimate", "estimated", "learn"):
            return {}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> NoiseParameterSpec:
        if self.formula is not None and (self.init is not None or self.fixed or self.bounds is not None):
            raise ValueError("a noise parameter given by a formula has no init, fixed or bounds of its own")
        if self.fixed and self.init is None:
            raise ValueError("a fixed noise parameter needs its value: give init (or just the number)")
        if self.bounds is not None:
            lo, hi = self.bounds
            if hi is not None and hi <= 0:
                raise ValueError(f"bounds exclude every positive value (upper bound {hi:g}); a noise "
                                 f"parameter is > 0")
            if lo is not None and hi is not None and not lo < hi:
                raise ValueError(f"bounds must have lower < upper, got [{lo:g}, {hi:g}]")
            if self.init is not None and not self.fixed and (
                    (lo is not None and self.init <= lo) or (hi is not None and self.init >= hi)):
                raise ValueError(f"init {self.init:g} must lie strictly inside the bounds")
        return self


class NoiseSpec(_Strict):
    """The noise model of an observable: its distribution around the prediction and its parameters.
    A name is shorthand for ``{distribution: name}``."""

    distribution: Literal[NOISE_DISTRIBUTIONS] = Field(  # type: ignore[valid-type]
        "normal", description="normal (additive, with `error`), lognormal (multiplicative: log y ~ "
                              "N(log y_hat, sigma^2)), poisson (counts), negative_binomial (overdispersed "
                              "counts: variance y_hat + y_hat^2/dispersion), laplace (absolute deviations: "
                              "density exp(-|y - y_hat|/sigma)/(2 sigma)), loglaplace (log y ~ Laplace(log y_hat, "
                              "sigma)).")
    error: Literal["constant", "proportional", "combined"] = Field(
        "constant", description="normal only: the standard deviation is sigma (constant), sigma*|y_hat| "
                                "(proportional), or sigma + sigma_rel*|y_hat| (combined).")
    sigma: NoiseParameterSpec = Field(
        default_factory=NoiseParameterSpec,
        description="normal and lognormal: the standard deviation (of log y for lognormal; the relative one "
                    "for proportional error; the absolute part for combined); laplace and loglaplace: the scale "
                    "(of log y for loglaplace; the standard deviation is sqrt(2) sigma): estimated unless a number.")
    sigma_rel: NoiseParameterSpec = Field(
        default_factory=NoiseParameterSpec, description="combined error only: the relative part.")
    dispersion: NoiseParameterSpec = Field(
        default_factory=NoiseParameterSpec,
        description="negative_binomial only: the dispersion phi (variance y_hat + y_hat^2/phi; large phi "
                    "approaches Poisson): estimated unless a number.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            aliases = {"gaussian": "normal", "log-normal": "lognormal", "log_normal": "lognormal",
                       "negative-binomial": "negative_binomial", "negbin": "negative_binomial",
                       "nb": "negative_binomial", "log-laplace": "loglaplace", "log_laplace": "loglaplace",
                       "double_exponential": "laplace"}
            name = aliases.get(value.strip().lower(), value.strip().lower())
            if name not in NOISE_DISTRIBUTIONS:
                raise ValueError(f"expected a noise distribution ({', '.join(NOISE_DISTRIBUTIONS)}) or a "
                                 f"mapping, got '{value}'{did_you_mean(value, NOISE_DISTRIBUTIONS)}")
            return {"distribution": name}
        return value

    @model_validator(mode="after")
    def _fits_distribution(self) -> NoiseSpec:
        if self.error != "constant" and self.distribution != "normal":
            raise ValueError(f"'error: {self.error}' is for the normal distribution; {self.distribution} "
                             f"noise is already {'relative' if self.distribution in ('lognormal', 'loglaplace') else 'set by the mean' if self.distribution in ('poisson', 'negative_binomial') else 'of constant scale'}")
        return self


class ObservableSpec(_Strict):
    """What a CSV column measures: an expression of the states, parameters, constants, ``t`` and network
    outputs ``NET[i]`` at the solved states (e.g. ``rho*I``, ``x + y``, ``A/V``, ``x + U[0]``). A string is
    shorthand for ``{formula: string}``."""

    formula: str = Field(min_length=1, description="The observed quantity, in the equation language.")
    column: str | None = Field(None, description="CSV column holding it (default: the observable's name).")
    noise: NoiseSpec | None = Field(None, description="Its noise model (default: the top-level `noise`).")
    label: str | None = Field(None, description="Axis label in figures and tables (default: the name).")
    unit: str | None = Field(None, description="Unit, shown in axis labels (default: data.units of the column).")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"formula": value}
        return value


def default_stages(warm_start: bool) -> list[StageSpec]:
    """The stages of a config that names none (docs/training.md has the measurements behind them): LBFGS
    alone after the collocation warm start (Adam only moved away from its point, and was rolled back), Adam
    then LBFGS from the initial values (LBFGS alone stalls from a random network)."""
    if warm_start:
        return [StageSpec(optimizer="lbfgs", iterations=1000, tolerance=1e-3)]
    return [StageSpec(optimizer="adam", lr=0.01, iterations=300),
            StageSpec(optimizer="lbfgs", iterations=700, tolerance=1e-3)]


class MultipleShootingSpec(_Strict):
    """The segments of ``training.strategy: multiple_shooting`` (docs/training.md)."""

    segments: int | None = Field(
        None, ge=2, le=1000, description="Segments per experiment (default: from segment_length, else about 8 data "
                                         "times per segment, at most 20 segments).")
    segment_length: Positive | None = Field(None, description="Segment length in time units (instead of segments).")
    continuity: Positive = Field(
        100.0, description="Weight of the continuity penalty: the mean squared gap between a segment's end and the "
                           "next segment's start, each state's gap divided by its spread.")


class CurriculumSpec(_Strict):
    """The growing time window of ``training.strategy: curriculum``."""

    steps: int = Field(4, ge=2, le=50, description="Windows: 1/steps, 2/steps, ... of the time span, then the whole.")


class TrainingSpec(_Strict):
    """How the parameters and network weights are fitted."""

    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed: the same config and seed give the same fit.")
    loss: LossSpec = Field(default_factory=LossSpec, description="Loss settings (or 'mse', 'scaled', 'log').")
    weight_decay: NonNegative = Field(
        0.0, description="L2 penalty weight on network weights, for every stage that sets none. 0 by default: "
                         "its strength is relative to the loss's units (docs/regularisation.md).")
    stages: list[StageSpec] | None = Field(
        None, min_length=1,
        description="Optimisation stages in order (default: lbfgs x 1000 after the automatic warm start; adam "
                    "0.01 x 300, then lbfgs x 700 without one; the lbfgs stage with tolerance 1e-3).")
    warm_start: Literal["auto", "none"] = Field(
        "auto", description="'auto': before the stages, fit to smoothed derivatives of the data (collocation, "
                            "no ODE solve) when every state is observed; 'none': start the stages from the "
                            "initial values.")
    warm_start_iterations: int = Field(
        5000, ge=1, description="Most LBFGS iterations of the automatic warm start. It runs until the trajectory "
                                "loss (checked every 10 iterations) has not improved by 1 % for 1000 iterations, "
                                "and hands on the best trajectory point it passed.")
    stop_below: Positive | None = Field(
        None, description="Stop training as soon as the training loss (of the trajectory) is below this value.")
    starts: Annotated[int, Field(ge=1, le=1024)] | Literal["auto"] = Field(
        1, description="Independent starts fitted at once (new network weights, perturbed parameters); the best "
                       "is reported, all are kept (`--starts` overrides). 'auto': 4 when the problem is small (at "
                       "most 2000 fitted values and 500 training observations), else 1.")
    max_seconds: Positive | None = Field(
        None, description="Wall-time limit of the training: past it, training stops between iterations and "
                          "keeps the best parameters so far (`--time-limit` overrides).")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (default: 1, best for small ODEs).")
    strategy: Literal["auto", "single_shooting", "multiple_shooting", "curriculum"] = Field(
        "single_shooting",
        description="'single_shooting': every stage on the whole trajectory; 'multiple_shooting': first on segments "
                    "with free initial states, then the whole; 'curriculum': on a growing time window, then the "
                    "whole; 'auto': chooses one, and says which and why (docs/training.md). Applies to the default "
                    "stages; stages you write run as written (objective, window).")
    multiple_shooting: MultipleShootingSpec = Field(default_factory=MultipleShootingSpec,
                                                    description="Segments and continuity weight of multiple shooting.")
    curriculum: CurriculumSpec = Field(default_factory=CurriculumSpec, description="Windows of the curriculum.")


class OutputSpec(_Strict):
    """What is written to the run directory."""

    plots: bool = Field(True, description="Write figures (PNG and PDF).")
    dpi: int = Field(150, ge=50, le=1200, description="Resolution of PNG figures.")
    unobserved: bool = Field(True, description="Draw the states without data in the fit figure (false: only the "
                                               "observed ones).")
    layout: Literal["auto", "overlay", "panels"] = Field(
        "auto", description="The fit and residual figures with several experiments: 'overlay' (one panel per "
                            "state, a colour per experiment), 'panels' (small multiples: one panel per experiment, "
                            "a colour per state), or 'auto' (panels from 9 experiments on, where colours run out). "
                            "Observables that are formulas of the states keep the overlay.")


class DiscoverSpec(_Strict):
    """Symbolic recovery of the learned terms (``ude discover RUN``; run after ``ude fit`` when given).
    Every field can be overridden on the ``ude discover`` command line."""

    degree: int = Field(2, ge=0, le=6, description="Highest degree of the polynomial candidates.")
    functions: list[str] = Field(
        default_factory=list, max_length=50,
        description="Extra candidates in the equation language, e.g. 'exp(-x)', 'x/(1+x)', 'sin(x)'; they may "
                    "use the network's inputs.")
    include_bias: bool = Field(True, description="Include the constant 1 among the candidates.")
    samples: int = Field(200, ge=10, le=100_000, description="Samples per experiment along the fitted trajectory.")
    propose: int = Field(6, ge=1, le=100, description="Candidates the network proposes per term and selection step; "
                                                      "each is refitted to the data.")
    max_terms: int = Field(4, ge=1, le=50, description="Most library terms per learned term.")
    min_improvement: NonNegative = Field(2.0, description="A term is added only if it lowers the BIC by more than this.")
    horizon: Finite | None = Field(
        None, description="End time of the extrapolation check (default: t0 + 10 x the data's time span).")
    worse_ratio: float = Field(3.0, gt=1, allow_inf_nan=False, description="A recovered model whose training loss exceeds this multiple "
                                                      "of the UDE's is reported as clearly worse.")
    structure_p: float = Field(0.01, gt=0, lt=1, description="Residuals whose runs test p-value is below this count "
                                                             "as systematic (an approximation).")
    resamples: int = Field(100, ge=2, le=10_000,
                           description="Halves of the observation times (complementary pairs) over which stability "
                                       "selection votes for a structure (docs/discover.md).")
    level: float = Field(0.95, gt=0, lt=1, allow_inf_nan=False,
                         description="Level of the recovered coefficients' intervals; the keep test uses it adjusted "
                                     "for the library's size (Bonferroni).")


class UncertaintySpec(_Strict):
    """Intervals for the learned values and bands for the predictions (docs/identifiability.md)."""

    level: float = Field(0.95, gt=0, lt=1, allow_inf_nan=False,
                         description="Coverage of every interval and band, strictly between 0 and 1.")
    hessian: Literal["auto", "profiled", "fixed", "off"] = Field(
        "auto", description="Wald intervals from the curvature of the likelihood after every fit: 'profiled' "
                            "re-fits the network's weights in the curvature (the Schur complement), 'fixed' holds "
                            "them, 'auto' profiles them when that takes a few seconds at most, 'off' skips it.")
    profile: bool | list[str] = Field(
        False, description="Profile likelihoods (everything else re-optimised at each point, network included): "
                           "true for every learned mechanistic, observation, noise and initial value, or a list of "
                           "names as params.csv writes them. `ude fit --profile` sets true.")
    profile_steps: int = Field(40, ge=2, le=1000, description="Most profile points on each side of the estimate.")
    profile_iterations: int = Field(200, ge=1, le=100_000,
                                    description="Most LBFGS iterations re-optimising each profile point.")
    bands: bool = Field(True, description="Confidence and prediction bands in predictions.csv and the fit "
                                          "figure, by sampling the Wald distribution of the learned values.")
    band_samples: int = Field(200, ge=20, le=100_000, description="Parameter samples drawn for the bands.")
    derived: dict[str, str] = Field(
        default_factory=dict, description="Quantities computed from the parameters, with intervals by the delta "
                                          "method: name -> formula of parameters and constants, e.g. {R0: beta/gamma}.")


class Config(_Strict):
    """A whole ``config.yaml``."""

    name: str | None = Field(None, description="Run name (default: the config file's name).")
    description: str | None = Field(None, description="Free text, copied into run.json and reports.")
    data: DataSpec = Field(description="The CSV file(s) and how their columns map to states.")
    model: ModelSpec = Field(description="The mechanistic model (built-in or equations) and its parameters.")
    observables: dict[str, ObservableSpec] = Field(
        default_factory=dict,
        description="observable -> what a CSV column measures, e.g. {cases: rho*I} (column 'cases'). A state "
                    "mapped in data.columns is an observable of its own (the state itself).")
    noise: NoiseSpec | None = Field(
        None, description="The noise model of every observable that sets none (or a name: normal, lognormal, "
                          "poisson, negative_binomial). With a noise model the training objective is the negative "
                          "log-likelihood per observation; without one anywhere, training.loss (squared errors).")
    networks: dict[str, NetworkSpec] = Field(default_factory=dict, description="Named neural networks.")
    solver: SolverSpec = Field(default_factory=SolverSpec, description="The ODE solver.")
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="Loss, stages, seed, regularisation.")
    output: OutputSpec = Field(default_factory=OutputSpec, description="What is written besides the tables.")
    discover: DiscoverSpec | None = Field(None, description="Symbolic recovery of the learned terms (optional).")
    uncertainty: UncertaintySpec = Field(default_factory=UncertaintySpec,
                                         description="Intervals and bands (docs/identifiability.md).")
    sweep: dict[str, list[Any]] | None = Field(
        None, description="Grid for `ude fit --sweep`: dotted path -> values, e.g. {networks.U.hidden: [[8, 8], "
                          "[16, 16]], training.weight_decay: [0, 1.0e-4]}; one fit per combination.")

    _path: Path | None = PrivateAttr(None)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        # the default run directory is runs/<name>: a name must not lead it out of runs/
        if value is not None:
            parts = value.replace("\\", "/").split("/")
            if not value.strip() or value.startswith(("/", "\\")) or ".." in parts or "\0" in value \
                    or not all(p.strip(". ") for p in parts):
                raise ValueError(f"must be a plain name (it names the run directory runs/<name>), without a "
                                 f"leading '/', empty parts or '..', got {value!r}")
        return value

    @field_validator("observables")
    @classmethod
    def _observable_names(cls, value: dict[str, ObservableSpec]) -> dict[str, ObservableSpec]:
        for name in value:
            if not name.isidentifier() or name.startswith("_"):
                raise ValueError(f"observable name '{name}' must be an identifier (letters, digits, '_'); give "
                                 f"the CSV column as `column:` if it is named otherwise")
        return value

    @model_validator(mode="after")
    def _loss_or_noise(self) -> Config:
        has_noise = self.noise is not None or any(o.noise is not None for o in self.observables.values())
        loss = self.training.loss
        if has_noise and (loss.log or loss.scale != "none"):
            raise ValueError("give either training.loss (squared errors) or noise models (a likelihood), "
                             "not both: with a noise model the objective is its negative log-likelihood")
        return self

    @model_validator(mode="after")
    def _compiled_networks(self) -> Config:
        if self.solver.engine == "compiled" or self.solver.method in STIFF_METHODS:
            reason = reason_not_compiled(self.solver.method, self.solver.adjoint, self.networks)
            if reason is not None:
                what = "engine: compiled" if self.solver.engine == "compiled" else f"method: {self.solver.method}"
                raise ValueError(f"solver.{what} needs the compiled engine, which cannot be used here: {reason}")
        return self

    @property
    def uses_likelihood(self) -> bool:
        """Whether a noise model is given: the objective is then the negative log-likelihood."""
        return self.noise is not None or any(o.noise is not None for o in self.observables.values())

    @field_validator("networks")
    @classmethod
    def _network_names(cls, value: dict[str, NetworkSpec]) -> dict[str, NetworkSpec]:
        for name in value:
            if not name.isidentifier() or name.startswith("_"):
                raise ValueError(f"network name '{name}' must be an identifier (letters, digits, '_')")
        return value

    @property
    def path(self) -> Path | None:
        """The file this config was read from (None when built in code)."""
        return self._path

    @property
    def base_dir(self) -> Path:
        """The directory data paths are relative to."""
        return self._path.parent if self._path is not None else Path.cwd()

    @property
    def run_name(self) -> str:
        if self.name:
            return self.name
        return self._path.stem if self._path is not None else "run"

    @property
    def label(self) -> str:
        """How messages name this config: the path as the user gave it."""
        return str(self._path) if self._path is not None else "config"

    def resolved(self) -> dict[str, Any]:
        """The config with every default filled in, as plain data (JSON/YAML-ready)."""
        return self.model_dump(mode="json")


# -- loading ---------------------------------------------------------------------------------------

def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config; raise :class:`ConfigError` (one line per problem).

    When fields fail the schema, the rest of the config is still checked as a whole, with its data,
    so that one pass reports every problem (see :func:`_problems_beyond_the_schema`)."""
    path = Path(path)
    raw = read_yaml(path)
    try:
        return config_from_dict(raw, label=str(path), path=path)
    except ConfigError as exc:
        locations = exc.schema_locations
        if locations is None:
            raise
        more = _problems_beyond_the_schema(raw, exc, locations, path)
        if not more:
            raise
        raise ProblemList([*(exc.problems if isinstance(exc, ProblemList) else [exc]), *more]) from None


_DROP = object()


def _problems_beyond_the_schema(raw: dict, exc: ConfigError, locations: list[tuple], path: Path) -> list[UdeError]:
    """The problems :func:`ude_cli.problem.resolve` finds in the config less its fields that failed the schema.

    Each failing value is left out (a missing required field leaves out the mapping that needs it) and the
    rest validated again, a few rounds at most; when it validates, it is resolved with its data. Problems
    about what was left out, or naming it, are dropped: they repeat the schema's."""
    import copy

    pruned, removed = copy.deepcopy(raw), []
    for _round in range(4):
        for loc in locations:
            removed.append(_drop_at(pruned, loc))
        pruned = _without_dropped(pruned)
        try:
            config = Config.model_validate(pruned)
            break
        except ValidationError as again:
            errors = _errors(again)
            locations = [_clean_loc(e) for e in errors]
    else:
        return []
    config._path = path
    from .problem import resolve

    try:
        resolve(config)
    except UdeError as found:
        extra = found.problems if isinstance(found, ProblemList) else [found]
    else:
        return []
    label = str(path)
    gone = [p for p in removed if p]
    names = {f"'{p[-1]}'" for p in gone if isinstance(p[-1], str)}
    seen = {str(p) for p in (exc.problems if isinstance(exc, ProblemList) else [exc])}

    def related(problem: UdeError) -> bool:
        where = problem.where or ""
        for p in gone:  # the place left out, inside it, or the mapping that held it
            place = f"{label}: {_loc(p)}"
            if where == place or where.startswith((f"{place}.", f"{place}[")) or place.startswith(f"{where}."):
                return True
        return str(problem) in seen or any(n in problem.message for n in names)

    return [p for p in extra if not related(p)]


def _clean_loc(err: Any) -> tuple:
    loc = err["loc"]
    if loc and loc[-1] == "[key]":
        return loc[:-2]
    if err["type"] == "invalid_key":
        return loc[:-1]
    return loc


def _drop_at(tree: Any, loc: tuple) -> tuple | None:
    """Mark the value at ``loc`` (or, for a missing field, the mapping that lacks it) to be left out;
    return the location left out."""
    trail: list[tuple[Any, Any]] = []
    node = tree
    for part in loc:
        inside = part in node if isinstance(node, dict) else (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node))
        if inside:
            trail.append((node, part))
            node = node[part]
    if not trail:
        return None
    container, key = trail[-1]
    container[key] = _DROP
    return tuple(k for _, k in trail)


def _without_dropped(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _without_dropped(v) for k, v in tree.items() if v is not _DROP}
    if isinstance(tree, list):
        return [_without_dropped(v) for v in tree if v is not _DROP]
    return tree


def config_from_dict(raw: Any, *, label: str = "config", path: Path | None = None) -> Config:
    """Validate a config given as a dict (as read from YAML)."""
    if not isinstance(raw, dict):
        kind = "empty" if raw is None else type(raw).__name__
        raise ConfigError(f"expected a mapping of sections (data, model, ...), got {kind}", where=label)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        problems = Problems()
        errors = _errors(exc)
        for err in errors:
            loc = _clean_loc(err)  # a mapping key of the wrong type (e.g. a number): the mapping
            problems.add(ConfigError(_describe(err, raw), where=f"{label}: {_loc(loc)}" if _loc(loc) else label))
        first = problems.items[0]
        error = first if len(problems.items) == 1 and isinstance(first, ConfigError) else ProblemList(problems.items)
        error.schema_locations = [_clean_loc(e) for e in errors]
        raise error from None
    config._path = path
    return config


def read_yaml(path: Path) -> Any:
    """``yaml.safe_load`` of a small UTF-8 file, with a cap on aliases."""
    import yaml

    label = str(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ConfigError("config file not found", where=label) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the config file: {exc.strerror}", where=label) from None
    if path.is_dir():
        raise ConfigError("is a directory, expected a YAML config file", where=label)
    if not path.is_file():  # a pipe would block for ever, a device never end
        raise ConfigError("is not a regular file (a pipe or a device); expected a YAML config file", where=label)
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file is {size} bytes; at most {MAX_CONFIG_BYTES} are read", where=label)
    try:
        with path.open("rb") as fh:  # at most the limit, even from a device or a pipe that reports size 0
            data = fh.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file is more than {MAX_CONFIG_BYTES} bytes; at most {MAX_CONFIG_BYTES} "
                              f"are read", where=label)
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"line {line}: not UTF-8 text (byte {exc.start}); save the file as UTF-8",
                          where=label) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the config file: {exc.strerror}", where=label) from None
    try:
        return yaml.load(text, Loader=_loader())  # noqa: S506  (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at_line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        hint = None
        if "but got '['" in problem or "found '['" in problem:  # `{x: U[0]}`: brackets in a flow mapping
            hint = "an equation with brackets inside { } must be quoted: {x: \"U[0]\"}"
        elif "'\\t'" in problem:  # a tab where YAML expects indentation or a token
            hint = "indent with spaces: YAML does not allow tabs for indentation"
        raise ConfigError(f"{at_line}invalid YAML: {problem}", where=label, hint=hint) from None
    except RecursionError:
        raise ConfigError("invalid YAML: nested too deeply", where=label) from None


def _loader():
    import yaml

    class Loader(yaml.SafeLoader):
        aliases = 0

        def compose_node(self, parent, index):  # count alias uses: no "billion laughs"
            if self.check_event(yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > MAX_YAML_ALIASES:
                    raise yaml.YAMLError(f"more than {MAX_YAML_ALIASES} aliases")
            return super().compose_node(parent, index)

        def construct_document(self, node):  # aliases share nodes: count the tree they stand for
            sizes: dict[int, int] = {}

            def expanded(n) -> int:
                if id(n) not in sizes:
                    sizes[id(n)] = 1  # a cycle counts once instead of recursing for ever
                    if isinstance(n, yaml.SequenceNode):
                        sizes[id(n)] = 1 + sum(expanded(c) for c in n.value)
                    elif isinstance(n, yaml.MappingNode):
                        sizes[id(n)] = 1 + sum(expanded(k) + expanded(v) for k, v in n.value)
                return sizes[id(n)]

            if expanded(node) > MAX_YAML_NODES:
                raise yaml.YAMLError(f"the aliases expand to more than {MAX_YAML_NODES} values")
            return super().construct_document(node)

        def construct_mapping(self, node, deep=False):  # a key given twice is an error, not a silent override
            if isinstance(node, yaml.MappingNode):
                seen = set()
                for key_node, _ in node.value:
                    if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node)
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"key '{key}' appears twice in the same mapping (the second would "
                                        f"silently replace the first)", key_node.start_mark)
                    seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return Loader


# -- pydantic errors -> one line each -----------------------------------------------------------

def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith(("function-", "literal[", "tagged-union")) and part not in (
            "float", "int", "str", "bool", "ColumnRef", "list[...]", "dict[str,...]", "tuple[...]",
        ):
            out += f".{part}" if out else str(part)
    return out


def _fields_at(raw: Any, loc: tuple) -> list[str]:
    """Valid keys for the mapping containing ``loc``, from the schema."""
    model: Any = Config
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            # inside a dict of models (parameters, networks, initial): the value type
            continue
        model = _model_of(field.annotation)
    return list(getattr(model, "model_fields", {}) or [])


def _model_of(annotation: Any) -> Any:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


#: Tags pydantic puts in an error's location for the member of a union that was tried.
_UNION_TAGS = ("float", "int", "str", "bool", "ColumnRef")


def _errors(exc: ValidationError) -> list[ErrorDetails]:
    """pydantic's errors, less those of union members that do not match the kind of value given.

    ``constants: {N: abc}`` fails both as a number and as ``{column: ...}``: for a scalar only the
    number's error is kept, for a mapping only the mapping's."""
    errors = exc.errors(include_url=False)
    out = []
    for err in errors:
        loc = err["loc"]
        tag = next((i for i, part in enumerate(loc) if part in _UNION_TAGS), None)
        if tag is not None:
            base = loc[:tag]
            members = {e["loc"][tag] for e in errors if e["loc"][:tag] == base and len(e["loc"]) > tag}
            if len(members) > 1 and isinstance(_value_at(base, errors, err), dict) != (loc[tag] == "ColumnRef"):
                continue
        out.append(err)
    return out


def _value_at(base: tuple, errors: list[ErrorDetails], default: ErrorDetails) -> Any:
    """The value given at ``base``: the input of an error located at one of its union members."""
    for e in errors:
        if e["loc"][: len(base)] == base and len(e["loc"]) == len(base) + 1:
            return e.get("input")
    return default.get("input")


def _describe(err: ErrorDetails, raw: Any) -> str:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    loc = err["loc"]
    comma = "; a number written with a decimal comma inside { } is split at the comma: write 0.3, not 0,3"
    if loc and loc[-1] == "[key]":
        mapping = _walk(raw, loc[:-2])
        split = isinstance(mapping, dict) and isinstance(loc[-2], int) and mapping.get(loc[-2], 0) is None
        return f"key {loc[-2]!r} must be a name (text)" + (comma if split else "")
    if kind == "invalid_key":
        mapping = _walk(raw, loc[:-1])
        split = isinstance(mapping, dict) and isinstance(value, int) and mapping.get(value, 0) is None
        return f"key {_yaml_repr(value)} must be a name (text)" + (comma if split else "")
    if kind == "extra_forbidden":
        key = loc[-1]
        valid = _fields_at(raw, loc)
        hint = did_you_mean(str(key), valid)
        return f"unknown key '{key}'{hint}" + (f"; expected one of {', '.join(valid)}" if valid and not hint else "")
    if kind == "missing":
        return "required, but missing"
    if kind == "literal_error":
        expected = ctx.get("expected", "")
        options = [o.strip().strip("'") for o in expected.replace(" or ", ", ").split(",")]
        return f"must be one of {', '.join(options)}, got {value!r}{did_you_mean(str(value), options)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        sym = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()), "?")
        bound = f"{bound:g}" if isinstance(bound, float) else bound
        return f"must be {sym} {bound}, got {value!r}"
    if kind in ("float_parsing", "float_type"):
        decimal_comma = isinstance(value, str) and "," in value and _is_number(value.replace(",", "."))
        return f"expected a number, got {value!r}" + ("; use '.' as the decimal point" if decimal_comma else "")
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"expected a whole number, got {value!r}"
    if kind in ("bool_parsing", "bool_type"):
        return f"expected true or false, got {value!r}"
    if kind in ("string_type",):
        return f"expected text, got {value!r}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        shorthand = {"ParameterSpec": "a number or a mapping such as {init: 0.5, bounds: [0, 1]}",
                     "InitialSpec": "a number, 'learn', or a mapping such as {value: 1.0, learn: true}"}
        return f"expected {shorthand.get(ctx.get('class_name', ''), 'a mapping (key: value)')}, got {_short(value)}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind in ("list_type", "tuple_type"):
        return f"expected a list, got {_short(value)}"
    if kind == "finite_number":
        return f"must be a finite number, got {value!r}"
    if kind in ("too_short", "too_long"):
        return err["msg"].replace("List", "list").replace("Tuple", "list") + f", got {_short(value)}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"])).removeprefix("Value error, ")
    return err["msg"]


def _walk(tree: Any, loc: tuple) -> Any:
    """The value at ``loc`` in the raw config (skipping pydantic's tags), or None."""
    for part in loc:
        inside = part in tree if isinstance(tree, dict) else (
            isinstance(tree, list) and isinstance(part, int) and 0 <= part < len(tree))
        if inside:
            tree = tree[part]
    return tree


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _yaml_repr(value: Any) -> str:
    return {None: "null", True: "true", False: "false"}.get(value, repr(value)) if not isinstance(
        value, int | float) or isinstance(value, bool) else repr(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

