"""Load mirror.yaml into frozen dataclasses; every error names the key and what would be right.

The key names are a contract with operators' automation: add keys, never rename them.
"""
from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from .requests import valid_name
from .units import parse_duration, parse_size

DEFAULT_PATH = "mirror.yaml"
ENV_PATH = "MIRROR_CONFIG"
ARTIFACTORY_PREFIX = "/artifactory/api/docker/{repository}"
_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


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
        return f"{self.host}:{self.port}"

    def local_url(self, path: str) -> str:
        """`http://` URL of `path` on this address, as a client on this machine reaches it."""
        host = "127.0.0.1" if any_address(self.host) else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}{path}"


@dataclass(frozen=True)
class UpstreamConfig:
    url: str
    repository: str
    path_prefix: str
    username: str | None = None
    password: Secret | None = field(default=None, repr=False)
    token: Secret | None = field(default=None, repr=False)
    anonymous: bool = False
    ca_file: str | None = None
    tls_verify: bool = True
    allowed_realm_hosts: tuple[str, ...] = ()
    connect_timeout: float = 5.0
    request_timeout: float = 20.0
    blob_stall_timeout: float = 60.0
    failures_before_down: int = 3
    down_period: float = 30.0
    blob_resumes: int = 3
    retries: int = 3
    library: str = "keep"  # add: `nginx` is asked for as `library/nginx`; strip: the reverse; keep
    match_prefix: str = ""  # routes only: the image names this route serves ("" for the default upstream)
    match_ns: tuple[str, ...] = ()  # routes only: containerd `ns` values this route serves
    strip_prefix: bool = False  # routes only: `team-a/app` is asked for as `app`
    label: str = "upstream"  # where it is configured, for messages: upstream or routes[N]

    @property
    def origin(self) -> str:
        return self.url.rstrip("/")

    def upstream_name(self, name: str) -> str:
        """The repository name the upstream knows for a name the registry asked for."""
        if self.strip_prefix and self.match_prefix and name.startswith(self.match_prefix + "/"):
            name = name[len(self.match_prefix) + 1:]
        if self.library == "add" and "/" not in name:
            return f"library/{name}"
        if self.library == "strip" and name.startswith("library/"):
            return name[len("library/"):]
        return name

    @property
    def prefix(self) -> str:
        """The path under which the upstream serves /v2/ for the configured repository."""
        return self.path_prefix.format(repository=self.repository).rstrip("/")


@dataclass(frozen=True)
class MirrorConfig:
    listen: Address = Address("0.0.0.0", 5000)
    storage: str = "./data/registry"
    tls: bool = True
    tls_cert: str = "certs/mirror.crt"
    tls_key: str = "certs/mirror.key"
    max_age: float = 7 * 86400.0  # seconds an image not pulled is kept
    max_bytes: int | None = None  # above this, the least recently pulled images go first


@dataclass(frozen=True)
class RewriterConfig:
    listen: Address = Address("127.0.0.1", 8081)
    web_listen: Address = Address("127.0.0.1", 8082)
    web_password: Secret | None = field(default=None, repr=False)
    blob_redirect: bool = True
    log_format: str = "text"  # text, or json: one JSON object per line


@dataclass(frozen=True)
class CacheConfig:
    tag_ttl: float = 30.0  # seconds a tag's digest is trusted without asking the upstream
    blob_head_ttl: float = 3600.0  # seconds a blob's HEAD (size, type) is answered from memory; 0: never
    manifest_bytes: int = 64 * 1024 * 1024  # LRU bound of manifests by digest, in bytes
    spool_dir: str | None = None  # blob spools; default: a new folder under the system's temp dir
    spool_max_bytes: int = 8 * 1024 ** 3  # finished spools kept for stragglers, at most this many bytes
    spool_keep: float = 10.0  # seconds a spool is kept after its transfer ended
    stale_budget: float = 2.0  # seconds a tag refresh may take before the last known digest is answered
    max_stale: float = 86400.0  # the oldest last known digest that is still answered
    tag_state_file: str | None = None  # last known tags, across restarts; default: next to mirror.storage


