"""Load mirror.yaml into frozen dataclasses; every error names the key and what would be right.

The keys are declared in config/keys.py and checked one by one by config/schema.py; here: the file, its sections,
and the rules that span keys (credentials, what a route inherits, where scale-out is reached).
"""
from __future__ import annotations

import os
import re
import ssl
from dataclasses import replace
from pathlib import Path

import yaml

from registry_mirror.config.keys import (
    ARTIFACTORY_PREFIX,
    SECTIONS,
    AccessConfig,
    CacheConfig,
    Config,
    MetricsConfig,
    MirrorConfig,
    RewriterConfig,
    S3Config,
    ScaleConfig,
    UpstreamConfig,
    WebhooksConfig,
)
from registry_mirror.config.kinds import Address, ConfigError, Secret, any_address, parse_address
from registry_mirror.config.schema import check_types, convert, declared, expand

__all__ = ["ARTIFACTORY_PREFIX", "DEFAULT_PATH", "ENV_PATH", "UNREAD", "AccessConfig", "Address", "CacheConfig",
           "Config", "ConfigError", "MirrorConfig", "RewriterConfig", "S3Config", "ScaleConfig", "Secret",
           "UpstreamConfig", "WebhooksConfig",
           "any_address", "config_path", "expand", "load", "parse", "parse_address"]

DEFAULT_PATH = "mirror.yaml"
ENV_PATH = "MIRROR_CONFIG"
# A route inherits `upstream`'s keys, except: its own credential replaces all of upstream's, and with its own
# url it takes none of upstream's host, TLS or credential keys, so a credential only goes to its own host, nor
# its repository or library handling (another host's repository is named, not guessed)
_CREDENTIAL_KEYS = ("username", "password", "password_file", "token", "token_file", "anonymous")
_NOT_INHERITED_WITH_URL = ("url", *_CREDENTIAL_KEYS, "ca_file", "tls_verify", "client_cert", "client_key",
                           "allowed_realm_hosts",
                           "repository", "library", "repository_path_names")


def config_path(option_value: str = "") -> Path:
    """The file to read: the option if set, else $MIRROR_CONFIG, else ./mirror.yaml."""
    return Path(option_value or os.environ.get(ENV_PATH) or DEFAULT_PATH)


