"""Write the config reference (docs/config.md) from the pydantic schema, so it never drifts.

``python -m ude_cli.schema_doc > docs/config.md``; a test checks the committed file is current.
"""

from __future__ import annotations

import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from . import config as schema

SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("top level", schema.Config),
    ("data", schema.DataSpec),
    ("data.validation", schema.ValidationSpec),
    ("model", schema.ModelSpec),
    ("model.parameters.NAME", schema.ParameterSpec),
    ("model.initial.STATE", schema.InitialSpec),
    ("model.constants.NAME (as a mapping)", schema.ColumnRef),
    ("model.preequilibration", schema.PreequilibrationSpec),
    ("model.events[i]", schema.EventSpec),
    ("observables.NAME", schema.ObservableSpec),
    ("noise (and observables.NAME.noise)", schema.NoiseSpec),
    ("noise.sigma, noise.sigma_rel, noise.dispersion", schema.NoiseParameterSpec),
    ("networks.NAME", schema.NetworkSpec),
    ("model.parameters.NAME.prior, networks.NAME.priors.ARRAY", schema.PriorSpec),
    ("solver", schema.SolverSpec),
    ("training", schema.TrainingSpec),
    ("training.loss", schema.LossSpec),
    ("training.stages[i]", schema.StageSpec),
    ("training.curriculum", schema.CurriculumSpec),
    ("uncertainty", schema.UncertaintySpec),
    ("output", schema.OutputSpec),
    ("discover", schema.DiscoverSpec),
]


def _type(annotation) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join(_type(a) for a in args if a is not type(None)) + (" or null" if type(None) in args else "")
    if origin is typing.Annotated:
        return _type(args[0])
    if origin in (list, tuple):
        inner = ", ".join(_type(a) for a in args if a is not Ellipsis)
        return f"list of {inner}" if origin is list else f"[{inner}]"
    if origin is dict:
        return f"mapping {_type(args[0])} → {_type(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation)).replace("NoneType", "null")


def _default(field) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return "(see below)"
        if isinstance(value, list) and value and isinstance(value[0], BaseModel):
            return "; ".join(", ".join(f"{k}: {v}" for k, v in s.model_dump(exclude_none=True).items()) for s in value)
        return f"`{value}`"
    if field.default is PydanticUndefined or field.default is None:
        return "null"
    return f"`{field.default}`"


def render() -> str:
    out = ["# Config reference", "",
           "Generated from the schema (`python -m ude_cli.schema_doc > docs/config.md`). `ude check CONFIG "
           "--print` shows a config with every default filled in. Unknown keys are errors (with the nearest "
           "valid name suggested).", ""]
    for title, model in SECTIONS:
        doc = (model.__doc__ or "").strip().replace("\n", " ")
        doc = " ".join(doc.split())
        out += [f"## `{title}`", "", doc, "", "| field | type | default | meaning |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            desc = (field.description or "").replace("|", "\\|")
            out.append(f"| `{name}` | {_type(field.annotation)} | {_default(field)} | {desc} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(render(), end="")
