"""Typed, frozen settings from a TOML table plus environment variables, checked before start.

One small loader shared by every deployable (stdlib only, so the edge agent can use it too):
unknown keys are refused, every value is checked against the dataclass field's type, and a field
named ``<x>_file`` may hold the path of a file whose content becomes field ``<x>`` (secrets from
``/run/secrets`` or a systemd credential, never from the command line).

Examples:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Demo:
    ...     port: int = 1883
    ...     host: str = "localhost"
    >>> load_settings(Demo, {"port": 8883}, env={"CITY_DEMO_HOST": "broker"}, prefix="CITY_DEMO_")
    Demo(port=8883, host='broker')
    >>> load_settings(Demo, {"prot": 1})
    Traceback (most recent call last):
    ...
    edge.errors.ConfigError: configuration: unknown setting 'prot' (known: host, port)
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from edge.errors import ConfigError

T = TypeVar("T")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file, turning syntax errors into a :class:`ConfigError` with the line."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _coerce(name: str, value: object, hint: object) -> object:  # noqa: PLR0911, PLR0912  # one branch per type
    """Check ``value`` against the annotation ``hint``; strings from the environment are parsed."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(name, value, option)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{name}: invalid value")
    if origin is typing.Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(
                f"{name} must be one of {', '.join(map(repr, allowed))}, not {value!r}"
            )
        return value
    if origin in (tuple, list):
        (item,) = typing.get_args(hint)[:1]
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name} must be a list")
        return tuple(_coerce(f"{name}[{i}]", v, item) for i, v in enumerate(value))
    if hint is bool:
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, not {value!r}")
        return value
    if hint is int:
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError as exc:
                raise ConfigError(f"{name} must be an integer, not {value!r}") from exc
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, not {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError as exc:
                raise ConfigError(f"{name} must be a number, not {value!r}") from exc
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{name} must be a number, not {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, not {value!r}")
        return value
    raise ConfigError(f"{name}: unsupported setting type {hint!r}")


def load_section(
    cls: type[T],
    section: str,
    prefix: str,
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
) -> T:
    """Build ``cls`` from the ``[section]`` table of the TOML file ``path``, then the environment.

    A service's file holds its own section only: any other is refused, so a setting put under
    the wrong heading is an error instead of silently ignored.

    Args:
        cls: The settings dataclass.
        section: The TOML table's name, such as ``ingest``.
        prefix: Environment prefix, such as ``CITY_INGEST_``.
        path: The file; None: defaults and the environment only.
        env: Environment (the process's by default).

    Raises:
        ConfigError: Another section, or as :func:`load_settings`.
    """
    table: dict[str, Any] = {}
    if path is not None:
        document = read_toml(path)
        unknown = set(document) - {section}
        if unknown:
            raise ConfigError(f"{path}: unknown section(s) {sorted(unknown)}; expected [{section}]")
        table = document.get(section, {})
    return load_settings(
        cls,
        table,
        env=os.environ if env is None else env,
        prefix=prefix,
        source=str(path) if path is not None else "environment",
    )


def load_settings(
    cls: type[T],
    table: Mapping[str, object] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    prefix: str = "",
    source: str = "configuration",
) -> T:
    """Build ``cls`` (a dataclass) from a TOML table, then environment overrides.

    Args:
        cls: The settings dataclass; its field annotations are the schema.
        table: Values from a file.
        env: Environment; ``{prefix}{FIELD}`` overrides field ``field``.
        prefix: Environment prefix such as ``CITY_INGEST_``.
        source: Named in error messages (usually the file path).

    Raises:
        ConfigError: Unknown key, wrong type, unreadable secret file, or invalid value.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, object] = dict(table or {})
    if env is not None and prefix:
        for name in fields:
            for key in (name, f"{name}_file"):
                env_key = f"{prefix}{key.upper()}"
                if env_key in env:
                    values[key] = env[env_key]
    resolved: dict[str, object] = {}
    for key, raw in values.items():
        target, value = key, raw
        if key not in fields and key.endswith("_file") and key[: -len("_file")] in fields:
            target = key[: -len("_file")]
            value = _read_secret(f"{source}: {key}", raw)
        elif key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{source}: unknown setting {key!r} (known: {known})")
        resolved[target] = _coerce(f"{source}: {target}", value, hints[target])
    try:
        return cls(**resolved)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def _read_secret(name: str, path: object) -> str:
    if not isinstance(path, str):
        raise ConfigError(f"{name} must be a file path")
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}") from exc