@dataclass(frozen=True)
class ScaleConfig:
    """Replicas in one data center sharing storage: redis holds one lock per digest in flight, so a layer
    crosses the WAN once whichever replica is asked for it."""
    redis: Address | None = None  # None: a single replica, nothing shared
    redis_db: int = 0
    redis_password: Secret | None = field(default=None, repr=False)
    listen: Address = Address("0.0.0.0", 0)  # the blob endpoint, for the registry and the other replicas
    advertise: str = ""  # the host other replicas reach this one's blob endpoint at
    lock_seconds: float = 60.0  # a leader's claim on a digest, renewed while it fetches

    @property
    def enabled(self) -> bool:
        return self.redis is not None


@dataclass(frozen=True)
class Config:
    upstream: UpstreamConfig  # the default route: every name no entry of `routes` serves
    mirror: MirrorConfig
    rewriter: RewriterConfig
    cache: CacheConfig = CacheConfig()
    source: str = "<memory>"
    routes: tuple[UpstreamConfig, ...] = ()
    scale: ScaleConfig = ScaleConfig()


# key -> (type, default); None as a default means optional. A nested dict is a section.
_UPSTREAM_KEYS = {
    "url": str, "repository": str, "path_prefix": str, "username": str, "password": str, "password_file": str,
    "token": str, "token_file": str, "anonymous": bool, "ca_file": str, "tls_verify": bool,
    "allowed_realm_hosts": list, "connect_timeout": (int, float), "request_timeout": (int, float),
    "blob_stall_timeout": (int, float), "failures_before_down": int, "down_period": (int, float),
    "blob_resumes": int, "retries": int, "library": str,
}
_ROUTE_KEYS = {**_UPSTREAM_KEYS, "prefix": str, "ns": list, "strip_prefix": bool}
# A route inherits `upstream`'s keys, except: its own credential replaces all of upstream's, and with its own
# url it takes none of upstream's host, TLS or credential keys, so a credential only goes to its own host, nor
# its repository or library handling (another host's repository is named, not guessed)
_CREDENTIAL_KEYS = ("username", "password", "password_file", "token", "token_file", "anonymous")
_NOT_INHERITED_WITH_URL = ("url", *_CREDENTIAL_KEYS, "ca_file", "tls_verify", "allowed_realm_hosts",
                           "repository", "library")
_MIRROR_KEYS = {"listen": str, "storage": str, "tls": bool, "tls_cert": str, "tls_key": str,
                "max_age": (int, float, str), "max_bytes": (int, str)}
_REWRITER_KEYS = {"listen": str, "web_listen": str, "web_password": str, "web_password_file": str,
                  "blob_redirect": bool, "log_format": str}
_CACHE_KEYS = {"tag_ttl": (int, float), "blob_head_ttl": (int, float), "manifest_bytes": int, "spool_dir": str,
               "spool_max_bytes": int, "spool_keep": (int, float), "stale_budget": (int, float),
               "max_stale": (int, float), "tag_state_file": str}
_SCALE_KEYS = {"redis": str, "redis_db": int, "redis_password": str, "redis_password_file": str, "listen": str,
               "advertise": str, "lock_seconds": (int, float)}
_SECTIONS = {"upstream": _UPSTREAM_KEYS, "mirror": _MIRROR_KEYS, "rewriter": _REWRITER_KEYS, "cache": _CACHE_KEYS,
             "scale": _SCALE_KEYS}


def config_path(option_value: str = "") -> Path:
    """The file to read: the option if set, else $MIRROR_CONFIG, else ./mirror.yaml."""
    return Path(option_value or os.environ.get(ENV_PATH) or DEFAULT_PATH)


