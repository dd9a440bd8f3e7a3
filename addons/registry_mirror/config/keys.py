"""Every mirror.yaml key, declared once as a field of its section's dataclass: kind, default, bounds or choices and
one line of doc. Loading (config/load.py), its messages and the table in docs/configuration.md (python -m
devtools.config_table) all read these declarations.

The key names are a contract with operators' automation: add keys, never rename them.
"""
from __future__ import annotations

from dataclasses import dataclass

from registry_mirror.config.kinds import (
    ADDRESS,
    ANY_PORT,
    BOOL,
    BUCKET,
    BYTES,
    CA_FILE,
    DURATION,
    ENDPOINT,
    HOSTS,
    IMAGE_PREFIX,
    IMAGE_PREFIXES,
    KEY_PREFIX,
    PATH,
    PATH_PREFIX,
    PLATFORMS,
    REGION,
    REGISTRY_HOSTS,
    SECONDS,
    SECRET,
    SIZE,
    STRING,
    URL,
    WHOLE,
    Address,
    Secret,
)
from registry_mirror.config.schema import key

ARTIFACTORY_PREFIX = "/artifactory/api/docker/{repository}"
_ONE_CREDENTIAL = "one credential kind"


def _at_least_a_minute(seconds: float) -> str | None:
    return "is under a minute; an image would be gone before its deploy ends (7d is the default)" \
        if seconds < 60 else None