def load(path: str | Path, environ: dict[str, str] | None = None, read_secrets: bool = True) -> Config:
    """`read_secrets` False: for a command that uses none (`status`, `clients`), each secret stands as UNREAD,
    neither expanded from the environment nor read from its file, so the command runs where they are absent."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read the configuration file {path}: {e.strerror}; point {ENV_PATH}, --config "
                          "(artifactory-mirror) or --set mirror_config= (mitmdump) at a readable mirror.yaml") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    if not read_secrets:
        data = secrets_unread(data)
    return parse(data, base_dir=path.parent, environ=dict(os.environ) if environ is None else environ, source=str(path))


UNREAD = "<not read: this command uses no secret>"


def secrets_unread(data: object) -> object:
    """`data` with every secret key (inline, `${VAR}` or `<key>_file`) standing as UNREAD; anything malformed is
    left for parse to name."""
    def section(values: object, cls: type, routes: bool = False) -> object:
        if not isinstance(values, dict):
            return values
        secret_keys = {name for name, (_, key) in declared(cls, routes).items() if key.kind.secret}
        out: dict = {}
        for name, value in values.items():
            base = name.removesuffix("_file")
            if base in secret_keys:
                out[base] = UNREAD
            elif name == "s3" and cls is MirrorConfig:
                out[name] = section(value, S3Config)
            else:
                out[name] = value
        return out

    if not isinstance(data, dict):
        return data
    unread = {name: section(value, SECTIONS[name]) if name in SECTIONS else value for name, value in data.items()}
    if isinstance(routes := data.get("routes"), list):
        unread["routes"] = [section(route, UpstreamConfig, routes=True) for route in routes]
    return unread


def parse(data: object, base_dir: Path = Path("."), environ: dict[str, str] | None = None,
          source: str = "<memory>") -> Config:
    environ = {} if environ is None else environ
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with the sections "
                          f"{', '.join(SECTIONS)}, not {type(data).__name__}")
    sections, routes, s3 = {}, [], None
    for key, value in data.items():
        if key == "routes":
            routes = _check_routes(value, environ)
            continue
        if key not in SECTIONS:
            raise ConfigError(f"unknown key {key!r}: the sections are {', '.join(SECTIONS)}, routes")
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a mapping of keys, not {type(value).__name__}")
        if key == "mirror" and "s3" in value:
            value = dict(value)
            s3 = _check_s3(value.pop("s3"), environ)
        sections[key] = check_types(key, value, declared(SECTIONS[key]), environ)
    if "upstream" not in sections:
        raise ConfigError("upstream: missing; it needs at least url and repository")
    resolve = lambda p: str((base_dir / p).resolve()) if p else p  # noqa: E731 - paths are relative to the file
    section = lambda name: convert(name, sections.get(name, {}), declared(SECTIONS[name]), resolve)  # noqa: E731
    upstream = _upstream(sections["upstream"], resolve)
    explicit = _routes(routes, sections["upstream"], resolve)
    mirror = MirrorConfig(**section("mirror"), s3=_s3(s3, resolve) if s3 is not None else None)
    if mirror.client_ca and not mirror.tls:
        raise ConfigError("mirror.client_ca: needs mirror.tls: true (mutual TLS is TLS); set tls: true, or remove "
                          "client_ca and check client certificates at the TLS-terminating proxy")
    rewriter = RewriterConfig(**section("rewriter"))
    scale = _scale(sections.get("scale", {}), resolve)
    taken = {"mirror.listen": mirror.listen, "rewriter.listen": rewriter.listen,
             "rewriter.web_listen": rewriter.web_listen, **({"scale.listen": scale.listen} if scale.enabled else {})}
    webhooks = _webhooks(sections.get("webhooks", {}), resolve, taken)
    listeners = {"webhooks.listen": webhooks.listen} if webhooks.listen else {}
    access = _access(section("access"), mirror, upstream, {**taken, **listeners})
    if access.enabled:
        listeners["access.listen"] = access.listen
    return Config(
        upstream=upstream,
        rewriter=rewriter,
        scale=scale,
        routes=(*explicit, *_repository_path_routes(upstream, explicit)),
        mirror=mirror,
        webhooks=webhooks,
        access=access,
        metrics=_metrics(section("metrics"), mirror, {**taken, **listeners}),
        cache=_cache(section("cache"), sections.get("mirror", {}).get("storage", MirrorConfig.storage), resolve,
                     on_bucket=mirror.s3 is not None),
        source=source,
    )


def _check_s3(value: object, environ: dict[str, str]) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"mirror.s3: must be a mapping of keys (bucket, endpoint, ...), not {type(value).__name__}")
    return check_types("mirror.s3", value, declared(S3Config), environ)


def _s3(values: dict, resolve) -> S3Config:
    s3 = S3Config(**convert("mirror.s3", values, declared(S3Config), resolve))
    if bool(s3.access_key) != bool(s3.secret_key):
        raise ConfigError("mirror.s3: set access_key and secret_key together (or neither, for the AWS credential "
                          "chain)")
    return s3


def _cache(values: dict, storage: str, resolve, on_bucket: bool) -> CacheConfig:
    """Last known tags go next to the storage by default: its name as written (resolving it first would follow
    a symlinked folder). Prefetch is on by default where the storage's writes are whole: a bucket."""
    return CacheConfig(**{**values, "tag_state_file": values["tag_state_file"]
                          or resolve(storage.rstrip("/") + ".tags.json"),
                          "prefetch": on_bucket if values["prefetch"] is None else values["prefetch"]})


def _check_routes(value: object, environ: dict[str, str]) -> list[dict]:
    if not isinstance(value, list):
        raise ConfigError(f"routes: must be a list of mappings (prefix, repository, ...), not {type(value).__name__}")
    checked = []
    for i, route in enumerate(value):
        if not isinstance(route, dict):
            raise ConfigError(f"routes[{i}]: must be a mapping with prefix (or ns) and repository, "
                              f"not {type(route).__name__}")
        checked.append(check_types(f"routes[{i}]", route, declared(UpstreamConfig, routes=True), environ))
    return checked