def load(path: str | Path, environ: dict[str, str] | None = None) -> Config:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read the configuration file {path}: {e.strerror}; set {ENV_PATH} or "
                          f"--set mirror_config=<path> to a readable mirror.yaml") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    return parse(data, base_dir=path.parent, environ=os.environ if environ is None else environ, source=str(path))


def parse(data: object, base_dir: Path = Path("."), environ: dict[str, str] | None = None,
          source: str = "<memory>") -> Config:
    environ = {} if environ is None else environ
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with the sections "
                          f"{', '.join(_SECTIONS)}, not {type(data).__name__}")
    sections, routes = {}, []
    for key, value in data.items():
        if key == "routes":
            routes = _check_routes(value, environ)
            continue
        if key not in _SECTIONS:
            raise ConfigError(f"unknown key {key!r}: the sections are {', '.join(_SECTIONS)}, routes")
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a mapping of keys, not {type(value).__name__}")
        sections[key] = _check_section(key, value, _SECTIONS[key], environ)
    if "upstream" not in sections:
        raise ConfigError("upstream: missing; it needs at least url and repository")
    resolve = lambda p: str((base_dir / p).resolve()) if p else p  # noqa: E731 - paths are relative to the file
    default = _upstream(sections["upstream"], resolve)
    rewriter = _rewriter(sections.get("rewriter", {}), resolve)
    return Config(
        scale=_scale(sections.get("scale", {}), resolve),
        upstream=default,
        routes=_routes(routes, sections["upstream"], resolve),
        mirror=_mirror(sections.get("mirror", {}), resolve),
        rewriter=rewriter,
        cache=_cache(sections.get("cache", {}), resolve, sections.get("mirror", {}).get("storage", "./data/registry")),
        source=source,
    )


def _check_routes(value: object, environ: dict[str, str]) -> list[dict]:
    if not isinstance(value, list):
        raise ConfigError(f"routes: must be a list of mappings (prefix, repository, ...), not {type(value).__name__}")
    checked = []
    for i, route in enumerate(value):
        if not isinstance(route, dict):
            raise ConfigError(f"routes[{i}]: must be a mapping with prefix (or ns) and repository, "
                              f"not {type(route).__name__}")
        checked.append(_check_section(f"routes[{i}]", route, _ROUTE_KEYS, environ))
    return checked


def _routes(routes: list[dict], default: dict, resolve) -> tuple[UpstreamConfig, ...]:
    """Each route: its own keys, plus `upstream`'s where it sets no url (same host, same credentials)."""
    built, seen = [], set()
    for i, route in enumerate(routes):
        label = f"routes[{i}]"
        prefix = route.get("prefix", "").strip("/")
        ns = tuple(v.lower() if isinstance(v, str) else v for v in route.get("ns", []))  # host names: any case
        if prefix and not valid_name(prefix):
            raise ConfigError(f"{label}.prefix: {route['prefix']!r} is not the start of an image name; expected "
                              f"lowercase path components such as team-a/ (letters, digits, . _ -)")
        for value in ns:
            if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9.-]+(:\d+)?", value):
                raise ConfigError(f"{label}.ns: {value!r} is not a registry host name such as docker.io; ns values "
                                  f"are matched against containerd's ?ns= parameter, never dialled")
        if not prefix and not ns:
            raise ConfigError(f"{label}: set prefix (image names it serves, e.g. team-a/) and/or ns (e.g. "
                              f"[docker.io]); a route without either would take every name from upstream")
        if (prefix, ns) in seen:
            raise ConfigError(f"{label}: another route already serves prefix {prefix!r} with ns {list(ns)}")
        seen.add((prefix, ns))
        if route.get("strip_prefix") and not prefix:
            raise ConfigError(f"{label}.strip_prefix: needs a prefix to strip")
        own_credential = any(k in route for k in _CREDENTIAL_KEYS)
        if "url" in route and not own_credential:
            raise ConfigError(f"{label}: sets its own url but no credential; set username + password (or "
                              f"password_file), token, or anonymous: true. A route with its own url never "
                              f"inherits upstream's credentials, so they are never sent to another host")
        not_inherited = _NOT_INHERITED_WITH_URL if "url" in route else _CREDENTIAL_KEYS if own_credential else ()
        merged = {**{k: v for k, v in default.items() if k not in not_inherited}, **route}
        merged = {k: v for k, v in merged.items() if k not in ("prefix", "ns", "strip_prefix")}
        cfg = _upstream(merged, resolve, label)
        built.append(replace(cfg, match_prefix=prefix, match_ns=ns, strip_prefix=route.get("strip_prefix", False)))
    return tuple(built)