@dataclass(frozen=True)
class UpstreamConfig:
    url: str = key(URL, "Artifactory's origin; nothing else (no path, no credentials).", required="yes")
    repository: str = key(STRING, "Artifactory Docker repository key, e.g. `docker-local`.", "",
                          required="yes (with the default prefix)")
    path_prefix: str = key(PATH_PREFIX, "Path under which the upstream serves `/v2/`. `\"\"` for a registry at "
                           "the root; `/repository/{repository}` for Nexus-style paths.", ARTIFACTORY_PREFIX)
    username: str | None = key(STRING, "User for Basic and for the token flow.", None, required=_ONE_CREDENTIAL)
    password: Secret | None = key(SECRET, "Password or identity token, inline or in a file (its first line).",
                                  None, required="with `username`")
    token: Secret | None = key(SECRET, "A static Bearer access token, instead of username + password.", None,
                               required=_ONE_CREDENTIAL)
    anonymous: bool = key(BOOL, "`true` for an upstream that needs no credential.", False, required=_ONE_CREDENTIAL)
    ca_file: str | None = key(CA_FILE, "PEM bundle for the upstream's TLS.", None, shown="system CAs")
    tls_verify: bool = key(BOOL, "Verify the upstream's certificate.", True)
    client_cert: str | None = key(PATH, "A client certificate (PEM) presented to the upstream, for one that "
                                  "requires mutual TLS (a regional mirror with `mirror.client_ca`).", None,
                                  shown="none")
    client_key: str | None = key(PATH, "The key of `client_cert`.", None, required="with `client_cert`",
                                 shown="none")
    allowed_realm_hosts: tuple[str, ...] = key(HOSTS, "Hosts besides the upstream's own origin whose token realm "
                                               "may receive credentials.", [])
    connect_timeout: float = key(SECONDS, "Seconds to connect to the upstream.", 5, bounds=(0, 3600), above=True)
    request_timeout: float = key(SECONDS, "Seconds for a whole manifest, tag, blob HEAD or token exchange.", 20,
                                 bounds=(0, 3600), above=True)
    blob_stall_timeout: float = key(SECONDS, "Seconds a blob stream may go without a byte before it is dropped "
                                    "(and resumed).", 60, bounds=(0, 3600), above=True)
    retries: int = key(WHOLE, "Retries of a dropped connection or a 502/503/504, with a short backoff (0.25 s, "
                       "doubling); refusals and timeouts are not retried.", 3, bounds=(0, 10))
    blob_resumes: int = key(WHOLE, "How many times an interrupted blob transfer resumes with a Range request "
                            "before it fails.", 3, bounds=(0, 100))
    max_blob_transfers: int = key(WHOLE, "Blob transfers from this upstream at once; more wait in line for one "
                                  "(the stats page shows how many).", 256, bounds=(1, 100_000))
    blob_queue_timeout: float = key(SECONDS, "Seconds a blob transfer may wait in line for one of "
                                    "`max_blob_transfers`; then it is refused with a 503 before any byte. The wait "
                                    "never counts as an upstream failure.", 300, bounds=(0, 86400), above=True)
    failures_before_down: int = key(WHOLE, "Consecutive failures (transport errors, timeouts, 5xx) after which "
                                    "the upstream is assumed down.", 3, bounds=(1, 1000))
    down_period: float = key(SECONDS, "Seconds the upstream is assumed down: cached answers at once, uncached "
                             "ones fail at once; a probe of its `/v2/` every second ends it early.", 30,
                             bounds=(0, 3600), above=True)
    library: str = key(STRING, "`add`: a one-component name is asked for as `library/<name>` (Docker Hub-style "
                       "upstreams); `strip`: `library/<name>` is asked for as `<name>`.", "keep",
                       choices=("keep", "add", "strip"))
    repository_path_names: bool = key(BOOL, "Also serve Artifactory's repository-path names: "
                                      "`<repository>/<image>` (as in `artifactory.example.com/docker-local/app`, "
                                      "which containerd and podman send a mirror as `docker-local/app`) is "
                                      "`<image>` from this repository. Routes inherit it.", False)
    match_prefix: str = key(IMAGE_PREFIX, "Image names this route serves (whole path components).", "",
                            name="prefix", routes_only=True, required="`prefix` or `ns`")
    match_ns: tuple[str, ...] = key(REGISTRY_HOSTS, "containerd `ns` values this route serves, e.g. "
                                    "`[docker.io]`; only matched, never dialled.", [], name="ns", routes_only=True,
                                    required="`prefix` or `ns`")
    strip_prefix: bool = key(BOOL, "Ask the upstream for `team-a/app` as `app`.", False, routes_only=True)
    label: str = "upstream"  # where it is configured, for messages: upstream or routes[N]
    path_names_of: str = ""  # a route serving another's repository-path names: that route's label

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
class S3Config:
    bucket: str = key(BUCKET, "The bucket holding the registry's storage.", required="with `mirror.s3`")
    endpoint: str | None = key(ENDPOINT, "An S3-compatible store (Ceph RGW, MinIO, SeaweedFS...), addressed path "
                               "style.", None, shown="AWS S3")
    region: str = key(REGION, "The bucket's region (S3-compatible stores mostly ignore it).", "us-east-1")
    prefix: str = key(KEY_PREFIX, "The folder inside the bucket, for several mirrors sharing one bucket.", "")
    access_key: Secret | None = key(SECRET, "With `secret_key`; both unset: the usual AWS credential chain "
                                    "(environment, instance role).", None, shown="the AWS chain")
    secret_key: Secret | None = key(SECRET, "The secret of `access_key`.", None, shown="the AWS chain")
    ca_file: str | None = key(CA_FILE, "The store's CA, trusted on top of the system's by the registry and the "
                              "addon.", None, shown="the system's")
    redirect: bool = key(BOOL, "Clients fetch stored blobs from the store itself (307 to a presigned URL): they "
                         "must reach it and trust its certificate.", False)

    @property
    def credentials(self) -> tuple[Secret, Secret] | None:
        return (self.access_key, self.secret_key) if self.access_key and self.secret_key else None


