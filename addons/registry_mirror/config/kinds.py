"""What a mirror.yaml value may be: the value types the configuration holds, and the kinds of key, each with its
YAML types, its name in messages and the README, and how it becomes the attribute's value."""
from __future__ import annotations

import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from registry_mirror.oci.registry_requests import valid_name
from registry_mirror.units import parse_duration, parse_size

_HOST_RE = re.compile(r"[A-Za-z0-9.-]+(:\d+)?")


class ConfigError(ValueError):
    """A bad configuration: the message names the key and what would be right."""


class Secret(str):
    """A credential: a str whose repr never shows it, so it cannot leak through logs or tracebacks."""

    def __repr__(self) -> str:
        return "Secret('<redacted>')"


def any_address(host: str) -> bool:
    """A listen host that means every address: clients on this machine reach it at 127.0.0.1."""
    return host in ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        """host:port as URLs and Go's listeners take it: an IPv6 host in brackets."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def local_url(self, path: str) -> str:
        """`http://` URL of `path` on this address, as a client on this machine reaches it."""
        host = "127.0.0.1" if any_address(self.host) else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}{path}"


def parse_address(name: str, value: str, allow_any_port: bool = False) -> Address:
    """host:port; with `allow_any_port`, port 0 means any free port."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not (0 if allow_any_port else 1) <= int(port) < 65536:
        raise ConfigError(f"{name}: {value!r} is not host:port, e.g. 127.0.0.1:8081")
    return Address(host, int(port))


@dataclass(frozen=True)
class KeyKind:
    """A kind of key. `convert(the key's full name, value)` gives the attribute's value or raises ConfigError."""
    expected: str  # what is right, as messages and the README say it
    types: tuple[type, ...]  # the YAML types it takes; a boolean only where bool is one
    convert: Callable[[str, Any], Any] = lambda name, value: value
    unit: str = ""  # of its bounds, in messages
    path: bool = False  # a file or folder name: relative to the configuration file
    secret: bool = False  # given inline or in `<key>_file`; never shown in a message


