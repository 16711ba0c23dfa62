"""params.yaml, validated before a stage does any work.

Each workload declares a pydantic schema for its own section; a stage loads only
the sections it uses, so a bad value stops that workload's branch and no other.
The shared pieces of those schemas (a download source, a TensorFlow strategy name)
live here too, so a stage depends on the code that reads its params, not on the
code that acts on them.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from ruamel.yaml import YAML, YAMLError

from stages.common.cli import StageError

PARAMS_FILE = Path("params.yaml")


class Schema(BaseModel):
    """Base for params sections: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamsError(StageError, ValueError):
    """params.yaml is missing, unreadable or does not match the schema."""


def _hex_digest(length: int, what: str):
    def check(value: str | None) -> str | None:
        if value is not None and (len(value) != length or any(c not in "0123456789abcdef" for c in value.lower())):
            raise ValueError(f"must be {length} hex digits ({what}) or null")
        return value.lower() if value else value

    return check


class Source(Schema):
    """A file to download: its URL (https, http, file://) or a local path, and the checksum on record, if any."""

    url: str = Field(min_length=1)
    sha256: str | None = Field(
        default=None,
        description="the checksum on record; null: trusted on first download and recorded in sources.lock.yaml",
    )
    md5: str | None = Field(default=None, description="where the authority pins only an md5 (Keras' VGG16 weights)")

    _sha256 = field_validator("sha256")(_hex_digest(64, "a sha256"))
    _md5 = field_validator("md5")(_hex_digest(32, "an md5"))

    @field_validator("url")
    @classmethod
    def _no_credentials(cls, value: str) -> str:
        # params.yaml is committed and logged to MLflow: secrets belong in the environment or ~/.netrc
        if urllib.parse.urlparse(value).password is not None:
            raise ValueError(
                "must not contain a password (user:password@host): params are committed and logged; "
                "use ~/.netrc or the environment for credentials"
            )
        return value

    @property
    def filename(self) -> str:
        return Path(urllib.parse.urlparse(self.url).path).name or "download"

    @property
    def pinned(self) -> dict[str, str]:
        """{algorithm: hex digest} of the checksums given in params (empty when none is on record)."""
        return {name: digest for name, digest in (("sha256", self.sha256), ("md5", self.md5)) if digest}


# TensorFlow distribution strategies a model's `distribution:` param may name (stages/common/distribution.py)
Distribution = Literal["default", "auto", "mirrored", "one_device"]


S = TypeVar("S", bound=BaseModel)


def load_yaml(text: str) -> Any:
    """YAML read as DVC reads params (ruamel, YAML 1.2), so a stage sees exactly the values DVC records: `-S` writes
    floats like 6e-05, which YAML 1.1 readers (PyYAML) take for strings."""
    return YAML(typ="safe").load(text)


def read_params_file(path: str | os.PathLike = PARAMS_FILE) -> dict[str, Any]:
    path = Path(path)
    try:
        raw = load_yaml(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run stages from the project root (where dvc.yaml is)") from None
    except (YAMLError, UnicodeDecodeError) as err:
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


def pick_model(models: dict[str, S], name: str, section: str) -> S:
    """The params of model `name` (a stage's argument, e.g. `movielens_train@bias`) under `section`, or a clear
    error listing the models there."""
    if name not in models:
        raise ParamsError(
            f"no model '{name}' under {section} in params.yaml (models: {', '.join(models)}); add it "
            "there, or name one of these"
        )
    return models[name]


def validate_section(section: str, value: Any, schema: type[S], path: str | os.PathLike = PARAMS_FILE) -> S:
    try:
        return schema.model_validate(value)
    except ValidationError as err:
        lines = [_describe(section, e, schema) for e in err.errors()]
        raise ParamsError(
            f"{path}: invalid params (fix the file, or the -S value you passed to `dvc exp run`):\n  "
            + "\n  ".join(lines)
        ) from None


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
