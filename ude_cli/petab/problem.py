"""A PEtab v1 problem as read: its SBML model and its four tables, each row checked.

:func:`load_problem` reads everything a problem YAML names and checks what the tables say about each other
(every observable, condition and parameter a row names exists; scales, transformations and distributions
are ones PEtab defines). Turning it into a ``ude`` config is :mod:`.convert`'s work.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import sympy as sp

from ..errors import ConfigError
from . import tables
from .language import parse_formula
from .priors import Prior, read_prior
from .sbml import TIME, SbmlModel, read_sbml


@dataclass(frozen=True)
class PetabParameter:
    """One row of the parameter table."""

    id: str
    scale: str  # lin, log, log10
    lower: float
    upper: float
    nominal: float
    estimate: bool
    prior: Prior | None = None  # the objective prior (a term of the log-posterior)


@dataclass(frozen=True)
class PetabObservable:
    """One row of the observable table, its formulas as sympy (placeholders still symbols)."""

    id: str
    formula: sp.Expr
    noise: sp.Expr
    transformation: str  # lin, log, log10
    distribution: str  # normal, laplace, poisson, negative-binomial
    formula_text: str
    noise_text: str
    file: str
    row: int
    #: PEtab v2's ``observablePlaceholders`` and ``noisePlaceholders`` (the names the measurement table's
    #: ``observableParameters`` / ``noiseParameters`` fill in order); empty: v1's ``observableParameter1_ID``, ...
    placeholders: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())


@dataclass
class PetabProblem:
    """Everything a problem YAML names, read and checked."""

    files: tables.Files
    sbml: SbmlModel
    parameters: dict[str, PetabParameter]
    observables: dict[str, PetabObservable]
    conditions: pd.DataFrame  # indexed by conditionId (v2: by experimentId); columns: the targets
    measurements: pd.DataFrame
    #: PEtab SciML: the mapping table (PEtab id -> model entity such as ``net1.inputs[0][1]``), the
    #: hybridization rows (target, value), and the network parameters' rows (id -> estimated)
    mapping: dict[str, str] = field(default_factory=dict)
    hybridization: list[tuple[str, str, str, int]] = field(default_factory=list)  # target, value, file, line
    network_parameters: dict[str, tuple[str, bool]] = field(default_factory=dict)  # id -> (entity, estimated)
    #: PEtab SciML: network inputs given by array files (``inputs/ID/COND`` or ``inputs/ID/0`` for every
    #: condition): id -> condition (or "0") -> the flattened values; the condition-table columns that hold them
    #: one number each (``ID_0``, ``ID_1``, ...) and the network-input ids the condition table sets
    array_inputs: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    input_columns: set[str] = field(default_factory=set)
    array_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # id -> each dataset's shape
    #: PEtab SciML: priors on network arrays: id -> (entity such as ``net1.parameters[layer1].weight``, prior)
    network_priors: dict[str, tuple[str, Prior]] = field(default_factory=dict)
    #: network parameter rows whose nominalValue is a number, not 'array': id -> (entity, value)
    network_nominals: dict[str, tuple[str, float]] = field(default_factory=dict)
    #: PEtab v2: the time each experiment starts at (its period that is not the pre-equilibration), when not 0
    start_times: dict[str, float] = field(default_factory=dict)
    #: PEtab v2: each experiment's periods after its first: (start time, target -> value, "FILE: line N"), by time
    periods: dict[str, list[tuple[float, dict[str, str], str]]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The problem's name: its YAML's stem, or for a generic ``problem.yaml`` (in a ``petab`` folder) the
        folder that holds it."""
        path = self.files.yaml.resolve()
        name, folder = path.stem, path.parent
        while name in ("problem", "petab") and folder.name:
            name, folder = folder.name, folder.parent
        return name

    @property
    def estimated(self) -> list[str]:
        """The estimated parameters' ids, in the parameter table's order."""
        return [p.id for p in self.parameters.values() if p.estimate]


def _formula(row: pd.Series, column: str) -> sp.Expr:
    from ..expressions import ExpressionError

    text = str(row.get(column, ""))
    if text == "":
        raise ConfigError(f"line {row['_row']}, column {column}: empty; expected a formula", where=row["_file"])
    try:
        expr = parse_formula(text)
    except ExpressionError as exc:
        raise ConfigError(f"line {row['_row']}, column {column}: {exc.message}", where=row["_file"]) from None
    time = sp.Symbol("time")
    return expr.xreplace({time: TIME}) if time in expr.free_symbols else expr


