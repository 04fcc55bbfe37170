"""Typed Python values to plain JSON data and back (sans-I/O), driven by type annotations:
how relay arguments, results and stats cross the media control channel without a schema of
their own. A relay method that gains a parameter needs no change here."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import functools
import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Converter = Callable[[Any, str], Any]  # (JSON value, where it came from) -> typed value


class ArgumentError(ValueError):
    """A value that does not fit its annotation, or an unknown or missing parameter."""


# ---------------------------------------------------------------------------- to JSON

_PLAIN = frozenset({str, int, float, bool, type(None)})


def to_wire(value: Any) -> Any:
    """`value` as plain JSON data: enums by value, tuples as lists, bytes as base64,
    dataclasses as objects of their fields."""
    kind = type(value)
    if kind in _PLAIN:  # exact types first: the common case, and a StrEnum is no plain str
        return value
    if kind is list or kind is tuple:
        return [to_wire(item) for item in value]
    if kind is dict:
        return {_wire_key(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, enum.Enum):
        return to_wire(value.value)
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode("ascii")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {_wire_key(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_wire(item) for item in value]
    raise TypeError(f"a {type(value).__name__} cannot be sent over the media control channel")


def _wire_key(key: Any) -> str:
    if isinstance(key, enum.Enum):
        key = key.value
    if not isinstance(key, str):
        raise TypeError(f"media control objects need string keys, not {key!r}")
    return key


# ---------------------------------------------------------------------------- from JSON


def from_wire(value: Any, hint: Any, where: str = "value") -> Any:
    """`value` (plain JSON data) as the type `hint` names: the inverse of `to_wire` for
    None, bool, int, float, str, bytes, enums, tuples, lists, dicts, unions and dataclasses.
    ArgumentError names `where` and what did not fit."""
    return converter(hint)(value, where)


def converter(hint: Any) -> Converter:
    """The conversion for `hint`, worked out once per type (typing introspection costs tens
    of microseconds; a request carries a handful of values)."""
    try:
        return _cached_converter(hint)
    except TypeError:  # an unhashable annotation: build it every time
        return _build(hint)


@functools.lru_cache(maxsize=512)
def _cached_converter(hint: Any) -> Converter:
    return _build(hint)


def _build(hint: Any) -> Converter:
    if hint is Any or hint is object:
        return _identity
    if hint is None or hint is type(None):
        return _null
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return _union(hint)
    if origin is tuple:
        return _tuple(typing.get_args(hint))
    if origin in (list, Sequence):
        (item,) = typing.get_args(hint) or (Any,)
        return _list(converter(item))
    if origin in (dict, Mapping):
        _, item = typing.get_args(hint) or (str, Any)
        return _dict(converter(item))
    if isinstance(hint, type):
        return _class(hint)
    raise ArgumentError(f"values of type {hint} cannot be decoded")


def _identity(value: Any, where: str) -> Any:
    return value


def _null(value: Any, where: str) -> None:
    if value is not None:
        raise ArgumentError(f"{where}: expected null, got {value!r}")


def _union(hint: Any) -> Converter:
    arms = typing.get_args(hint)
    nullable = type(None) in arms
    choices = [converter(arm) for arm in arms if arm is not type(None)]
    name = _type_name(hint)

    def convert(value: Any, where: str) -> Any:
        if value is None and nullable:
            return None
        for choice in choices:
            try:
                return choice(value, where)
            except ArgumentError:
                continue
        raise ArgumentError(f"{where}: {value!r} is not a {name}")

    return convert


def _tuple(args: tuple[Any, ...]) -> Converter:
    if len(args) == 2 and args[1] is Ellipsis:
        item = converter(args[0])

        def convert_all(value: Any, where: str) -> tuple[Any, ...]:
            return tuple(item(v, f"{where}[{i}]") for i, v in enumerate(_sequence(value, where)))

        return convert_all
    items = [converter(arg) for arg in args]

    def convert(value: Any, where: str) -> tuple[Any, ...]:
        values = _sequence(value, where)
        if len(values) != len(items):
            raise ArgumentError(f"{where}: expected {len(items)} items, got {len(values)}")
        return tuple(c(v, f"{where}[{i}]") for i, (c, v) in enumerate(zip(items, values)))  # noqa: B905 - lengths checked

    return convert


def _list(item: Converter) -> Converter:
    def convert(value: Any, where: str) -> list[Any]:
        return [item(v, f"{where}[{i}]") for i, v in enumerate(_sequence(value, where))]

    return convert


def _dict(item: Converter) -> Converter:
    def convert(value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ArgumentError(f"{where}: expected an object, got {value!r}")
        return {k: item(v, f"{where}.{k}") for k, v in value.items()}

    return convert


def _class(hint: type) -> Converter:
    if issubclass(hint, enum.Enum):
        return _enum(hint)
    if dataclasses.is_dataclass(hint):
        return _dataclass(hint)
    if hint is bytes:
        return _bytes
    if hint is float:
        return _float
    if hint is int:
        return _int
    if hint in (bool, str):
        return _exact(hint)
    raise ArgumentError(f"values of type {hint.__name__} cannot be decoded")


def _enum(hint: type[enum.Enum]) -> Converter:
    allowed = ", ".join(repr(member.value) for member in hint)

    def convert(value: Any, where: str) -> enum.Enum:
        try:
            return hint(value)
        except ValueError:
            raise ArgumentError(f"{where}: {value!r} is not one of {allowed}") from None

    return convert


def _dataclass(hint: type) -> Converter:
    hints = _hints(hint)
    fields = [(f.name, converter(hints.get(f.name, Any))) for f in dataclasses.fields(hint)]

    def convert(value: Any, where: str) -> Any:
        if not isinstance(value, dict):
            raise ArgumentError(f"{where}: expected an object for {hint.__name__}, got {value!r}")
        kwargs = {
            name: convert_field(value[name], f"{where}.{name}")
            for name, convert_field in fields
            if name in value
        }
        try:
            return hint(**kwargs)
        except TypeError as exc:  # a field without default is missing
            raise ArgumentError(f"{where}: {exc}") from None

    return convert


def _bytes(value: Any, where: str) -> bytes:
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error:
            pass
    raise ArgumentError(f"{where}: expected base64 bytes, got {value!r}")


def _float(value: Any, where: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if math.isfinite(value):
            return float(value)
    raise ArgumentError(f"{where}: expected a finite number, got {value!r}")


def _int(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ArgumentError(f"{where}: expected an integer, got {value!r}")


def _exact(hint: type) -> Converter:
    def convert(value: Any, where: str) -> Any:
        if isinstance(value, hint):
            return value
        raise ArgumentError(f"{where}: expected {hint.__name__}, got {value!r}")

    return convert


def _sequence(value: Any, where: str) -> list[Any] | tuple[Any, ...]:
    if not isinstance(value, list | tuple):
        raise ArgumentError(f"{where}: expected a list, got {value!r}")
    return value


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


@functools.lru_cache(maxsize=256)
def _hints(target: Any) -> dict[str, Any]:
    # Annotations are strings under `from __future__ import annotations`: resolve them once.
    return typing.get_type_hints(target)


# ---------------------------------------------------------------------------- calls


@dataclass(frozen=True, slots=True)
class _Parameters:
    converters: Mapping[str, Converter]
    required: frozenset[str]
    names: str  # for error messages


@functools.lru_cache(maxsize=64)
def _parameters(function: Callable[..., Any]) -> _Parameters:
    hints = _hints(function)
    plain = [
        p
        for p in inspect.signature(function).parameters.values()
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    return _Parameters(
        converters={p.name: converter(hints.get(p.name, Any)) for p in plain},
        required=frozenset(p.name for p in plain if p.default is inspect.Parameter.empty),
        names=", ".join(p.name for p in plain),
    )


def coerce_call(
    function: Callable[..., Any], kwargs: Mapping[str, Any], where: str
) -> dict[str, Any]:
    """`kwargs` from the wire converted to the types `function`'s annotations name.
    ArgumentError for an unknown or missing parameter, or a value of the wrong type."""
    parameters = _parameters(getattr(function, "__func__", function))
    converted: dict[str, Any] = {}
    for name, value in kwargs.items():
        convert = parameters.converters.get(name)
        if convert is None:
            raise ArgumentError(f"{where}: no parameter {name!r} (parameters: {parameters.names})")
        converted[name] = convert(value, f"{where}.{name}")
    if not parameters.required <= converted.keys():
        missing = [
            name for name in parameters.converters if name in parameters.required - converted.keys()
        ]
        raise ArgumentError(f"{where}: missing {', '.join(missing)}")
    return converted


def decode_result(function: Callable[..., Any], value: Any) -> Any:
    """A method's return value from the wire, typed by its return annotation."""
    target = getattr(function, "__func__", function)
    return from_wire(value, _hints(target).get("return", Any), f"{target.__name__} result")
