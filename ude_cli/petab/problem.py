"""A PEtab v1 problem as read: its SBML model and its four tables, each row checked.

:func:`load_problem` reads everything a problem YAML names and checks what the tables say about each other
(every observable, condition and parameter a row names exists; scales, transformations and distributions
are ones PEtab defines). Turning it into a ``ude`` config is :mod:`.convert`'s work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import sympy as sp

from ..errors import ConfigError
from . import tables
from .language import parse_formula
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


@dataclass(frozen=True)
class PetabObservable:
    """One row of the observable table, its formulas as sympy (placeholders still symbols)."""

    id: str
    formula: sp.Expr
    noise: sp.Expr
    transformation: str  # lin, log, log10
    distribution: str  # normal, laplace
    formula_text: str
    noise_text: str
    file: str
    row: int


@dataclass
class PetabProblem:
    """Everything a problem YAML names, read and checked."""

    files: tables.Files
    sbml: SbmlModel
    parameters: dict[str, PetabParameter]
    observables: dict[str, PetabObservable]
    conditions: pd.DataFrame  # indexed by conditionId; columns: the targets
    measurements: pd.DataFrame

    @property
    def name(self) -> str:
        return self.files.yaml.stem

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


def load_problem(path: str | Path) -> PetabProblem:
    """Read and check the PEtab problem ``path`` (its YAML file)."""
    files = tables.read_problem_yaml(path)
    model = read_sbml(files.sbml)

    ptable = tables.read_table(files.parameters, "parameter", index="parameterId")
    parameters: dict[str, PetabParameter] = {}
    for _, row in ptable.iterrows():
        scale = tables.choice(row, "parameterScale", tables.SCALES, "lin")
        estimate_text = str(row["estimate"])
        if estimate_text not in ("0", "1"):
            raise ConfigError(f"line {row['_row']}, column estimate: {estimate_text!r}; expected 0 or 1",
                              where=row["_file"])
        estimate = estimate_text == "1"
        for column in ("priorType", "objectivePriorType"):
            if str(row.get(column, "")) not in ("", "parameterScaleUniform"):
                raise ConfigError(f"line {row['_row']}, column {column}: priors are not supported yet",
                                  where=row["_file"])
        lower = tables.number(row, "lowerBound", allow_empty=not estimate)
        upper = tables.number(row, "upperBound", allow_empty=not estimate)
        nominal = tables.number(row, "nominalValue")
        if estimate and not lower <= nominal <= upper:
            raise ConfigError(f"line {row['_row']}: nominalValue {nominal:g} lies outside [{lower:g}, {upper:g}]",
                              where=row["_file"])
        if scale != "lin" and estimate and nominal <= 0:
            raise ConfigError(f"line {row['_row']}: nominalValue {nominal:g} must be > 0 on {scale} scale",
                              where=row["_file"])
        parameters[row["parameterId"]] = PetabParameter(row["parameterId"], scale, lower, upper, nominal, estimate)

    otable = tables.read_table(files.observables, "observable", index="observableId")
    observables: dict[str, PetabObservable] = {}
    for _, row in otable.iterrows():
        oid = row["observableId"]
        observables[oid] = PetabObservable(
            id=oid, formula=_formula(row, "observableFormula"), noise=_formula(row, "noiseFormula"),
            transformation=tables.choice(row, "observableTransformation", tables.TRANSFORMATIONS, "lin"),
            distribution=tables.choice(row, "noiseDistribution", tables.DISTRIBUTIONS, "normal"),
            formula_text=row["observableFormula"], noise_text=row["noiseFormula"], file=row["_file"],
            row=int(row["_row"]))

    ctable = tables.read_table(files.conditions, "condition", index="conditionId")
    conditions = ctable.set_index("conditionId", drop=False)
    for column in conditions.columns:
        if column in ("conditionId", "conditionName", "_file", "_row"):
            continue
        if column not in model.kinds and column not in parameters:
            raise ConfigError(f"condition table column {column!r}: not a parameter, species or compartment of the "
                              f"model", where=str(files.conditions[0]))

    mtable = tables.read_table(files.measurements, "measurement")
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
        if str(row.get("preequilibrationConditionId", "")):
            raise ConfigError(f"line {row['_row']}, column preequilibrationConditionId: pre-equilibration is not "
                              f"supported", where=where)
        t = tables.number(row, "time", kind="a time")
        if not math.isfinite(t):
            raise ConfigError(f"line {row['_row']}, column time: {t:g}: steady-state measurements are not "
                              f"supported", where=where)
        if t < 0:
            raise ConfigError(f"line {row['_row']}, column time: {t:g} is before 0, where PEtab simulations start",
                              where=where)
        m = tables.number(row, "measurement")
        if not math.isfinite(m):
            raise ConfigError(f"line {row['_row']}, column measurement: {m:g} is not a finite number", where=where)
    mtable["time"] = mtable["time"].astype(float)
    mtable["measurement"] = mtable["measurement"].astype(float)
    return PetabProblem(files=files, sbml=model, parameters=parameters, observables=observables,
                        conditions=conditions, measurements=mtable)