def _noise_model(row: pd.Series, v2: bool) -> tuple[str, str]:
    """``(transformation, distribution)`` of an observable row: v1's ``observableTransformation`` column and
    ``noiseDistribution`` (normal, laplace); v2 also as one ``noiseDistribution`` (``log-normal``, ``log-laplace``,
    which the current v2 draft has instead of the transformation column), and the count distributions of the
    draft's pull request 654 (``poisson``, ``negative-binomial``; not yet in a released PEtab)."""
    transformation = tables.choice(row, "observableTransformation", tables.TRANSFORMATIONS, "lin")
    distribution = tables.choice(row, "noiseDistribution", tables.DISTRIBUTIONS_V2 if v2 else tables.DISTRIBUTIONS,
                                 "normal")
    if distribution == "binomial":
        raise ConfigError(f"line {row['_row']}, column noiseDistribution: binomial noise is not supported (ude has "
                          f"no binomial noise model)", where=row["_file"])
    merged = {"log-normal": "normal", "log-laplace": "laplace"}.get(distribution)
    if merged is not None or distribution in ("poisson", "negative-binomial"):
        if transformation != "lin":
            raise ConfigError(f"line {row['_row']}, column observableTransformation: {transformation!r} with "
                              f"noiseDistribution {distribution!r}; expected lin (or no such column)",
                              where=row["_file"])
        if merged is not None:
            return "log", merged
    return transformation, distribution