def _check_section(section: str, values: dict, schema: dict, environ: dict[str, str]) -> dict:
    checked = {}
    for key, value in values.items():
        name = f"{section}.{key}"
        if key not in schema:
            raise ConfigError(f"unknown key {name}: valid keys are {', '.join(schema)}")
        expected = schema[key]
        if isinstance(value, str):
            value = expand(name, value, environ)
        elif isinstance(value, list):
            value = [expand(name, v, environ) if isinstance(v, str) else v for v in value]
        if isinstance(value, bool) and expected is not bool:
            raise ConfigError(f"{name}: expected {_type_name(expected)}, got a boolean")
        if not isinstance(value, expected):
            raise ConfigError(f"{name}: expected {_type_name(expected)}, got {type(value).__name__} {value!r}"
                              if not _is_secret_key(key) else f"{name}: expected {_type_name(expected)}")
        checked[key] = value
    return checked


def expand(name: str, value: str, environ: dict[str, str]) -> str:
    """Replace ${VAR} with the environment's value; an unset variable is an error naming the key."""
    def replace(match: re.Match) -> str:
        var = match.group(1)
        if var not in environ:
            raise ConfigError(f"{name}: environment variable {var} is not set; export it or put the value in the file")
        return environ[var]
    return _VAR_RE.sub(replace, value)


