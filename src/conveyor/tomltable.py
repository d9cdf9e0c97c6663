"""A TOML table being validated, and the "did you mean" hint every config error carries.

deploy.toml (:mod:`conveyor.config`) and ``[tool.conveyor.scan]``
(:mod:`conveyor.scanners.policy`) are both read through :class:`TomlTable`, so their errors
look alike: ``FILE [key.path]: what is wrong (allowed: …) (did you mean …?)``.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from conveyor.errors import ConfigError

# The default of a key that must be present.
MISSING: Any = object()


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` when a close match exists, else an empty string.

    An abbreviation wins over spelling: 'prod' means 'production', not 'pr'.
    """
    options = list(choices)
    longer = [c for c in options if c.startswith(word) and c != word]
    if word and len(longer) == 1:
        return f" (did you mean '{longer[0]}'?)"
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class TomlTable:
    """A TOML table being validated: remembers its key path and which keys were read.

    Every config conveyor reads (deploy.toml, ``[tool.conveyor.scan]``) goes through this, so
    errors look alike: ``FILE [key.path]: what is wrong (allowed: …) (did you mean …?)``.
    """

    def __init__(self, data: Any, path: str, source: str) -> None:
        if not isinstance(data, Mapping):
            where = f" [{path}]" if path else ""
            raise ConfigError(f"{source}{where}: expected a table, got {type(data).__name__}")
        self.data: Mapping[str, Any] = data
        self.path = path
        self.source = source
        self._read: set[str] = set()

    def error(self, key: str | None, message: str) -> ConfigError:
        """The error to raise for ``key`` (the table itself when None), with its key path."""
        where = f"{self.path}.{key}" if key and self.path else (key or self.path)
        text = f"{self.source} [{where}]: {message}"
        # A quoted key or an echoed value may hold a newline or a terminal escape: one line.
        return ConfigError("".join(c if c.isprintable() else repr(c)[1:-1] for c in text))

    def value(self, key: str, default: Any) -> Any:
        """The raw value (marked as read), ``default`` when absent."""
        self._read.add(key)
        if key in self.data:
            return self.data[key]
        if default is MISSING:
            raise self.error(key, "required key is missing")
        return default

    def string(self, key: str, default: Any = MISSING, choices: Iterable[str] | None = None) -> Any:
        value = self.value(key, default)
        if value is default and default is not MISSING:
            return value
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {type(value).__name__}")
        if choices is not None:
            allowed = list(choices)
            if value not in allowed:
                raise self.error(
                    key,
                    f"'{value}' is not allowed (allowed: {', '.join(allowed)})"
                    + did_you_mean(value, allowed),
                )
        return value

    def integer(self, key: str, default: Any = MISSING, minimum: int | None = None) -> Any:
        value = self.value(key, default)
        if value is default and default is not MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {type(value).__name__}")
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be at least {minimum}, got {value}")
        return value

    def number(self, key: str, default: Any = MISSING, minimum: float | None = 0.0) -> Any:
        value = self.value(key, default)
        if value is default and default is not MISSING:
            return float(value) if value is not None else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"expected a number, got {type(value).__name__}")
        if isinstance(value, int) and abs(value) > sys.float_info.max:  # TOML ints are unbounded
            raise self.error(key, "is too large a number")
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be at least {minimum}, got {value}")
        return float(value)

    def boolean(self, key: str, default: Any = MISSING) -> Any:
        value = self.value(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {value!r}")
        return value

    def positive(self, key: str, default: float) -> float:
        value = self.value(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self.error(key, f"expected a positive number, got {value!r}")
        if isinstance(value, int) and value > sys.float_info.max:
            raise self.error(key, "is too large a number")
        return float(value)

    def string_list(self, key: str, default: list[str]) -> list[str]:
        value = self.value(key, default)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, f"expected a list of strings, got {value!r}")
        return list(value)

    def table(self, key: str, *, required: bool = False) -> TomlTable:
        value = self.value(key, MISSING if required else {})
        if not isinstance(value, Mapping):
            raise self.error(key, f"expected a table, got {type(value).__name__}")
        return TomlTable(value, f"{self.path}.{key}" if self.path else key, self.source)

    def tables(self, key: str) -> dict[str, TomlTable]:
        outer = self.table(key)
        result: dict[str, TomlTable] = {}
        for name in outer.data:
            result[name] = outer.table(name)
        outer.finish()
        return result

    def strings(self, key: str, default: Any = MISSING) -> dict[str, str]:
        table = self.table(key) if key in self.data or default is MISSING else None
        if table is None:
            return dict(default)
        out: dict[str, str] = {}
        for name, value in table.data.items():
            if not isinstance(value, str):
                raise table.error(name, f"expected a string, got {type(value).__name__}")
            out[name] = value
        return out

    def finish(self) -> None:
        unknown = [key for key in self.data if key not in self._read]
        if unknown:
            key = unknown[0]
            allowed = sorted(self._read)
            raise self.error(
                key,
                f"unknown key (allowed: {', '.join(allowed)})" + did_you_mean(key, allowed),
            )
