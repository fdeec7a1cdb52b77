"""Typed option dataclasses: range checks and the round trip through ``config.yaml``.

Every option of a scene, strategy, trainer or run is declared once, in a frozen dataclass
next to the code that runs it. Its ``__post_init__`` checks ranges with :func:`require`, so
a bad value is refused when the command line is parsed (tyro builds the dataclass) and
when a saved config is read back (:func:`from_dict` builds it too, after checking every
field's type and ``Literal`` choices). This module imports nothing heavy: the command line
imports the option dataclasses before it knows whether torch is needed.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, TypeVar, Union

T = TypeVar("T")


class ConfigError(Exception):
    """An option with a bad value: ``option`` (``--steps``, or a key of config.yaml) and the
    problem. Not a ValueError on purpose: tyro turns those into its own multi-line report,
    while this one reaches the command line's one-line error."""

    def __init__(self, option: str, problem: str) -> None:
        super().__init__(f"{option}: {problem}")
        self.option = option
        self.problem = problem


def first_line(error: BaseException) -> str:
    """An exception's first line, or its type's name when it says nothing: what a one-line
    error quotes of a library's many-line message."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def flag(field: str) -> str:
    """The command-line spelling of a field: ``split_threshold`` -> ``--split-threshold``."""
    return "--" + field.replace("_", "-")


def require(ok: bool, field: str, problem: str) -> None:
    if not ok:
        raise ConfigError(flag(field), problem)


def at_least(value: float | None, field: str, minimum: float) -> None:
    """None passes (an option left to its automatic value)."""
    if value is not None:
        require(value >= minimum, field, f"must be >= {minimum:g} (got {value})")


def finite_at_least(value: float, field: str, minimum: float, strict: bool = False) -> None:
    ok = math.isfinite(value) and (value > minimum if strict else value >= minimum)
    require(ok, field, f"must be {'>' if strict else '>='} {minimum:g} and finite (got {value})")


def check_ratio(value: float, field: str) -> None:
    """A size ratio (of an elastic scene): in (0, 1]."""
    require(math.isfinite(value) and 0.0 < value <= 1.0, field, f"a size ratio lies in (0, 1] (got {value:g})")


DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def check_device(value: str, field: str = "device") -> None:
    """A device name (``auto``, ``cpu``, ``cuda``, ``cuda:N``); whether it exists is checked
    when the command runs (:func:`splatfield.render.device.resolve_device`)."""
    ok = value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit())
    require(ok, field, f"{value!r} is not {DEVICE_CHOICES}")


def check_port(port: int, field: str = "port") -> None:
    require(0 <= port <= 65535, field, f"must be a port number in 0..65535 (got {port})")


# ----------------------------------------------------------------------------- yaml round trip


def to_dict(config: Any) -> dict:
    """A config dataclass as plain YAML-safe values (tuples as lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        return v

    return plain(config)


def from_dict(cls: type[T], doc: Any, where: str = "") -> T:
    """Builds ``cls`` from ``doc`` (a dict read from YAML), checking each field's type and
    Literal choices; missing fields take their defaults, unknown ones are refused.
    ``where`` prefixes the key in errors (``trainer.steps``)."""
    if not isinstance(doc, dict):
        raise ConfigError(where or cls.__name__, f"expected a mapping, got {type(doc).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(doc) - set(fields))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}" if where else unknown[0], "unknown option")
    values = {name: _convert(hints[name], doc[name], f"{where}.{name}" if where else name) for name in doc}
    return cls(**values)


def _convert(tp: Any, v: Any, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _convert(args[0], v, key)
    if origin in (Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return _convert(a, v, key)
            except ConfigError as e:
                errors.append(e.problem)
        raise ConfigError(key, "; ".join(errors))
    if origin is Literal:
        if v not in args or type(v) is not type(next(a for a in args if a == v)):
            raise ConfigError(key, f"{v!r} is not one of {', '.join(repr(a) for a in args)}")
        return v
    if origin in (tuple, list):
        if not isinstance(v, (list, tuple)):
            raise ConfigError(key, f"expected a list, got {v!r}")
        item = args[0] if args else Any
        return tuple(_convert(item, x, f"{key}[{i}]") for i, x in enumerate(v))
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, v, key)
    if tp is bool:
        if not isinstance(v, bool):
            raise ConfigError(key, f"expected true or false, got {v!r}")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(key, f"expected a whole number, got {v!r}")
        return v
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(key, f"expected a number, got {v!r}")
        return float(v)
    if tp is str:
        if not isinstance(v, str):
            raise ConfigError(key, f"expected text, got {v!r}")
        return v
    if tp is Any:
        return v
    raise TypeError(f"{key}: unsupported option type {tp!r}")