def _upstream(v: dict, resolve, label: str = "upstream") -> UpstreamConfig:
    url = v.get("url")
    if not url:
        raise ConfigError(f"{label}.url: missing; expected scheme://host[:port], e.g. https://artifactory.example.com")
    parts = urlsplit(url)
    try:
        _ = parts.port  # raises on a port out of range or not a number
    except ValueError as e:
        raise ConfigError(f"{label}.url: {url!r} has a bad port: {e}") from e
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(f"{label}.url: {_safe_url(url)!r} is not scheme://host[:port] with scheme http or https "
                          f"(put the repository path in {label}.repository / {label}.path_prefix, credentials in "
                          f"{label}.username and {label}.password)")
    path_prefix = v.get("path_prefix", ARTIFACTORY_PREFIX)
    if path_prefix and not path_prefix.startswith("/"):
        raise ConfigError(f"{label}.path_prefix: {path_prefix!r} must start with / (or be empty for the root)")
    repository = v.get("repository", "")
    if "{repository}" in path_prefix and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", repository or ""):
        raise ConfigError(f"{label}.repository: {'missing' if not repository else repr(repository)}; expected the "
                          f"Artifactory Docker repository key, e.g. docker-local (letters, digits, . _ -)")
    if re.search(r"[?#%\s]|\.\.", path_prefix.replace("{repository}", "")):
        raise ConfigError(f"{label}.path_prefix: {path_prefix!r} may not contain ?, #, %, whitespace or ..")
    password = _secret(v, "password", resolve, label)
    token = _secret(v, "token", resolve, label)
    username = v.get("username")
    anonymous = v.get("anonymous", False)
    if username and token:
        raise ConfigError(f"{label}.token: set either username + password (Basic or the token flow) or token "
                          "(a static Bearer access token), not both")
    if username and password is None:
        raise ConfigError(f"{label}.password: missing for {label}.username; set password or password_file "
                          "(an Artifactory password or identity token)")
    if password is not None and not username:
        raise ConfigError(f"{label}.username: missing; a password needs the user it belongs to")
    if not (username or token or anonymous):
        raise ConfigError(f"{label}: no credential; set username + password (or password_file), or token "
                          "(or token_file), or anonymous: true for an upstream that needs none")
    ca_file = resolve(v.get("ca_file"))
    if ca_file:
        try:
            ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"{label}.ca_file: cannot load {ca_file}: {e}; expected a readable PEM CA bundle") from e
    realms = v.get("allowed_realm_hosts", [])
    for host in realms:
        if not isinstance(host, str) or not re.fullmatch(r"[A-Za-z0-9.-]+(:\d+)?", host):
            raise ConfigError(f"{label}.allowed_realm_hosts: {host!r} is not a host or host:port")
    timeouts = {k: float(v[k]) for k in ("connect_timeout", "request_timeout", "blob_stall_timeout", "down_period")
                if k in v}
    for key, seconds in timeouts.items():
        if not 0 < seconds <= 3600:
            raise ConfigError(f"{label}.{key}: {seconds} is out of range; expected seconds in (0, 3600]")
    ints = {k: v[k] for k in ("failures_before_down", "blob_resumes", "retries") if k in v}
    for key, (low, high) in {"failures_before_down": (1, 1000), "blob_resumes": (0, 100), "retries": (0, 10)}.items():
        if key in ints and not low <= ints[key] <= high:
            raise ConfigError(f"{label}.{key}: {ints[key]} is out of range; expected {low} to {high}")
    library = _choice(f"{label}.library", v.get("library", "keep"), ("keep", "add", "strip"))
    return UpstreamConfig(url=url.rstrip("/"), repository=repository, path_prefix=path_prefix, username=username,
                          password=password, token=token, anonymous=anonymous, ca_file=ca_file,
                          tls_verify=v.get("tls_verify", True), allowed_realm_hosts=tuple(h.lower() for h in realms),
                          library=library, label=label, **timeouts, **ints)


def _mirror(v: dict, resolve) -> MirrorConfig:
    try:
        max_age = parse_duration("mirror.max_age", v.get("max_age", MirrorConfig.max_age))
        max_bytes = parse_size("mirror.max_bytes", v["max_bytes"]) if v.get("max_bytes") is not None else None
    except ValueError as e:
        raise ConfigError(str(e)) from e
    if max_age < 60:
        raise ConfigError(f"mirror.max_age: {v.get('max_age')!r} is under a minute; an image would be gone before "
                          f"its deploy ends (7d is the default)")
    return MirrorConfig(
        max_age=max_age, max_bytes=max_bytes,
        listen=parse_address("mirror.listen", v.get("listen", "0.0.0.0:5000")),
        storage=resolve(v.get("storage", "./data/registry")),
        tls=v.get("tls", True),
        tls_cert=resolve(v.get("tls_cert", "certs/mirror.crt")),
        tls_key=resolve(v.get("tls_key", "certs/mirror.key")),
    )


def _rewriter(v: dict, resolve) -> RewriterConfig:
    return RewriterConfig(
        listen=parse_address("rewriter.listen", v.get("listen", "127.0.0.1:8081")),
        web_listen=parse_address("rewriter.web_listen", v.get("web_listen", "127.0.0.1:8082")),
        web_password=_secret(v, "web_password", resolve, "rewriter"),
        blob_redirect=v.get("blob_redirect", True),
        log_format=_choice("rewriter.log_format", v.get("log_format", "text"), ("text", "json")),
    )