@dataclass(frozen=True)
class MirrorConfig:
    listen: Address = key(ADDRESS, "Where the stock registry serves clients.", "0.0.0.0:5000")
    storage: str = key(PATH, "The registry's filesystem storage; the addon reads blobs from it that another "
                       "repository already brought in. With `mirror.s3`, where this host keeps its own files "
                       "beside the bucket (last known tags, the notification secret).", "./data/registry")
    tls: bool = key(BOOL, "Serve TLS (set `false` only behind a TLS-terminating proxy).", True)
    tls_cert: str = key(PATH, "The mirror's certificate; generated self-signed when it and `tls_key` are missing.",
                        "certs/mirror.crt")
    tls_key: str = key(PATH, "The key of `tls_cert`.", "certs/mirror.key")
    tls_ca: str | None = key(PATH, "The CA certificate that issued `tls_cert`, which clients are told to trust "
                             "(`artifactory-mirror clients`).", None, shown="`tls_cert` itself (self-signed)")
    client_ca: str | None = key(CA_FILE, "Mutual TLS: only clients presenting a certificate this CA issued reach "
                                "the registry (read at the registry's start). Needs `tls`.", None,
                                shown="none: any client")
    max_age: float = key(DURATION, "An image not pulled for this long is removed (at least a minute). Pulls "
                         "served from storage count: they come from the registry's notifications.", "7d",
                         check=_at_least_a_minute)
    drain_timeout: float = key(SECONDS, "On a stop (SIGTERM), seconds the registry may finish the pulls in "
                               "flight, new connections refused, while the addon still serves them; then they are "
                               "cut. Keep systemd's `TimeoutStopSec` above it.", 60, bounds=(0, 3600))
    min_free: int = key(SIZE, "Free space kept on the storage's and the spool's filesystems: below it cold "
                        "fetches are refused at once (cached images keep being served) until space comes back.",
                        "1GiB")
    verify_interval: float = key(DURATION, "After the registry serves a stored blob itself, its file is hashed again "
                                 "at most this often (a corrupt one is moved aside and fetched again on the next "
                                 "pull). Shorter heals sooner and reads more.", "1h",
                                 check=lambda s: "is under a minute" if s < 60 else None)
    scrub_interval: float = key(DURATION, "Every blob in the storage is hashed once per this long, paced over half "
                                "of it (a corrupt one is moved aside and fetched again on its next pull).", "7d",
                                check=lambda s: "is under an hour; a scrub reads the whole storage" if s < 3600
                                else None)
    max_bytes: int | None = key(SIZE, "Above this many bytes of storage (a folder's or a bucket's blob data) the "
                                "least recently pulled images go first.", None, shown="none")
    s3: S3Config | None = None  # `mirror.s3`: the registry's storage in a bucket instead of `storage`

    @property
    def trusted_ca(self) -> str:
        """The certificate clients (and warm) trust: `tls_ca`, or the self-signed `tls_cert` itself."""
        return self.tls_ca or self.tls_cert


@dataclass(frozen=True)
class RewriterConfig:
    listen: Address = key(ADDRESS, "Where the addon listens: the registry's `proxy.remoteurl`.", "127.0.0.1:8081")
    web_listen: Address = key(ADDRESS, "mitmweb's UI for `artifactory-mirror web`.", "127.0.0.1:8082")
    web_password: Secret | None = key(SECRET, "mitmweb's password (passed to mitmweb as an argon2 hash).", None,
                                      shown="a one-time token")
    blob_redirect: bool = key(BOOL, "Send the registry to the blob endpoint with a `307` (blob bytes skip "
                              "mitmproxy); `false` routes them through mitmproxy, visible in mitmweb.", True)
    log_format: str = key(STRING, "`json`: one JSON object per upstream exchange and line.", "text",
                          choices=("text", "json"))


