"""params.yaml, validated before a stage does any work.

Each workload declares a pydantic schema for its own section; a stage loads only
the sections it uses, so a bad value stops that workload's branch and no other.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

PARAMS_FILE = Path("params.yaml")


class Schema(BaseModel):
    """Base for params sections: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamsError(ValueError):
    """params.yaml is missing, unreadable or does not match the schema."""


S = TypeVar("S", bound=BaseModel)


def read_params_file(path: str | os.PathLike = PARAMS_FILE) -> dict[str, Any]:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run stages from the project root (where dvc.yaml is)") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ParamsError(f"{path}: not valid YAML (UTF-8 text): {err}") from None
    except RecursionError:
        raise ParamsError(f"{path}: nested too deeply to be a params file") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    return raw


def load_params(section: str, schema: type[S], path: str | os.PathLike = PARAMS_FILE) -> S:
    """Validate one top-level section of params.yaml against `schema`."""
    raw = read_params_file(path)
    if section not in raw:
        raise ParamsError(f"{path}: section '{section}' is missing (sections present: {', '.join(raw) or 'none'})")
    return validate_section(section, raw[section], schema, path)


def validate_section(section: str, value: Any, schema: type[S], path: str | os.PathLike = PARAMS_FILE) -> S:
    try:
        return schema.model_validate(value)
    except ValidationError as err:
        lines = [_describe(section, e, schema) for e in err.errors()]
        raise ParamsError(f"{path}: invalid params (fix the file, or the -S value you passed to `dvc exp run`):\n  "
                          + "\n  ".join(lines)) from None


def _describe(section: str, error: dict, schema: type[BaseModel]) -> str:
    loc = [str(p) for p in error["loc"]]
    key = ".".join([section, *loc])
    if error["type"] == "extra_forbidden":
        allowed = _fields_at(schema, loc[:-1])
        hint = f"unknown key; allowed keys here: {', '.join(allowed)}" if allowed else "unknown key"
        return f"{key} = {error['input']!r}: {hint}"
    if error["type"] == "missing":
        return f"{key}: required key is missing"
    return f"{key} = {error['input']!r}: {error['msg']}"


def _fields_at(schema: type[BaseModel], loc: list[str]) -> list[str]:
    """Field names of the (nested) model found by following `loc` from `schema`."""
    model: Any = schema
    free_key = False
    for part in loc:
        if free_key:  # the key of a dict[str, Model] value is a free name: the model stays the same
            free_key = False
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
        field = model.model_fields.get(part)
        if field is None:
            return []
        free_key = getattr(field.annotation, "__origin__", None) is dict
        model = _inner_model(field.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return sorted(model.model_fields)
    return []


def _inner_model(annotation: Any) -> Any:
    for arg in getattr(annotation, "__args__", ()) or ():
        inner = _inner_model(arg)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner
    return annotation