def _scale(v: dict, resolve) -> ScaleConfig:
    if not v.get("redis"):
        if v:
            raise ConfigError(f"scale.redis: missing; the scale keys ({', '.join(v)}) need the redis shared by "
                              f"the replicas, host:port, e.g. 10.0.0.5:6379")
        return ScaleConfig()
    redis = parse_address("scale.redis", v["redis"])
    listen_text = v.get("listen", "0.0.0.0:0")
    listen = parse_address("scale.listen", listen_text if ":" in listen_text.strip("[]") else f"{listen_text}:0",
                           allow_any_port=True)
    advertise = v.get("advertise") or ("" if any_address(listen.host) else listen.host)
    if not advertise:
        raise ConfigError(f"scale.advertise: missing; scale.listen is {listen_text}, so say which address the "
                          f"other replicas reach this one at, e.g. advertise: 10.0.0.11")
    if not re.fullmatch(r"[A-Za-z0-9.:-]+", advertise):
        raise ConfigError(f"scale.advertise: {advertise!r} is not a host name or IP address")
    if not any_address(listen.host) and listen.host != advertise:
        raise ConfigError(f"scale.advertise: the other replicas would dial {advertise}, but the blob endpoint "
                          f"listens on {listen.host} only (scale.listen); make them the same, or listen on 0.0.0.0")
    db, lock = v.get("redis_db", 0), float(v.get("lock_seconds", 60.0))
    if not 0 <= db <= 15:
        raise ConfigError(f"scale.redis_db: {db} is out of range; expected 0 to 15")
    if not 5 <= lock <= 3600:
        raise ConfigError(f"scale.lock_seconds: {lock:g} is out of range; expected 5 to 3600 seconds")
    return ScaleConfig(redis=redis, redis_db=db,
                       redis_password=_secret(v, "redis_password", resolve, "scale"), listen=listen,
                       advertise=advertise, lock_seconds=lock)


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(choices)}")
    return value


def _cache(v: dict, resolve, storage: str) -> CacheConfig:
    bounds = {"tag_ttl": (0, 86400), "blob_head_ttl": (0, 86400), "spool_keep": (0, 3600),
              "manifest_bytes": (0, 2 ** 40), "spool_max_bytes": (0, 2 ** 50), "stale_budget": (0.05, 600),
              "max_stale": (0, 10 ** 8)}
    for key, (low, high) in bounds.items():
        if key in v and not low <= v[key] <= high:
            raise ConfigError(f"cache.{key}: {v[key]} is out of range; expected {low} to {high}")
    return CacheConfig(tag_ttl=float(v.get("tag_ttl", 30.0)),
                       blob_head_ttl=float(v.get("blob_head_ttl", CacheConfig.blob_head_ttl)),
                       manifest_bytes=v.get("manifest_bytes", 64 * 1024 ** 2),
                       spool_dir=resolve(v.get("spool_dir")), spool_max_bytes=v.get("spool_max_bytes", 8 * 1024 ** 3),
                       spool_keep=float(v.get("spool_keep", 10.0)),
                       stale_budget=float(v.get("stale_budget", 2.0)), max_stale=float(v.get("max_stale", 86400.0)),
                       tag_state_file=resolve(v.get("tag_state_file") or storage.rstrip("/") + ".tags.json"))


def parse_address(name: str, value: str, allow_any_port: bool = False) -> Address:
    """host:port; with `allow_any_port`, port 0 means any free port."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not (0 if allow_any_port else 1) <= int(port) < 65536:
        raise ConfigError(f"{name}: {value!r} is not host:port, e.g. 127.0.0.1:8081")
    return Address(host, int(port))


def _secret(v: dict, key: str, resolve, section: str = "upstream") -> Secret | None:
    """A secret given inline or in `<key>_file` (its first line), never both."""
    inline, path = v.get(key), resolve(v.get(f"{key}_file"))
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


def _is_secret_key(key: str) -> bool:
    return key in ("password", "token", "web_password", "redis_password")


def _type_name(expected) -> str:
    names = {str: "a string", bool: "true or false", list: "a list", (int, float): "a number of seconds",
             int: "a whole number"}
    return names.get(expected, str(expected))


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(parts.password, "<redacted>")
    return url