@dataclass(frozen=True)
class CacheConfig:
    tag_ttl: float = key(SECONDS, "Seconds a tag's digest is used without asking the upstream; `0` asks every "
                         "time.", 30, bounds=(0, 86400))
    blob_head_ttl: float = key(SECONDS, "Seconds a blob's HEAD (size and type) is answered from memory; `0` asks "
                               "the upstream every time. A cached HEAD whose size a verified transfer of the blob "
                               "contradicts is dropped at once.", 3600, bounds=(0, 86400))
    manifest_bytes: int = key(BYTES, "Bytes of manifests (by digest) kept in memory, least recently used first "
                              "out.", 64 * 1024 ** 2, bounds=(0, 2 ** 40))
    spool_dir: str | None = key(PATH, "Parent folder of the spool: each running mirror spools into its own "
                                "`artifactory-mirror-spool-*` folder here, locked while it runs and removed on stop; a "
                                "start removes every such folder whose lock is free (a crashed or killed run's).", None,
                                shown="`$TMPDIR`")
    spool_max_bytes: int = key(BYTES, "Finished spools kept for stragglers, at most this many bytes.",
                               8 * 1024 ** 3, bounds=(0, 2 ** 50))
    spool_keep: float = key(SECONDS, "Seconds a spool is kept after its transfer ended, for requests that arrive "
                            "before the registry has stored its copy. Short on purpose: a spool deleted within the "
                            "kernel's dirty expiry (30 s) is never written to disk.", 10, bounds=(0, 3600))
    prefetch: bool = key(BOOL, "Once the registry asks for one blob of an image whose manifest it fetched, fetch the "
                         "image's other blobs one after another ahead of its requests (the WAN stays busy between "
                         "layers). Off by default on a folder: the stock registry 2.8 writes a layer's link there in "
                         "place, and a pull arriving while a prefetched layer is committed can get a 500 "
                         "(benchmarks); a bucket's writes are whole.", None, shown="on with `mirror.s3`, else off")
    stale_budget: float = key(SECONDS, "Seconds a tag refresh may take before the last known digest is answered "
                              "(the refresh goes on in the background).", 2, bounds=(0.05, 600))
    max_stale: float = key(SECONDS, "The oldest last known digest (seconds) still answered when the upstream "
                           "fails.", 86400, bounds=(0, 10 ** 8))
    forget_deleted_tags: bool = key(BOOL, "An upstream 404 for a tag removes the mirror's tag (its link in the "
                                    "storage and the addon's caches): pulls by it answer not found, as upstream; a "
                                    "pull by digest works until `forget`. A 401, 403, 5xx, timeout or outage never "
                                    "removes anything. Off: the stock registry serves its own tag after a 404.",
                                    False)
    tag_state_file: str | None = key(PATH, "Last known tags (digests and media types, no secret), kept across "
                                     "restarts; `routes[N]` keeps its own next to it (`….tags.routeN.json`).", None,
                                     shown="`<mirror.storage>.tags.json`")


@dataclass(frozen=True)
class ScaleConfig:
    """Replicas in one data center sharing storage: redis holds one lock per digest in flight, so a layer
    crosses the WAN once whichever replica is asked for it."""
    redis: Address | None = key(ADDRESS, "The redis shared by the replicas of one data center; unset: a single "
                                "replica, nothing shared.", None, required="for scale-out")
    redis_db: int = key(WHOLE, "The redis database.", 0, bounds=(0, 15))
    redis_password: Secret | None = key(SECRET, "The redis password.", None)
    listen: Address = key(ANY_PORT, "Where the blob endpoint listens when scale-out is on, for the registry and "
                          "the other replicas; port 0 is advertised through redis.", "0.0.0.0:0")
    advertise: str = key(STRING, "The host the other replicas reach this one's blob endpoint at.", "",
                         required="unless `scale.listen` names one address", shown="`scale.listen`'s host")
    lock_seconds: float = key(SECONDS, "A replica's claim on a digest it is fetching, renewed while it fetches.",
                              60, bounds=(5, 3600))

    @property
    def enabled(self) -> bool:
        return self.redis is not None

    @property
    def shared_redis(self) -> Address:
        """`redis`, for the parts that only scale-out starts."""
        if self.redis is None:
            raise ValueError("scale.redis is unset: a single replica shares nothing")
        return self.redis


@dataclass(frozen=True)
class WebhooksConfig:
    """Artifactory's webhooks: a signed "tag pushed" event warms that image in the mirror at once."""
    listen: Address | None = key(ADDRESS, "Where the webhook listener serves `POST /_mirror/webhooks/artifactory` "
                                 "(TLS as `mirror.tls`); unset: no listener.", None, required="for webhooks",
                                 shown="none")
    secret: Secret | None = key(SECRET, "The webhook's secret in Artifactory: sent as `X-JFrog-Event-Auth`, or "
                                "the key of its HMAC-SHA256 of the body (\"use secret for signing\").", None,
                                required="with `listen`")
    platforms: tuple[str, ...] = key(PLATFORMS, "Platforms of an index to warm; `[]`: every platform.", [])

    @property
    def enabled(self) -> bool:
        return self.listen is not None