def load_problem(path: str | Path) -> PetabProblem:
    """Read and check the PEtab problem ``path`` (its YAML file)."""
    files = tables.read_problem_yaml(path)
    model = read_sbml(files.sbml)
    mapping: dict[str, str] = {}
    if files.v2:
        for _, row in tables.read_table(files.mappings, "mapping", index="petabEntityId").iterrows():
            mapping[row["petabEntityId"]] = row["modelEntityId"]
    networks = set(files.networks)
    network_parameters: dict[str, tuple[str, bool]] = {}
    network_priors: dict[str, tuple[str, Prior]] = {}
    network_nominals: dict[str, tuple[str, float]] = {}

    ptable = tables.read_table(files.parameters, "parameter_v2" if files.v2 else "parameter", index="parameterId")
    parameters: dict[str, PetabParameter] = {}
    for _, row in ptable.iterrows():
        scale = tables.choice(row, "parameterScale", tables.SCALES, "lin")
        estimate_text = str(row["estimate"]).lower()
        if estimate_text not in ("0", "1", "true", "false"):
            raise ConfigError(f"line {row['_row']}, column estimate: {row['estimate']!r}; expected "
                              f"{'true or false' if files.v2 else '0 or 1'}", where=row["_file"])
        estimate = estimate_text in ("1", "true")
        entity = mapping.get(row["parameterId"], "")
        if entity.split(".")[0] in networks and ".inputs" not in entity:  # a network's weights (or a part)
            if str(row["nominalValue"]).lower() != "array":  # one number for every weight
                network_nominals[row["parameterId"]] = (entity, tables.number(row, "nominalValue",
                                                                              kind="'array' or a number"))
            network_parameters[row["parameterId"]] = (entity, estimate)
            bounds = (tables.number(row, "lowerBound", allow_empty=True),
                      tables.number(row, "upperBound", allow_empty=True))  # (v2: a prior truncated to them)
            prior = read_prior(row, files.v2, None if any(math.isnan(b) for b in bounds) else bounds)
            if prior is not None and estimate:
                network_priors[row["parameterId"]] = (entity, prior)
            continue
        lower = tables.number(row, "lowerBound", allow_empty=not estimate)
        upper = tables.number(row, "upperBound", allow_empty=not estimate)
        nominal = tables.number(row, "nominalValue")
        if estimate and not lower < upper:
            raise ConfigError(f"line {row['_row']}: lowerBound {lower:g} is not below upperBound {upper:g}",
                              where=row["_file"])
        prior = read_prior(row, files.v2, (lower, upper)) if estimate else None
        # an estimated parameter's nominal value outside its bounds (or not positive on a log scale) is allowed,
        # as PEtab's linter allows it: the reference llh is at it; the fit starts inside (convert.py says so)
        parameters[row["parameterId"]] = PetabParameter(row["parameterId"], scale, lower, upper, nominal, estimate,
                                                        prior)

    if files.v2 and (network_priors or any(p.prior is not None for p in parameters.values())):
        # PEtab v2: once any parameter has a prior, an estimated one without gets the uniform prior on its bounds
        for pid, par in parameters.items():
            if par.estimate and par.prior is None and math.isfinite(par.lower) and math.isfinite(par.upper):
                parameters[pid] = dataclasses.replace(par, prior=Prior("uniform", (par.lower, par.upper)))

    otable = tables.read_table(files.observables, "observable", index="observableId")
    observables: dict[str, PetabObservable] = {}
    for _, row in otable.iterrows():
        oid = row["observableId"]
        transformation, distribution = _noise_model(row, files.v2)
        if distribution == "poisson":  # the draft's Poisson: the rate is the observable formula, no noise formula
            if str(row["noiseFormula"]).strip():
                raise ConfigError(f"line {row['_row']}, column noiseFormula: {row['noiseFormula']!r}; a poisson "
                                  f"observable's noise formula must be empty", where=row["_file"])
            noise = sp.Integer(0)
        else:
            noise = _formula(row, "noiseFormula")
        observables[oid] = PetabObservable(
            id=oid, formula=_formula(row, "observableFormula"), noise=noise, transformation=transformation,
            distribution=distribution, formula_text=row["observableFormula"], noise_text=row["noiseFormula"],
            file=row["_file"], row=int(row["_row"]),
            placeholders=(tuple(tables.split_list(row.get("observablePlaceholders", ""))),
                          tuple(tables.split_list(row.get("noisePlaceholders", "")))))

    array_shapes: dict[str, tuple[int, ...]] = {}
    array_inputs = _array_inputs(files.arrays, array_shapes) if files.v2 else {}
    input_ids = {pid for pid, entity in mapping.items() if entity.split(".")[0] in networks and ".inputs" in entity}
    if files.v2:
        conditions, mtable, start_times, periods = _experiments_v2(files, model, parameters, input_ids,
                                                                   array_inputs)
    else:
        ctable = tables.read_table(files.conditions, "condition", index="conditionId")
        conditions = ctable.set_index("conditionId", drop=False)
        start_times, periods = {}, {}
        mtable = tables.read_table(files.measurements, "measurement")
    for column in conditions.columns:
        if column in ("conditionId", "conditionName", "_file", "_row"):
            continue
        if column not in model.kinds and column not in parameters and column not in input_ids \
                and column not in _array_columns(array_inputs):
            raise ConfigError(f"condition table column {column!r}: not a parameter, species or compartment of the "
                              f"model", where=str(files.conditions[0]))

    if mtable.empty:
        raise ConfigError("the measurement table has no rows", where=str(files.measurements[0]))
    for _, row in mtable.iterrows():
        where = row["_file"]
        if row["observableId"] not in observables:
            raise ConfigError(f"line {row['_row']}, column observableId: {row['observableId']!r} is not in the "
                              f"observable table", where=where)
        if row["simulationConditionId"] not in conditions.index:
            raise ConfigError(f"line {row['_row']}, column simulationConditionId: {row['simulationConditionId']!r} "
                              f"is not in the condition table", where=where)
        pre = str(row.get("preequilibrationConditionId", ""))
        if pre and pre not in conditions.index:
            raise ConfigError(f"line {row['_row']}, column preequilibrationConditionId: {pre!r} is not in the "
                              f"condition table", where=where)
        t = tables.number(row, "time", kind="a time")
        if math.isnan(t) or t == -math.inf:
            raise ConfigError(f"line {row['_row']}, column time: {t:g}: expected a time, or inf (at steady "
                              f"state)", where=where)
        start = start_times.get(row["simulationConditionId"], 0.0)
        if t < start:
            raise ConfigError(f"line {row['_row']}, column time: {t:g} is before {start:g}, where its experiment "
                              f"starts", where=where)
        m = tables.number(row, "measurement")
        if not math.isfinite(m):
            raise ConfigError(f"line {row['_row']}, column measurement: {m:g} is not a finite number", where=where)
    mtable["time"] = mtable["time"].astype(float)
    mtable["measurement"] = mtable["measurement"].astype(float)
    hybridization = []
    if files.hybridizations:
        for _, row in tables.read_table(files.hybridizations, "hybridization").iterrows():
            hybridization.append((row["targetId"], row["targetValue"], row["_file"], int(row["_row"])))
    return PetabProblem(files=files, sbml=model, parameters=parameters, observables=observables,
                        conditions=conditions, measurements=mtable, mapping=mapping, hybridization=hybridization,
                        network_parameters=network_parameters, array_inputs=array_inputs, network_priors=network_priors,
                        network_nominals=network_nominals, array_shapes=array_shapes,
                        input_columns=(input_ids | _array_columns(array_inputs)) & set(conditions.columns),
                        start_times=start_times, periods=periods)


