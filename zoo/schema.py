"""The one base class of zoo's recipe, task and sweep schemas, and the walk that documents them.

Every section of a recipe is a :class:`Strict` model (``train``, ``track``, each task's ``task``
and ``data`` sections, ``sweep``): unknown keys are refused and numbers must be finite.  Every
field is declared with ``Field(description=...)``; :func:`keys` walks a schema (into its nested
sections) and gives each key's type, default, bounds and description, which is what
``zoo recipes --keys`` prints and what the docs' generated recipe reference lists
(:mod:`zoo.docs`).  Builders' hyperparameters (:class:`zoo.registry.Params`) are described the
same way.  This module imports pydantic only.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import PydanticUndefined


class Strict(BaseModel):
    """Base of every recipe, task and sweep schema: unknown keys refused, numbers finite."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# ``data.encoding``, the same key in every task that reads the user's text files
ENCODING: Any = Field("utf-8", description=(
    "The text encoding of the file(s), any Python codec name (utf-8, latin-1, cp1252, "
    "utf-16, ...). A UTF-8 byte-order mark is dropped; bytes that do not decode are refused "
    "with the line and column."))


@dataclass(frozen=True)
class KeyInfo:
    """One documented key: its dotted path, type, default, bounds and description."""

    key: str
    type: str
    default: str
    bounds: str
    description: str


def _is_section(ann: Any) -> type[BaseModel] | None:
    """The nested schema of a field whose type is a section (optional or not), else None."""
    for cand in typing.get_args(ann) or (ann,):
        if isinstance(cand, type) and issubclass(cand, BaseModel):
            return cand
    return None


def type_name(ann: Any) -> str:
    """A field's type as a recipe writer reads it: ``int``, ``float or null``, ``one of a, b``."""
    origin = typing.get_origin(ann)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(ann))
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(ann)
        parts = [type_name(a) for a in args if a is not type(None)]
        text = " or ".join(parts)
        return f"{text} or null" if type(None) in args else text
    if origin is dict or ann is dict:
        return "mapping"
    if origin is list or ann is list:
        return "list"
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return "section"
    if ann is Any:
        return "any"
    return getattr(ann, "__name__", str(ann).replace("typing.", ""))


def bounds_text(field: Any) -> str:
    """A field's bounds, e.g. ``>= 1, <= 100000``; lengths and patterns of text too."""
    out = []
    for m in field.metadata:
        for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(m, attr, None) is not None:
                out.append(f"{op} {getattr(m, attr):g}" if isinstance(getattr(m, attr), float)
                           else f"{op} {getattr(m, attr)}")
        if getattr(m, "min_length", None) is not None:
            out.append(f"length >= {m.min_length}")
        if getattr(m, "max_length", None) is not None:
            out.append(f"length <= {m.max_length}")
        if getattr(m, "pattern", None) is not None:
            out.append(f"matches {m.pattern}")
    return ", ".join(out)


def default_text(field: Any) -> str:
    """A field's default as it would be written in YAML (``required`` where there is none)."""
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(section)"
    return json.dumps(value, ensure_ascii=False)


def keys(model: type[BaseModel], prefix: str = "") -> list[KeyInfo]:
    """Every key of a schema, nested sections included (each after its own row), in order."""
    out: list[KeyInfo] = []
    for name, f in model.model_fields.items():
        key = f"{prefix}.{name}" if prefix else name
        out.append(KeyInfo(key, type_name(f.annotation), default_text(f), bounds_text(f),
                           " ".join((f.description or "").split())))
        sub = _is_section(f.annotation)
        if sub is not None:
            out.extend(keys(sub, key))
    return out


def undocumented(model: type[BaseModel], prefix: str = "") -> list[str]:
    """The keys of a schema (nested sections included) that have no description."""
    return [k.key for k in keys(model, prefix) if not k.description]
