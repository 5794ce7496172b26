"""Config machinery: strict pydantic sections, YAML loading, `--set a.b=v` overrides, clear errors.

Every setting lives in one typed model; YAML files and CLI overrides only ever feed that model, so a
typo or a bad value fails before any work starts, with the dotted path of the field in the message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from omniforge.errors import InputError
from omniforge.hashing import stable_hash


def absolute_local_path(path: str) -> str:
    """A local path, made absolute against the folder the command runs in: Ray workers resolve
    paths in their own working folder (Ray Train's move into a trial folder). URLs pass as they are."""
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


PathOrURL = Annotated[str, AfterValidator(absolute_local_path)]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def hash(self) -> str:
        """Stable hash of this section's resolved values (used for caching and lineage)."""
        return stable_hash(self.model_dump(mode="json"))

    def at_defaults(self, names: tuple[str, ...]) -> set[str]:
        """Which of `names` hold their field's default: settings added after versions were made stay out
        of an identity at their default (what those versions had), so the versions hold."""
        return {name for name in names if getattr(self, name) == type(self).model_fields[name].default}


class ConfigError(InputError, ValueError):
    """A config that cannot be used; the message names every bad field."""


S = TypeVar("S", bound=BaseModel)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `a.b.c=value` into its key path and its YAML-parsed value."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like section.field=value")
    path = key.strip().split(".")
    if any(not part for part in path):
        raise ConfigError(f"override {text!r} has an empty key part")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({err})") from err
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `data` with each `a.b=value` override set (creating sections as needed)."""
    result = yaml.safe_load(yaml.safe_dump(data)) or {}
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for i, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(path[: i + 1])} is not a section")
            node = child
        node[path[-1]] = value
    return result


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "<root>"
        got = item.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {where}: {item['msg']}{shown}")
    return "\n".join(lines)


def validate_config(model: type[S], data: dict[str, Any], source: str) -> S:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


BASE_KEY = "base"  # a config file that starts from another: `base: demo.yaml`, then only what differs


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A config file's settings; one with `base: OTHER.yaml` is that file's, with its own laid over them."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file not found: {file}")
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {file} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"config file {file} must hold a mapping at its top level")
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"config file {file}: {BASE_KEY} must name a config file (relative to this one)")
    return merge(read_yaml(file.parent / base), data)


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` laid over it, section by section (a value that is not a mapping replaces)."""
    merged = dict(base)
    for key, value in changes.items():
        both_sections = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = merge(merged[key], value) if both_sections else value
    return merged


def load_config(model: type[S], path: str | Path | None, overrides: list[str] | None = None) -> S:
    """Load `model` from a YAML file (or defaults when path is None) plus CLI overrides."""
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    return validate_config(model, data, str(path) if path else "defaults")


def dump_yaml(config: BaseModel) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