def _array_inputs(paths: list[Path], shapes: dict[str, tuple[int, ...]]) -> dict[str, dict[str, list[float]]]:
    """Network inputs of the array files: ``inputs/ID/COND`` (``0``: every condition) -> flattened values
    (row-major; each id's array shape into ``shapes``)."""
    import h5py

    out: dict[str, dict[str, list[float]]] = {}
    for path in paths:
        with h5py.File(path, "r") as f:
            group = f.get("inputs")
            if group is None:
                continue
            for pid, by_condition in group.items():
                if not isinstance(by_condition, h5py.Group):
                    raise ConfigError(f"inputs/{pid}: expected a group of datasets, one per condition (or 0)",
                                      where=str(path))
                for key, data in by_condition.items():
                    values = np.asarray(data, dtype=float)
                    out.setdefault(pid, {})[key] = [float(x) for x in values.ravel()]
                    shapes[pid] = tuple(int(n) for n in values.shape)
                sizes = {len(v) for v in out[pid].values()}
                if len(sizes) > 1:
                    raise ConfigError(f"inputs/{pid}: arrays of different sizes ({', '.join(map(str, sorted(sizes)))})"
                                      f" for different conditions", where=str(path))
    return out


def _array_columns(array_inputs: dict[str, dict[str, list[float]]]) -> set[str]:
    return {f"{pid}_{k}" for pid, by in array_inputs.items() for k in range(len(next(iter(by.values()))))}


