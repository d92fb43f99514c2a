"""Typed stage parameters loaded from the Snakemake config, a YAML/JSON file or a JSON string.

Every stage declares its parameters as a dataclass with defaults; ``load_params`` merges
user values over those defaults and rejects unknown keys (with a did-you-mean hint) so a
config typo fails before any work starts.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import logging
import re
import types
import typing
import warnings
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError

# numbers YAML 1.1 leaves as text (1e-3, 5E+2): exponent without a dot
_FLOAT_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")

T = TypeVar("T")


def check_percentiles(low: float, high: float, name: str) -> None:
    """A display/normalisation range of percentiles: 0 <= low < high <= 100 (ConfigError naming ``name``)."""
    if not 0.0 <= low < high <= 100.0:
        raise ConfigError(f"{name} must satisfy 0 <= low < high <= 100, got {low}, {high}")


def read_mapping(source: str | Path | dict | None) -> dict:
    """A dict from a dict, a JSON string, or the path of a YAML/JSON file."""
    if source is None:
        return {}
    if isinstance(source, dict):
        return dict(source)
    text = str(source).strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"parameters are not valid JSON: {err}") from err
    else:
        path = Path(text)
        if path.is_dir():
            raise ConfigError("is a folder, not a parameter file (YAML or JSON)", path)
        if not path.is_file():
            raise ConfigError("parameter file does not exist", path)
        try:
            value = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"not valid YAML: {err}", path) from err
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"parameters must be a mapping, got {type(value).__name__}")
    return value


def parse_overrides(items: list[str] | None) -> dict:
    """``["a=1", "b.c=x"]`` -> nested dict, values parsed as YAML scalars."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return out


def unknown_key_message(key: str, known: list[str], where: str, what: str = "parameter") -> str:
    hint = difflib.get_close_matches(key, known, n=1)
    extra = f" (did you mean {hint[0]!r}?)" if hint else ""
    return f"unknown {what} {key!r} in {where}{extra}; known: {', '.join(sorted(known))}"


def _coerce(value: Any, tp: Any, name: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return from_dict(tp, value, where=name)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, name)
            except (ConfigError, TypeError, ValueError):
                continue
        raise ConfigError(f"parameter {name!r}: {value!r} does not match {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"parameter {name!r} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"parameter {name!r} must be a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"parameter {name!r} needs {len(args)} values, got {value!r}")
            return tuple(_coerce(v, a, name) for v, a in zip(value, args, strict=True))
        inner = args[0] if args else Any
        seq = [_coerce(v, inner, name) for v in value]
        return tuple(seq) if origin is tuple else seq
    if tp is float:
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-3 (no dot) as text: a user means the number
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"parameter {name!r} must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"parameter {name!r} must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"parameter {name!r} must be true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"parameter {name!r} must be a string, got {value!r}")
        return value
    return value


_WARNED: set[str] = set()


def renamed_keys(cls: type) -> dict[str, list[str]]:
    """Old key -> new dotted key(s) of a parameter class (class attribute ``RENAMED``)."""
    return {old: [new] if isinstance(new, str) else list(new) for old, new in getattr(cls, "RENAMED", {}).items()}


def _apply_renames(cls: type, values: dict, where: str) -> dict:
    """Move deprecated keys to their new place (kept working for one release, with a message)."""
    renames = renamed_keys(cls)
    if not renames or not any(k in values for k in renames):
        return values
    values = copy.deepcopy(values)
    for old, targets in renames.items():
        if old not in values:
            continue
        value = values.pop(old)
        message = (f"parameter {where}.{old} is deprecated and will be removed in the next release; "
                   f"use {', '.join(f'{where}.{t}' for t in targets)}")
        if message not in _WARNED:
            _WARNED.add(message)
            warnings.warn(message, FutureWarning, stacklevel=4)
            logging.getLogger("zarrseg").warning(message)
        for target in targets:
            node = values
            *parents, leaf = target.split(".")
            for part in parents:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    break
            else:
                node.setdefault(leaf, value)  # an explicit new key wins over the old one
    return values


def from_dict(cls: type[T], values: dict, where: str | None = None) -> T:
    """Build dataclass ``cls`` from ``values``, type-checking each field and rejecting unknown keys."""
    where = where or cls.__name__
    values = _apply_renames(cls, values, where)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(unknown_key_message(key, list(fields), where))
        kwargs[key] = _coerce(_over_default(fields[key], value), hints[key], f"{where}.{key}")
    try:
        obj = cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from err
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def _over_default(f: dataclasses.Field, value: Any) -> Any:
    """A partial mapping for a nested section is merged over that field's own default (e.g. a
    method's ``loop`` with ``checkpoint_every: 500``), not over the nested class's defaults."""
    if not isinstance(value, dict) or f.default_factory is dataclasses.MISSING:
        return value
    default = f.default_factory()
    if not dataclasses.is_dataclass(default):
        return value
    return deep_update(to_dict(default), value)


def load_params(cls: type[T], *sources: str | Path | dict | None, where: str | None = None) -> T:
    """Merge sources left to right (later wins, nested dicts merged) into dataclass ``cls``."""
    merged: dict = {}
    for source in sources:
        deep_update(merged, read_mapping(source))
    return from_dict(cls, merged, where=where)


def deep_update(dst: dict, src: dict) -> dict:
    """Merge ``src`` into ``dst`` in place, recursing into nested mappings (later values win)."""
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            deep_update(dst[key], value)
        else:
            dst[key] = value
    return dst


def to_dict(obj: Any) -> dict:
    """Dataclass -> plain dict (tuples as lists) for JSON/Zarr attributes."""
    return json.loads(json.dumps(dataclasses.asdict(obj), default=list))
