"""The PEtab problem YAML and its TSV tables, read and checked column by column (PEtab v1).

Each reader returns a :class:`pandas.DataFrame` of strings and numbers as the format defines them, or raises
:class:`~ude_cli.errors.ConfigError` naming the file, the row or column and what was expected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import ConfigError

#: Columns each table must have (PEtab v1).
REQUIRED = {
    "measurement": ("observableId", "simulationConditionId", "measurement", "time"),
    "measurement_v2": ("observableId", "experimentId", "measurement", "time"),
    "experiment": ("experimentId", "time", "conditionId"),
    "condition_v2": ("conditionId", "targetId", "targetValue"),
    "mapping": ("petabEntityId", "modelEntityId"),
    "hybridization": ("targetId", "targetValue"),
    "condition": ("conditionId",),
    "observable": ("observableId", "observableFormula", "noiseFormula"),
    "parameter": ("parameterId", "parameterScale", "lowerBound", "upperBound", "nominalValue", "estimate"),
    "parameter_v2": ("parameterId", "lowerBound", "upperBound", "nominalValue", "estimate"),
}
SCALES = ("lin", "log", "log10")
TRANSFORMATIONS = ("lin", "log", "log10")
#: noise distributions of PEtab v1
DISTRIBUTIONS = ("normal", "laplace")
#: of PEtab v2: the log-scale ones of the current draft, and the count distributions of its pull request 654
DISTRIBUTIONS_V2 = (*DISTRIBUTIONS, "log-normal", "log-laplace", "poisson", "negative-binomial", "binomial")


@dataclass
class Files:
    """The files a problem YAML names, resolved against its folder."""

    yaml: Path
    sbml: Path
    conditions: list[Path]
    measurements: list[Path]
    observables: list[Path]
    parameters: Path
    format_version: str
    extras: dict = field(default_factory=dict)
    #: PEtab v2: the experiment and mapping tables
    experiments: list[Path] = field(default_factory=list)
    mappings: list[Path] = field(default_factory=list)
    #: PEtab SciML (v2 ``extensions.sciml``): network id -> (YAML file, pre-initialization); hybridization and
    #: array (HDF5) files
    networks: dict[str, tuple[Path, bool]] = field(default_factory=dict)
    hybridizations: list[Path] = field(default_factory=list)
    arrays: list[Path] = field(default_factory=list)

    @property
    def v2(self) -> bool:
        return self.format_version.startswith("2")


def label(path: Path) -> str:
    """How messages name a file: as given (relative where it was)."""
    return str(path)


def read_problem_yaml(path: str | Path) -> Files:
    """The problem YAML: its PEtab version and the files it names (which must exist)."""
    from ..config import read_yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError("file not found", where=str(path))
    raw = read_yaml(path)
    where = str(path)
    if not isinstance(raw, dict):
        raise ConfigError("expected a PEtab problem: a mapping with format_version, parameter_file and problems",
                          where=where)
    version = str(raw.get("format_version", "")).strip()
    if version in ("2", "2.0", "2.0.0"):
        return _read_v2(raw, path)
    if version not in ("1", "1.0", "1.0.0"):
        raise ConfigError(f"format_version {version or '(missing)'!r}: expected 1 or 2",
                          where=f"{where}: format_version")
    if raw.get("extensions"):
        names = ", ".join(map(str, raw["extensions"]))
        raise ConfigError(f"PEtab extensions ({names}) are not supported", where=f"{where}: extensions")
    problems = raw.get("problems")
    if not isinstance(problems, list) or not problems:
        raise ConfigError("expected 'problems': a list with one entry", where=f"{where}: problems")
    if len(problems) > 1:
        raise ConfigError(f"{len(problems)} problems in one file are not supported; give one",
                          where=f"{where}: problems")
    entry = problems[0]
    if not isinstance(entry, dict):
        raise ConfigError("expected a mapping of file lists", where=f"{where}: problems[0]")
    base = path.parent

    def files(key: str, required: bool = True) -> list[Path]:
        return _file_list(entry, key, base, where, required, prefix="problems[0].")

    sbml = files("sbml_files")
    if len(sbml) > 1:
        raise ConfigError("several SBML files are not supported; give one", where=f"{where}: problems[0].sbml_files")
    pfile = raw.get("parameter_file")
    if isinstance(pfile, list):
        if len(pfile) != 1:
            raise ConfigError("expected one parameter file", where=f"{where}: parameter_file")
        pfile = pfile[0]
    if not isinstance(pfile, str) or not pfile:
        raise ConfigError("missing: the parameter table's file name", where=f"{where}: parameter_file")
    ppath = base / pfile
    if not ppath.is_file():
        raise ConfigError(f"file not found: {ppath}", where=f"{where}: parameter_file")
    return Files(yaml=path, sbml=sbml[0], conditions=files("condition_files"),
                 measurements=files("measurement_files"), observables=files("observable_files"),
                 parameters=ppath, format_version=version)


def _file_list(raw: dict, key: str, base: Path, where: str, required: bool = True, prefix: str = "") -> list[Path]:
    """The files ``raw[key]`` names (one name or a list), relative to ``base``; errors name ``where: prefix key``."""
    field = f"{where}: {prefix}{key}"
    value = raw.get(key)
    if value is None or value == []:
        if required:
            raise ConfigError("missing: a list of file names", where=field)
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError("expected a list of file names", where=field)
    out = []
    for k, name in enumerate(value):
        if not isinstance(name, str) or not name:
            raise ConfigError("expected a file name", where=f"{field}[{k}]")
        p = base / name
        if not p.is_file():
            raise ConfigError(f"file not found: {p}", where=f"{field}[{k}]")
        out.append(p)
    return out


def _read_v2(raw: dict, path: Path) -> Files:
    """A PEtab v2 problem YAML, with the SciML extension in each dialect in circulation (``sciml`` or
    ``petab_sciml``; ``neural_networks`` or ``neural_nets``; ``pre_initialization`` or ``static``)."""
    where, base = str(path), path.parent
    models = raw.get("model_files")
    if not isinstance(models, dict) or len(models) != 1:
        raise ConfigError("expected one model: {id: {location: FILE, language: sbml}}", where=f"{where}: model_files")
    (model,) = models.values()
    if not isinstance(model, dict) or str(model.get("language", "sbml")).lower() != "sbml":
        raise ConfigError("only SBML models are supported", where=f"{where}: model_files")
    sbml = base / str(model.get("location", ""))
    if not sbml.is_file():
        raise ConfigError(f"file not found: {sbml}", where=f"{where}: model_files")
    parameters = _file_list(raw, "parameter_files", base, where)
    if len(parameters) != 1:
        raise ConfigError("expected one parameter file", where=f"{where}: parameter_files")
    files = Files(yaml=path, sbml=sbml, conditions=_file_list(raw, "condition_files", base, where, required=False),
                  measurements=_file_list(raw, "measurement_files", base, where),
                  observables=_file_list(raw, "observable_files", base, where), parameters=parameters[0],
                  format_version="2", experiments=_file_list(raw, "experiment_files", base, where, required=False),
                  mappings=_file_list(raw, "mapping_files", base, where, required=False))
    extensions = raw.get("extensions") or {}
    if not isinstance(extensions, dict):
        raise ConfigError("expected a mapping", where=f"{where}: extensions")
    unknown = [k for k in extensions if k not in ("sciml", "petab_sciml")]
    if unknown:
        raise ConfigError(f"the extension {unknown[0]!r} is not supported", where=f"{where}: extensions")
    for key, ext in extensions.items():
        at = f"{where}: extensions.{key}"
        if not isinstance(ext, dict):
            raise ConfigError("expected a mapping", where=at)
        nets = ext.get("neural_networks", ext.get("neural_nets")) or {}
        if not isinstance(nets, dict):
            raise ConfigError("expected network id -> {location, pre_initialization, format}",
                              where=f"{at}.neural_networks")
        for net, spec in nets.items():
            if not isinstance(spec, dict) or not isinstance(spec.get("location"), str):
                raise ConfigError("expected {location: FILE, ...}", where=f"{at}.neural_networks.{net}")
            fmt = str(spec.get("format", "yaml")).lower()
            if fmt != "yaml":
                raise ConfigError(f"network format {spec.get('format')!r} is not supported (only YAML)",
                                  where=f"{at}.neural_networks.{net}.format")
            location = base / spec["location"]
            if not location.is_file():
                raise ConfigError(f"file not found: {location}", where=f"{at}.neural_networks.{net}.location")
            pre = spec.get("pre_initialization", spec.get("static", False))
            files.networks[str(net)] = (location, str(pre).lower() in ("true", "1"))
        files.hybridizations += _file_list(ext, "hybridization_files", base, at, required=False)
        files.arrays += _file_list(ext, "array_files", base, at, required=False)
    return files


def read_table(paths: list[Path] | Path, kind: str, index: str | None = None) -> pd.DataFrame:
    """A PEtab table (several files are concatenated), with its required columns checked."""
    paths = [paths] if isinstance(paths, Path) else paths
    frames = []
    for p in paths:
        try:
            frame = pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False, na_values=[], comment=None)
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"not a readable tab-separated {kind.split('_')[0]} table: {first}",
                              where=label(p)) from None
        frame.columns = [c.strip() for c in frame.columns]
        missing = [c for c in REQUIRED[kind] if c not in frame.columns]
        if missing:
            raise ConfigError(f"the {kind.split('_')[0]} table lacks the column(s) {', '.join(missing)}; it has: "
                              f"{', '.join(frame.columns)}", where=label(p))
        frame = frame.map(lambda v: v.strip() if isinstance(v, str) else v)
        frame["_file"] = label(p)
        frame["_row"] = range(2, len(frame) + 2)  # the file's line (after the header)
        frames.append(frame)
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*REQUIRED[kind], "_file", "_row"])
    if index is not None:
        dup = out[index].duplicated()
        if dup.any():
            row = out[dup].iloc[0]
            raise ConfigError(f"line {row['_row']}: {index} '{row[index]}' appears twice", where=row["_file"])
        empty = out[index] == ""
        if empty.any():
            row = out[empty].iloc[0]
            raise ConfigError(f"line {row['_row']}: empty {index}", where=row["_file"])
    return out


def number(row: pd.Series, column: str, *, allow_empty: bool = False, kind: str = "a number") -> float:
    """A cell as a float (``inf``/``-inf`` allowed), or a one-line error naming the file, line and column."""
    text = str(row.get(column, ""))
    if text == "":
        if allow_empty:
            return math.nan
        raise ConfigError(f"line {row['_row']}, column {column}: empty; expected {kind}", where=row["_file"])
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"line {row['_row']}, column {column}: {text!r} is not {kind}",
                          where=row["_file"]) from None


def choice(row: pd.Series, column: str, allowed: tuple[str, ...], default: str) -> str:
    """A cell that must be one of ``allowed`` (empty: ``default``)."""
    text = str(row.get(column, "")) or default
    if text not in allowed:
        raise ConfigError(f"line {row['_row']}, column {column}: {text!r} is not supported; expected one of "
                          f"{', '.join(allowed)}", where=row["_file"])
    return text


def split_list(text: str) -> list[str]:
    """A ``;``-separated PEtab list (observableParameters, noiseParameters); empty -> []."""
    return [part.strip() for part in str(text).split(";")] if str(text).strip() else []