def _routes(routes: list[dict], default: dict, resolve) -> tuple[UpstreamConfig, ...]:
    """Each route: its own keys, plus `upstream`'s where it sets no url (same host, same credentials)."""
    built, seen = [], set()
    own_keys = {name: d for name, d in declared(UpstreamConfig, routes=True).items() if d[1].routes_only}
    for i, route in enumerate(routes):
        label = f"routes[{i}]"
        own = convert(label, route, own_keys, resolve)
        prefix, ns = own["match_prefix"], own["match_ns"]
        if not prefix and not ns:
            raise ConfigError(f"{label}: set prefix (image names it serves, e.g. team-a/) and/or ns (e.g. "
                              f"[docker.io]); a route without either would take every name from upstream")
        if (prefix, ns) in seen:
            raise ConfigError(f"{label}: another route already serves prefix {prefix!r} with ns {list(ns)}")
        seen.add((prefix, ns))
        if own["strip_prefix"] and not prefix:
            raise ConfigError(f"{label}.strip_prefix: needs a prefix to strip")
        own_credential = any(k in route for k in _CREDENTIAL_KEYS)
        if "url" in route and not own_credential:
            raise ConfigError(f"{label}: sets its own url but no credential; set username + password (or "
                              f"password_file), token, or anonymous: true. A route with its own url never "
                              f"inherits upstream's credentials, so they are never sent to another host")
        not_inherited = _NOT_INHERITED_WITH_URL if "url" in route else _CREDENTIAL_KEYS if own_credential else ()
        merged = {**{k: v for k, v in default.items() if k not in not_inherited}, **route}
        built.append(replace(_upstream(merged, resolve, label), **own))
    return tuple(built)


def _repository_path_routes(upstream: UpstreamConfig,
                            explicit: tuple[UpstreamConfig, ...]) -> tuple[UpstreamConfig, ...]:
    """For each route with repository_path_names: `<its repository>/<name>` served by it, asked for as `<name>`
    (what follows the key is the name in that repository, whatever prefix the route itself matches). One route
    per host, repository and ns: upstream's first, so a route that inherits both its repository and the switch
    adds nothing."""
    derived, served = [], set()
    taken = {(r.match_prefix, r.match_ns): r.label for r in explicit}
    for route in (upstream, *explicit):
        identity = (route.origin, route.repository, route.match_ns)
        if not (route.repository_path_names and route.repository) or identity in served:
            continue
        served.add(identity)
        if (route.repository, route.match_ns) in taken:
            raise ConfigError(f"{route.label}.repository_path_names: {taken[route.repository, route.match_ns]} "
                              f"already serves the names under {route.repository}/; set repository_path_names: "
                              f"false on {route.label}, or give that route another prefix")
        derived.append(replace(route, match_prefix=route.repository, strip_prefix=True, repository_path_names=False,
                               label=f"{route.label} ({route.repository}/ names)", path_names_of=route.label))
    return tuple(derived)


def _upstream(v: dict, resolve, label: str = "upstream") -> UpstreamConfig:
    values = convert(label, v, declared(UpstreamConfig), resolve)
    repository = values["repository"]
    if "{repository}" in values["path_prefix"] and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", repository):
        raise ConfigError(f"{label}.repository: {'missing' if not repository else repr(repository)}; expected the "
                          f"Artifactory Docker repository key, e.g. docker-local (letters, digits, . _ -)")
    username, password, token = values["username"], values["password"], values["token"]
    if username and token:
        raise ConfigError(f"{label}.token: set either username + password (Basic or the token flow) or token "
                          "(a static Bearer access token), not both")
    if username and password is None:
        raise ConfigError(f"{label}.password: missing for {label}.username; set password or password_file "
                          "(an Artifactory password or identity token)")
    if password is not None and not username:
        raise ConfigError(f"{label}.username: missing; a password needs the user it belongs to")
    if bool(values["client_cert"]) != bool(values["client_key"]):
        raise ConfigError(f"{label}.client_cert: set client_cert and client_key together (the certificate presented "
                          f"to the upstream and its key), or neither")
    if values["client_cert"]:
        try:
            ssl.create_default_context().load_cert_chain(values["client_cert"], values["client_key"])
        except OSError as e:  # ssl.SSLError too
            raise ConfigError(f"{label}.client_cert: cannot load {values['client_cert']} with "
                              f"{values['client_key']}: {e}; expected a PEM certificate and its unencrypted "
                              f"key") from e
    if not (username or token or values["anonymous"]):
        raise ConfigError(f"{label}: no credential; set username + password (or password_file), or token "
                          "(or token_file), or anonymous: true for an upstream that needs none")
    return UpstreamConfig(**values, label=label)