@dataclass(frozen=True)
class MetricsConfig:
    """A listener for a fleet's Prometheus and a load balancer: `/metrics` and a health path, nothing else."""
    listen: Address | None = key(ADDRESS, "Where `/metrics` (Prometheus) and `/healthz` (a load balancer) are "
                                 "served and nothing else; `/metrics` stays on `rewriter.listen` too.", None,
                                 shown="none")
    tls: bool = key(BOOL, "Serve it over TLS with the mirror's certificate (needs `mirror.tls`).", False)

    @property
    def enabled(self) -> bool:
        return self.listen is not None


@dataclass(frozen=True)
class AccessConfig:
    """Who may pull: with `users: artifactory` the registry asks clients for a token, and the mirror issues one only
    for what Artifactory lets the client's own user read."""
    users: str = key(STRING, "`artifactory`: each pull is checked against the client's Artifactory user; `none`: "
                     "anyone who reaches the mirror pulls what its own credential reads.", "none",
                     choices=("none", "artifactory"))
    listen: Address = key(ADDRESS, "Where the token endpoint listens (TLS with the mirror's certificate).",
                          "0.0.0.0:5001")
    url: str | None = key(URL, "The token endpoint's origin as clients reach it (the realm they are sent to).", None,
                          shown="https://<the certificate's first DNS name>:<listen's port>")
    decision_ttl: float = key(DURATION, "How long a decision (user, password, repository) is reused before "
                              "Artifactory is asked again.", "5m", check=lambda s: "is negative" if s < 0 else None)
    token_ttl: float = key(DURATION, "The lifetime of the tokens the mirror issues.", "5m",
                           check=lambda s: "is under 10 seconds; clients fetch one per pull" if s < 10 else None)
    stale_decisions: float = key(DURATION, "How long a cached \"allowed\" still holds while Artifactory is "
                                 "unreachable.", "1h", check=lambda s: "is negative" if s < 0 else None)
    anonymous: tuple[str, ...] = key(IMAGE_PREFIXES, "Image-name starts anyone may pull without logging in.", [])
    failed_logins: int = key(WHOLE, "Refused credentials a client address may present per minute; more are "
                             "answered 429 until the minute ends.", 10, bounds=(1, 100_000))
    signing_cert: str | None = key(PATH, "The certificate the tokens are signed with (in the registry's "
                                   "`rootcertbundle`); replicas share one pair. Generated when it and "
                                   "`signing_key` are missing.", None,
                                   shown="`token-signer.crt` beside `mirror.tls_cert`")
    signing_key: str | None = key(PATH, "The key of `signing_cert` (0600).", None,
                                  shown="`token-signer.key` beside `mirror.tls_cert`")
    signing_generated: bool = False  # the pair is the mirror's own (not configured): it rotates it

    @property
    def enabled(self) -> bool:
        return self.users != "none"


@dataclass(frozen=True)
class Config:
    upstream: UpstreamConfig  # the default route: every name no entry of `routes` serves
    mirror: MirrorConfig
    rewriter: RewriterConfig
    cache: CacheConfig = CacheConfig()
    source: str = "<memory>"
    routes: tuple[UpstreamConfig, ...] = ()
    scale: ScaleConfig = ScaleConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    access: AccessConfig = AccessConfig()
    metrics: MetricsConfig = MetricsConfig()


# the sections of mirror.yaml, besides `routes` (a list of UpstreamConfig's keys and its routes_only ones)
SECTIONS = {"upstream": UpstreamConfig, "mirror": MirrorConfig, "rewriter": RewriterConfig, "cache": CacheConfig,
            "scale": ScaleConfig, "webhooks": WebhooksConfig, "access": AccessConfig, "metrics": MetricsConfig}
# mappings inside a section
SUBSECTIONS = {"mirror.s3": S3Config}