def _experiments_v2(files: tables.Files, model: SbmlModel, parameters: dict, input_ids: set[str],
                    array_inputs: dict[str, dict[str, list[float]]]
                    ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float], dict]:
    """PEtab v2's experiments (and long condition table) as v1's wide condition table, one row per experiment
    (its first period, after an optional pre-equilibration at ``-inf``), the measurements with the experiment as
    ``simulationConditionId``, the experiments' start times where not 0, and their later periods
    (:attr:`PetabProblem.periods`). The conditions of one period (several rows at one time) apply together.
    Network inputs set by the condition table are columns like a parameter's; an array file's input ``ID`` gives
    columns ``ID_0``, ``ID_1``, ... with the values of the experiment's condition (or of dataset ``0``)."""
    mtable = tables.read_table(files.measurements, "measurement_v2")
    mtable = mtable.rename(columns={"experimentId": "simulationConditionId"})
    targets: dict[str, dict[str, str]] = {}
    if files.conditions:
        for _, row in tables.read_table(files.conditions, "condition_v2").iterrows():
            target = row["targetId"]
            if target not in model.kinds and target not in parameters and target not in input_ids:
                raise ConfigError(f"line {row['_row']}: condition target {target!r} is not a parameter, species, "
                                  f"compartment or network input of the model", where=row["_file"])
            targets.setdefault(row["conditionId"], {})[target] = row["targetValue"]
    records: list[dict[str, str]] = []
    settling: dict[str, str] = {}  # experiment -> the condition row of its pre-equilibration period
    start_times: dict[str, float] = {}
    later: dict[str, list[tuple[float, dict[str, str], str]]] = {}
    if files.experiments:
        etable = tables.read_table(files.experiments, "experiment")
        periods: dict[str, dict[float, list[pd.Series]]] = {}
        for _, row in etable.iterrows():
            t = tables.number(row, "time", kind="a time")
            if math.isnan(t) or t == math.inf:
                raise ConfigError(f"line {row['_row']}, column time: {t:g}; expected a start time, or -inf for "
                                  f"pre-equilibration", where=row["_file"])
            cond = row["conditionId"]
            if cond and cond not in targets and not any(cond in by for by in array_inputs.values()):
                raise ConfigError(f"line {row['_row']}: condition {cond!r} is neither in a condition table nor a "
                                  f"dataset of an array file's inputs", where=row["_file"])
            periods.setdefault(row["experimentId"], {}).setdefault(t, []).append(row)
        states = set(model.rhs)
        for experiment, by_time in periods.items():
            starts = sorted(s for s in by_time if s != -math.inf)
            if not starts:
                row = by_time[-math.inf][0]
                raise ConfigError(f"line {row['_row']}: experiment {experiment!r} has only a pre-equilibration "
                                  f"period", where=row["_file"])
            main = by_time[starts[0]][0]
            if starts[0] != 0:
                start_times[experiment] = starts[0]
            pre = by_time.get(-math.inf)
            before: dict[str, str] = {}
            if pre is not None:  # settled first; what its condition sets stays, but for the states, unless changed
                before = {**_period_targets(pre, targets, experiment),
                          **_array_values(array_inputs, pre[0]["conditionId"], pre[0])}
                settling[experiment] = f"{experiment}__preequilibration"
                records.append({"conditionId": settling[experiment], **before})
            own = {pid: by for pid, by in array_inputs.items() if main["conditionId"] in by or pre is None}
            values = {**{k: v for k, v in before.items() if k not in states},  # an array input without a dataset
                      **_period_targets(by_time[starts[0]], targets, experiment),  # of its own keeps the settling one
                      **_array_values(own, main["conditionId"], main)}
            records.append({"conditionId": experiment, **values})
            for t in starts[1:]:  # conditions that change during the experiment
                rows = by_time[t]
                if len(rows) > 1 or rows[0]["conditionId"]:
                    if any(r["conditionId"] in by for r in rows for by in array_inputs.values()):
                        raise ConfigError(f"line {rows[0]['_row']}: experiment {experiment!r}: an array file's "
                                          f"input that changes at time {t:g}: not supported yet",
                                          where=rows[0]["_file"])
                    later.setdefault(experiment, []).append(
                        (t, _period_targets(rows, targets, experiment), f"{rows[0]['_file']}: line {rows[0]['_row']}"))
    empty = mtable["simulationConditionId"] == ""
    if empty.any():
        if files.experiments:
            row = mtable[empty].iloc[0]
            raise ConfigError(f"line {row['_row']}, column experimentId: empty", where=row["_file"])
        mtable.loc[empty, "simulationConditionId"] = "experiment"
        records.append({"conditionId": "experiment", **_array_values(array_inputs, "", None)})
    if settling:
        mtable["preequilibrationConditionId"] = [settling.get(e, "") for e in mtable["simulationConditionId"]]
    frame = pd.DataFrame(records).fillna("")
    frame["_file"] = str(files.experiments[0]) if files.experiments else str(files.yaml)
    frame["_row"] = range(2, len(frame) + 2)
    return frame.set_index("conditionId", drop=False), mtable, start_times, later


def _period_targets(rows: list[pd.Series], targets: dict[str, dict[str, str]], experiment: str) -> dict[str, str]:
    """What the conditions of one period (rows of the experiments table at one time) set, together."""
    out: dict[str, str] = {}
    for row in rows:
        for target, value in targets.get(row["conditionId"], {}).items():
            if target in out:
                raise ConfigError(f"line {row['_row']}: experiment {experiment!r}: two conditions at time "
                                  f"{row['time']} set {target}", where=row["_file"])
            out[target] = value
    return out


def _array_values(array_inputs: dict[str, dict[str, list[float]]], cond: str, row) -> dict[str, str]:
    """The array-file input values of condition ``cond`` as condition-table cells ``ID_k``."""
    out = {}
    for pid, by in array_inputs.items():
        values = by.get(cond, by.get("0"))
        if values is None:
            where = row["_file"] if row is not None else "extensions.sciml.array_files"
            raise ConfigError(f"{'line ' + str(row['_row']) + ': ' if row is not None else ''}the array input {pid} "
                              f"has no dataset for condition {cond!r} (nor 0, for every condition)", where=where)
        out.update({f"{pid}_{k}": repr(v) for k, v in enumerate(values)})
    return out