def _switched_on(section: str, key: str, v: dict, what: str) -> bool:
    """Whether an optional section is on: its `key` is set; its other keys without it are an error."""
    if v.get(key):
        return True
    if v:
        raise ConfigError(f"{section}.{key}: missing; the {section} keys ({', '.join(v)}) need {what}")
    return False


def _scale(v: dict, resolve) -> ScaleConfig:
    if not _switched_on("scale", "redis", v, "the redis shared by the replicas, host:port, e.g. 10.0.0.5:6379"):
        return ScaleConfig()
    values = convert("scale", v, declared(ScaleConfig), resolve)
    listen = values["listen"]
    advertise = values["advertise"] or ("" if any_address(listen.host) else listen.host)
    if not advertise:
        raise ConfigError(f"scale.advertise: missing; scale.listen is {v.get('listen', listen)}, so say which "
                          f"address the other replicas reach this one at, e.g. advertise: 10.0.0.11")
    if not re.fullmatch(r"[A-Za-z0-9.:-]+", advertise):
        raise ConfigError(f"scale.advertise: {advertise!r} is not a host name or IP address")
    if not any_address(listen.host) and listen.host != advertise:
        raise ConfigError(f"scale.advertise: the other replicas would dial {advertise}, but the blob endpoint "
                          f"listens on {listen.host} only (scale.listen); make them the same, or listen on 0.0.0.0")
    return ScaleConfig(**{**values, "advertise": advertise})


def _same_socket(a: Address, b: Address) -> bool:
    return a.port == b.port and (a.host == b.host or any_address(a.host) or any_address(b.host))


def _webhooks(v: dict, resolve, taken: dict[str, Address]) -> WebhooksConfig:
    if not _switched_on("webhooks", "listen", v, "the address Artifactory posts to, host:port, e.g. 0.0.0.0:8084"):
        return WebhooksConfig()
    values = convert("webhooks", v, declared(WebhooksConfig), resolve)
    listen = values["listen"]
    for name, address in taken.items():
        if _same_socket(listen, address):
            raise ConfigError(f"webhooks.listen: {listen} is {name} ({address}); the webhook listener needs a "
                              f"port of its own, e.g. {listen.host}:8084")
    if values["secret"] is None:
        raise ConfigError("webhooks.secret: missing for webhooks.listen; set secret or secret_file to the "
                          "webhook's secret in Artifactory (unsigned events would let anyone start warms)")
    return WebhooksConfig(**values)


def _access(values: dict, mirror: MirrorConfig, upstream: UpstreamConfig, taken: dict[str, Address]) -> AccessConfig:
    access = AccessConfig(**values)
    if not access.enabled:
        return access
    if not mirror.tls:
        raise ConfigError("access.users: artifactory needs mirror.tls: true; clients send their Artifactory "
                          "password to the token endpoint, which serves TLS only")
    if upstream.anonymous:
        raise ConfigError("access.users: artifactory needs an upstream that checks users (Artifactory, with "
                          "upstream.username or token); upstream.anonymous: true would allow any password")
    for name, address in taken.items():
        if _same_socket(access.listen, address):
            raise ConfigError(f"access.listen: {access.listen} is {name} ({address}); the token endpoint needs a "
                              f"port of its own, e.g. {access.listen.host}:5001")
    if bool(access.signing_cert) != bool(access.signing_key):
        raise ConfigError("access.signing_cert: set signing_cert and signing_key together, or neither (a pair is "
                          "generated beside mirror.tls_cert)")
    if access.signing_cert:
        return access
    beside = Path(mirror.tls_cert).parent
    return replace(access, signing_cert=str(beside / "token-signer.crt"), signing_key=str(beside / "token-signer.key"),
                   signing_generated=True)


def _metrics(values: dict, mirror: MirrorConfig, taken: dict[str, Address]) -> MetricsConfig:
    metrics = MetricsConfig(**values)
    if metrics.listen is None:
        if metrics.tls:
            raise ConfigError("metrics.tls: set metrics.listen too (where a fleet's Prometheus scrapes), e.g. "
                              "0.0.0.0:9464")
        return metrics
    for name, address in taken.items():
        if _same_socket(metrics.listen, address):
            raise ConfigError(f"metrics.listen: {metrics.listen} is {name} ({address}); the metrics listener needs a "
                              f"port of its own, e.g. {metrics.listen.host}:9464")
    if metrics.tls and not mirror.tls:
        raise ConfigError("metrics.tls: true needs mirror.tls: true (it serves the mirror's certificate)")
    return metrics
