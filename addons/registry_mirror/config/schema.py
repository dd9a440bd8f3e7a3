"""A mirror.yaml key is declared once, as a field of its section's dataclass made by `key()`; this module reads
those declarations back and checks a section's values against them: unknown keys, ${VAR}, types, conversion,
defaults, bounds and choices. Rules that span keys are config/load.py's."""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from registry_mirror.config.kinds import PATH, ConfigError, KeyKind, Secret

_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Key:
    kind: KeyKind
    doc: str  # one line, for the table in docs/configuration.md
    default: Any = MISSING  # as an operator would write it; MISSING: the key must be set
    bounds: tuple[float, float] | None = None  # inclusive, but see `above`
    above: bool = False  # the low bound itself is out of range
    choices: tuple[str, ...] = ()
    check: Callable[[Any], str | None] | None = None  # what is wrong with a converted value, said after it
    required: str = "no"  # the table: when the key must be set
    shown: str = ""  # the table: the default, where it is worked out when the file is loaded
    name: str = ""  # its name in the file, where that is not the attribute's
    routes_only: bool = False  # a key of `routes` entries only

    def range(self) -> str:
        """The bounds as a reader would say them; empty for a key without bounds."""
        if self.bounds is None:
            return ""
        low, high = self.bounds
        return f"more than {low}, at most {high}" if self.above else f"{low} to {high}"

    def complaint(self, value: Any) -> str | None:
        """What is wrong with a converted value, or None."""
        if self.bounds:
            low, high = self.bounds
            if not (low < value <= high if self.above else low <= value <= high):  # NaN is out of range too
                return f"is out of range; expected {self.range()} {self.kind.unit}".rstrip()
        if self.choices and value not in self.choices:
            return f"is not one of {', '.join(self.choices)}"
        return self.check(value) if self.check else None


def key(kind: KeyKind, doc: str, default: Any = MISSING, **details: Any) -> Any:
    """A dataclass field declaring a key; the attribute's default is the declared one, converted."""
    value = default if default is MISSING or default is None else kind.convert("", default)
    return field(default=value, repr=not kind.secret, metadata={"key": Key(kind, doc, default, **details)})


def declared(cls: type, routes: bool = False) -> dict[str, tuple[str, Key]]:
    """The keys `cls` declares, in order, by their name in the file: (attribute, Key); with `routes`, also the
    keys only `routes` entries have."""
    keys = {}
    for f in fields(cls):
        declaration = f.metadata.get("key")
        if declaration and (routes or not declaration.routes_only):
            keys[declaration.name or f.name] = (f.name, declaration)
    return keys


def _kinds(keys: dict[str, tuple[str, Key]]) -> dict[str, KeyKind]:
    """Every name the file may use: the keys, and after a secret its `<key>_file`."""
    kinds = {}
    for name, (_, declaration) in keys.items():
        kinds[name] = declaration.kind
        if declaration.kind.secret:
            kinds[f"{name}_file"] = PATH
    return kinds


def check_types(label: str, values: dict, keys: dict[str, tuple[str, Key]], environ: dict[str, str]) -> dict:
    """`values` with ${VAR} expanded, once every key is known and of its kind's YAML type."""
    kinds, checked = _kinds(keys), {}
    for key_name, value in values.items():
        name = f"{label}.{key_name}"
        if key_name not in kinds:
            raise ConfigError(f"unknown key {name}: valid keys are {', '.join(kinds)}")
        kind = kinds[key_name]
        if isinstance(value, str):
            value = expand(name, value, environ)
        elif isinstance(value, list):
            value = [expand(name, v, environ) if isinstance(v, str) else v for v in value]
        if isinstance(value, bool) and bool not in kind.types:
            raise ConfigError(f"{name}: expected {kind.expected}, got a boolean")
        if not isinstance(value, kind.types):
            raise ConfigError(f"{name}: expected {kind.expected}" if kind.secret else
                              f"{name}: expected {kind.expected}, got {type(value).__name__} {value!r}")
        checked[key_name] = value
    return checked


def expand(name: str, value: str, environ: dict[str, str]) -> str:
    """Replace ${VAR} with the environment's value; an unset variable is an error naming the key."""
    def replace(match: re.Match) -> str:
        var = match.group(1)
        if var not in environ:
            raise ConfigError(f"{name}: environment variable {var} is not set; export it or put the value in the file")
        return environ[var]
    return _VAR_RE.sub(replace, value)


def convert(label: str, values: dict, keys: dict[str, tuple[str, Key]], resolve: Callable[[str], str]) -> dict:
    """The attributes of checked `values`: each key's value, or its default, converted and within its bounds
    and choices. `resolve` makes a path relative to the configuration file."""
    attributes = {}
    for key_name, (attribute, declaration) in keys.items():
        name, kind = f"{label}.{key_name}", declaration.kind
        if kind.secret:
            attributes[attribute] = _secret(values, key_name, resolve, label)
            continue
        given = values.get(key_name, declaration.default)
        if given is MISSING:
            raise ConfigError(f"{name}: missing; expected {kind.expected}")
        value = None if given is None else kind.convert(name, resolve(given) if kind.path else given)
        if value is not None and (complaint := declaration.complaint(value)):
            raise ConfigError(f"{name}: {given!r} {complaint}")
        attributes[attribute] = value
    return attributes


def _secret(v: dict, key: str, resolve: Callable[[str], str], section: str) -> Secret | None:
    """A secret given inline or in `<key>_file` (its first line), never both."""
    inline, path = v.get(key), resolve(v.get(f"{key}_file") or "")
    if inline is not None and path:
        raise ConfigError(f"{section}.{key}: set {key} or {key}_file, not both")
    if path:
        try:
            inline = next(iter(Path(path).read_text().splitlines()), "")
        except OSError as e:
            raise ConfigError(f"{section}.{key}_file: cannot read {path}: {e.strerror}; expected a readable file "
                              f"holding only the secret") from e
        if not inline:
            raise ConfigError(f"{section}.{key}_file: {path} is empty; expected the secret on its first line")
    if inline is not None and not inline:
        raise ConfigError(f"{section}.{key}: empty; expected the secret, or remove the key")
    return Secret(inline) if inline is not None else None
