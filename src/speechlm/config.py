"""Typed configuration: frozen dataclasses that map 1:1 onto YAML.

Every component owns its config dataclass next to its code (``tokenizers``, ``model``, ``train`` ...);
this module holds the one mechanism that turns YAML + ``a.b=c`` command-line overrides into those
dataclasses and back. Rules (DESIGN.md §7):

- a YAML key that is not a field is an error naming the key, its dotted path and the file;
- a value of the wrong type is an error (``int`` accepts ints, ``float`` accepts ints and floats,
  ``bool`` only true/false, ``Literal`` only its members, ``tuple[int, ...]`` a list of ints, ...);
- missing keys take the field default; a field without a default is required;
- ``to_dict(load(x)) == x`` for a complete config (round trip), so resolved configs saved beside
  checkpoints load back to the same object.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")
_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ConfigError(ValueError):
    """A configuration that does not match its dataclass."""


def _where(path: str, source: str | None) -> str:
    loc = f"'{path}'" if path else "the top level"
    return f"{loc} in {source}" if source else loc


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, path: str, source: str | None) -> Any:
    """Check ``value`` against type ``tp`` and convert it (dicts -> dataclasses, lists -> tuples)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Union or origin is types.UnionType:
        return _convert_union(value, tp, path, source)
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            raise ConfigError(f"{_where(path, source)}: {value!r} is not one of {choices}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{_where(path, source)}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, source=source, prefix=path)
    if origin in (tuple, list):
        return _convert_sequence(value, tp, path, source)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{_where(path, source)}: expected a mapping, got {value!r}")
        key_tp, val_tp = get_args(tp) or (Any, Any)
        return {
            _convert(k, key_tp, f"{path}.{k}", source): _convert(v, val_tp, f"{path}.{k}", source)
            for k, v in value.items()
        }
    return _convert_scalar(value, tp, path, source)


def _convert_union(value: Any, tp: Any, path: str, source: str | None) -> Any:
    args = get_args(tp)
    if value is None and type(None) in args:
        return None
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _convert(value, arg, path, source)
        except ConfigError:
            continue
    raise ConfigError(f"{_where(path, source)}: {value!r} matches none of {_type_name(tp)}")


def _convert_sequence(value: Any, tp: Any, path: str, source: str | None) -> Any:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{_where(path, source)}: expected a list, got {value!r}")
    origin, args = get_origin(tp), get_args(tp)
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(args) != len(value):
            raise ConfigError(f"{_where(path, source)}: expected {len(args)} items, got {len(value)}")
        items = [_convert(v, a, f"{path}[{i}]", source) for i, (v, a) in enumerate(zip(value, args))]
    else:
        item_tp = args[0] if args else Any
        items = [_convert(v, item_tp, f"{path}[{i}]", source) for i, v in enumerate(value)]
    return tuple(items) if origin is tuple else items


def _convert_scalar(value: Any, tp: Any, path: str, source: str | None) -> Any:
    """bool / int / float / str / Path, strictly: ``1`` is not a bool and ``true`` is not an int."""
    where = _where(path, source)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
            value = float(value)  # PyYAML (YAML 1.1) reads `5e-4` as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    raise ConfigError(f"{where}: unsupported config type {_type_name(tp)}")


def from_dict(cls: type[T], data: dict[str, Any], *, source: str | None = None, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a plain mapping; unknown keys and wrong types are errors."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{_where(prefix, source)}: expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else str(unknown[0])
        known = ", ".join(sorted(fields))
        raise ConfigError(f"unknown key {_where(key, source)} (known keys of {cls.__name__}: {known})")
    kwargs = {}
    for name, f in fields.items():
        path = f"{prefix}.{name}" if prefix else name
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], path, source)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key {_where(path, source)}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:  # __post_init__ validation
        raise ConfigError(f"{_where(prefix, source)}: {err}") from err


TRAINING_ONLY = {"training_only": True}  # field metadata: a knob of training alone (see to_dict)


def to_dict(obj: Any, *, inference_only: bool = False) -> Any:
    """Inverse of :func:`from_dict`: dataclasses -> dicts, tuples -> lists, paths -> strings.

    ``inference_only`` leaves out fields declared with ``metadata=TRAINING_ONLY`` — settings that
    change how a model is trained but not what a trained model computes (e.g. an augmentation), so
    a fingerprint of "what this model computes" need not change when such a knob is added.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_dict(getattr(obj, f.name), inference_only=inference_only)
            for f in dataclasses.fields(obj)
            if f.init and not (inference_only and f.metadata.get("training_only"))
        }
    if isinstance(obj, (list, tuple)):
        return [to_dict(v, inference_only=inference_only) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v, inference_only=inference_only) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def parse_overrides(overrides: typing.Iterable[str]) -> dict[str, Any]:
    """``["train.lr=1e-3", "model.layers=[2,2]"]`` -> nested dict; values are parsed as YAML."""
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form a.b=c")
        key, raw = item.split("=", 1)
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} has an empty key")
        value = yaml.safe_load(raw) if raw else ""
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override")
        node[parts[-1]] = value
    return nested


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``update`` wins. Returns a new dict."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def load(cls: type[T], path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> T:
    """Load ``cls`` from a YAML file (optional) with ``a.b=c`` overrides applied on top."""
    data = read_yaml(path) if path is not None else {}
    over = parse_overrides(overrides)
    source = str(path) if path is not None else "<defaults>"
    if over:
        source += " + command-line overrides"
    return from_dict(cls, merge(data, over), source=source)


def dump(obj: Any, path: str | Path | None = None) -> str:
    """Serialise a config dataclass to YAML (and write it atomically when ``path`` is given)."""
    text = yaml.safe_dump(to_dict(obj), sort_keys=False)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return text