def _units(parse: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    def convert(name: str, value: object) -> Any:
        try:
            return parse(name, value)
        except ValueError as e:  # units' parsers already name the key and the accepted forms
            raise ConfigError(str(e)) from e
    return convert


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    return url.replace(parts.password, "<redacted>") if parts.password else url


_URL = "scheme://host[:port] with scheme http or https"
_URL_EXPECTED = f"{_URL}, e.g. https://artifactory.example.com"


def _origin(name: str, url: str, what_else: str) -> str:
    """scheme://host[:port] of http or https, nothing after it; else an error naming `what_else`: where the rest
    of what was written goes."""
    parts = urlsplit(url)
    try:
        _ = parts.port  # raises on a port out of range or not a number
    except ValueError as e:
        raise ConfigError(f"{name}: {_safe_url(url)!r} has a bad port: {e}") from e
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(f"{name}: {_safe_url(url)!r} is not {_URL} ({what_else})")
    return url.rstrip("/")


def _bucket(name: str, value: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", value) or ".." in value:
        raise ConfigError(f"{name}: {value!r} is not an S3 bucket name: 3 to 63 lower-case letters, digits, dots "
                          "and hyphens, starting and ending with a letter or digit (a folder goes in mirror.s3.prefix)")
    return value


def _region(name: str, value: str) -> str:
    if not re.fullmatch(r"[a-z0-9-]+", value):
        raise ConfigError(f"{name}: {value!r} is not a region such as us-east-1")
    return value


def _key_prefix(name: str, value: str) -> str:
    """Slashes around it are dropped; empty, `.` and `..` parts and whitespace are refused (stores differ on them)."""
    prefix = value.strip("/")
    if prefix and (re.search(r"\s", prefix) or any(part in ("", ".", "..") for part in prefix.split("/"))):
        raise ConfigError(f"{name}: {value!r} is not a folder such as dc1 or mirrors/dc1 (no empty, . or .. parts, "
                          "no whitespace)")
    return prefix


def _endpoint(name: str, url: str) -> str:
    """An object store's origin."""
    return _origin(name, url, "the bucket goes in mirror.s3.bucket, a folder in mirror.s3.prefix, credentials in "
                              "their own keys")


def _url(name: str, url: str) -> str:
    label = name.rpartition(".")[0]
    if not url:
        raise ConfigError(f"{name}: missing; expected {_URL_EXPECTED}")
    return _origin(name, url, f"put the repository path in {label}.repository / {label}.path_prefix, credentials "
                              f"in {label}.username and {label}.password")


def _path_prefix(name: str, prefix: str) -> str:
    if prefix and not prefix.startswith("/"):
        raise ConfigError(f"{name}: {prefix!r} must start with / (or be empty for the root)")
    if re.search(r"[?#%\s]|\.\.", prefix.replace("{repository}", "")):
        raise ConfigError(f"{name}: {prefix!r} may not contain ?, #, %, whitespace or ..")
    return prefix


def _ca_file(name: str, path: str) -> str:
    if path:
        try:
            ssl.create_default_context(cafile=path)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"{name}: cannot load {path}: {e}; expected a readable PEM CA bundle") from e
    return path


def _image_prefix(name: str, value: str) -> str:
    prefix = value.strip("/")
    if prefix and not valid_name(prefix):
        raise ConfigError(f"{name}: {value!r} is not the start of an image name; expected lowercase path "
                          f"components such as team-a/ (letters, digits, . _ -)")
    return prefix


def _hosts(what: str) -> Callable[[str, list], tuple[str, ...]]:
    """Host names in any case, as lowercase; `what` says what each must be."""
    def convert(name: str, values: list) -> tuple[str, ...]:
        for value in values:
            if not isinstance(value, str) or not _HOST_RE.fullmatch(value):
                raise ConfigError(f"{name}: {value!r} is not {what}")
        return tuple(value.lower() for value in values)
    return convert


def _image_prefixes(name: str, values: list) -> tuple[str, ...]:
    for value in values:
        if not isinstance(value, str) or not value.strip("/"):
            raise ConfigError(f"{name}: {value!r} is not the start of an image name; expected e.g. public/")
    return tuple(_image_prefix(name, value) for value in values)


_PLATFORM_RE = re.compile(r"[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?")


def _platforms(name: str, values: list) -> tuple[str, ...]:
    for value in values:
        if not isinstance(value, str) or not _PLATFORM_RE.fullmatch(value):
            raise ConfigError(f"{name}: {value!r} is not a platform; expected os/architecture[/variant] as in an "
                              f"image index, e.g. linux/amd64 or linux/arm64/v8")
    return tuple(values)


def _any_port(name: str, value: str) -> Address:
    bracketed = value.startswith("[") and value.endswith("]")
    if bracketed or (value.count(":") != 1 and not value.startswith("[")):  # a host alone: a name, IPv4 or IPv6
        value = f"[{value.strip('[]')}]:0"
    return parse_address(name, value, allow_any_port=True)


STRING = KeyKind("a string", (str,))
BOOL = KeyKind("true or false", (bool,))
WHOLE = KeyKind("a whole number", (int,))
BYTES = KeyKind("a whole number of bytes", (int,), unit="bytes")
SECONDS = KeyKind("a number of seconds", (int, float), lambda name, value: float(value), unit="seconds")
DURATION = KeyKind("a duration: seconds, or 30s, 15m, 12h, 7d", (int, float, str), _units(parse_duration))
SIZE = KeyKind("a size: bytes, or 800MiB, 500GiB, 2TB", (int, str), _units(parse_size))
ADDRESS = KeyKind("host:port", (str,), parse_address)
ANY_PORT = KeyKind("host or host:port (port 0: any free port)", (str,), _any_port)
PATH = KeyKind("a path", (str,), path=True)
CA_FILE = KeyKind("a path to a PEM CA bundle", (str,), _ca_file, path=True)
SECRET = KeyKind("a string", (str,), secret=True)
URL = KeyKind(_URL_EXPECTED, (str,), _url)
BUCKET = KeyKind("an S3 bucket name: 3 to 63 lower-case letters, digits, dots and hyphens", (str,), _bucket)
REGION = KeyKind("a region, e.g. us-east-1", (str,), _region)
KEY_PREFIX = KeyKind("a folder inside the bucket, e.g. dc1 or mirrors/dc1", (str,), _key_prefix)
ENDPOINT = KeyKind(f"{_URL}, e.g. https://s3.dc1.example.com", (str,), _endpoint)
PATH_PREFIX = KeyKind('a path starting with /, or "" for the root', (str,), _path_prefix)
IMAGE_PREFIX = KeyKind("the start of an image name, e.g. team-a/", (str,), _image_prefix)
HOSTS = KeyKind("a list of host or host:port", (list,), _hosts("a host or host:port"))
REGISTRY_HOSTS = KeyKind("a list of registry host names", (list,), _hosts(
    "a registry host name such as docker.io; ns values are matched against containerd's ?ns= parameter, "
    "never dialled"))
IMAGE_PREFIXES = KeyKind("a list of image-name starts, e.g. [public/, tools/base]", (list,), _image_prefixes)
PLATFORMS = KeyKind("a list of os/architecture[/variant], e.g. [linux/amd64]", (list,), _platforms)
