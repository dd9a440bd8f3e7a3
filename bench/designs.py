"""The designs the bench compares, each started in the data center as a user would deploy it (TLS toward the
machines and toward the upstream), and stopped by its PIDs.

- direct: the machines pull from the upstream itself, with its credentials.
- seed design: the stock registry in proxy mode behind HAProxy, which rewrites `/v2/` to the repository path and
  adds a fixed Basic header (the seed's write-up).
- artifactory-mirror: this mirror; and two replicas sharing one storage folder and a redis-server, taken in
  turn by the machines as a round-robin load balancer would; and two replicas sharing one bucket (`mirror.s3`) of
  an S3-compatible object store (SeaweedFS's `weed mini`, in the data center) and a redis-server.
- nginx cache: a caching reverse proxy with `proxy_cache_lock` (rpardini/docker-registry-proxy's design): the
  same rewrite and credential, one upstream fetch per blob, followers wait until it is cached.
"""
from __future__ import annotations

import base64
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench.network import Site
from devtools.demo import peak_rss_mb
from devtools.netns import launcher
from devtools.object_store import ObjectStore
from devtools.ports import free_port, plain_registry_config
from devtools.redis_server import RedisServer
from devtools.upstream_harness import TLS_NAME, UpstreamHarness
from registry_mirror.cli import processes
from registry_mirror.cli.supervisor import Supervisor
from registry_mirror.config.load import load

DIRECT, SEED, MIRROR, REPLICAS, REPLICAS_BUCKET, NGINX = (
    "direct", "seed design (registry + HAProxy)", "artifactory-mirror", "artifactory-mirror, 2 replicas + redis",
    "artifactory-mirror, 2 replicas on a bucket + redis", "nginx cache (proxy_cache_lock)")
DESIGNS = (DIRECT, SEED, MIRROR, REPLICAS, REPLICAS_BUCKET, NGINX)
# folder names, and --designs' names
SLUGS = dict(zip(DESIGNS, ("direct", "seed", "mirror", "replicas", "replicas-bucket", "nginx"), strict=True))
CACHING = DESIGNS[1:]  # the designs a warm deploy is measured for
LOCK_SECONDS = 880  # rpardini/docker-registry-proxy's proxy_cache_lock timeout and age: the largest blob's fetch


@dataclass
class Bed:
    """What every design is started with."""
    site: Site
    upstream: UpstreamHarness
    cert: tuple[str, str]  # the data center's certificate and key (self-signed)
    trust: Path  # the machines' trust folder for `cert`
    upstream_trust: Path  # ... and for the upstream's certificate (direct pulls)
    mirror_cache: dict = field(default_factory=dict)  # the mirrors' `cache` keys beyond the defaults

    @property
    def upstream_host(self) -> str:
        return f"{self.site.up_host}:{self.upstream.front_port}"

    @property
    def basic(self) -> str:
        return base64.b64encode(f"{self.upstream.username}:{self.upstream.password}".encode()).decode()


@dataclass
class Running:
    """A started design: the addresses the machines pull from, taken in turn, and what it runs on."""
    addresses: list[str]
    pull_args: dict
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)  # by name, stopped in reverse
    mirrors: list[Supervisor] = field(default_factory=list)
    redis: RedisServer | None = None
    store: ObjectStore | None = None  # the replicas' bucket's object store

    @property
    def parts(self) -> dict[str, list[int]]:
        """The data center's processes of this design by part: its CPU time is theirs (and their children's)."""
        parts = {name: [proc.pid] for name, proc in self.procs.items()}
        if self.mirrors:
            parts["addon"] = [m.mitm.pid for m in self.mirrors]
            parts["registry"] = [m.registry.pid for m in self.mirrors]
        if self.redis:
            parts["redis"] = [self.redis.proc.pid]
        if self.store and self.store.proc:
            parts["object store"] = [self.store.proc.pid]
        return parts

    def addon_peak_mb(self) -> float | None:
        return max((peak_rss_mb(m.mitm.pid) for m in self.mirrors), default=None)

    def stop(self) -> None:
        for mirror in self.mirrors:
            mirror.stop()
        if self.redis:
            self.redis.stop()
        if self.store:
            self.store.stop()
        for proc in reversed(self.procs.values()):
            processes.stop(proc)


def start(design: str, workdir: Path, bed: Bed) -> Running:
    workdir.mkdir(parents=True, exist_ok=True)
    running = Running([], {"cert_dir": bed.trust})
    try:
        STARTERS[design](workdir, bed, running)
    except BaseException:  # nothing it started outlives it
        running.stop()
        raise
    return running


def _direct(workdir: Path, bed: Bed, running: Running) -> None:
    running.addresses = [bed.upstream_host]
    running.pull_args = {"cert_dir": bed.upstream_trust,
                         "creds": f"{bed.upstream.username}:{bed.upstream.password}"}


def _seed(workdir: Path, bed: Bed, running: Running) -> None:
    ha_port, reg_port = free_port(), free_port()
    config = workdir / "haproxy.cfg"
    config.touch(mode=0o600)  # it holds the credential
    config.write_text(f"""global
  maxconn 2000
defaults
  mode http
  timeout connect 5s
  timeout client 600s
  timeout server 600s
frontend mirror_in
  bind 127.0.0.1:{ha_port}
  default_backend artifactory
backend artifactory
  http-request replace-path ^/v2/(.*) /artifactory/api/docker/{bed.upstream.repository}/v2/\\1
  http-request set-header Host {bed.upstream_host}
  http-request set-header Authorization "Basic {bed.basic}"
  server art {bed.upstream_host} ssl verify required ca-file {bed.upstream.ca_file}
""")
    launch = launcher(bed.site.dc_netns)
    haproxy = running.procs["HAProxy"] = launch.start(["haproxy", "-f", str(config)], workdir / "haproxy.log")
    # the stock registry panics at start if its remote refuses the connection
    launch.wait_for_port("127.0.0.1", ha_port, haproxy, what="HAProxy")
    cfg = plain_registry_config(f"127.0.0.1:{reg_port}", str(workdir / "seed-storage"))
    cfg["proxy"] = {"remoteurl": f"http://127.0.0.1:{ha_port}"}
    cfg["http"]["tls"] = {"certificate": bed.cert[0], "key": bed.cert[1]}
    (workdir / "seed-registry.yml").write_text(yaml.safe_dump(cfg))
    registry = running.procs["registry"] = launch.start(
        [processes.registry_binary(), "serve", str(workdir / "seed-registry.yml")], workdir / "seed-registry.log")
    launch.wait_for_port("127.0.0.1", reg_port, registry, what="seed-design registry")
    running.addresses = [f"127.0.0.1:{reg_port}"]


def start_mirror(workdir: Path, bed: Bed, storage: Path | None = None, scale: dict | None = None,
                 cache: dict | None = None, s3: dict | None = None) -> Supervisor:
    """One mirror; with `storage` (or `s3`: `mirror.s3`, the registry's storage in a bucket) and `scale`, one
    replica of several sharing them."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg_path = workdir / "mirror.yaml"
    cfg_path.touch(mode=0o600)
    up = bed.upstream
    cfg_path.write_text(yaml.safe_dump({
        "upstream": {"url": f"https://{bed.upstream_host}", "repository": up.repository, "ca_file": up.ca_file,
                     "username": up.username, "password": up.password},
        "mirror": {"listen": f"127.0.0.1:{free_port()}", "storage": str(storage or workdir / "mirror-storage"),
                   "tls_cert": bed.cert[0], "tls_key": bed.cert[1], **({"s3": s3} if s3 else {})},
        "rewriter": {"listen": f"127.0.0.1:{free_port()}"},
        "cache": {"spool_dir": str(workdir / "spool"), **bed.mirror_cache, **(cache or {})},
        **({"scale": scale} if scale else {})}))
    mirror = Supervisor(load(cfg_path), workdir / "mirror-logs", launcher=launcher(bed.site.dc_netns))
    try:
        mirror.start()
    except BaseException:
        mirror.stop()  # whatever of it started
        raise
    return mirror


def _mirror(workdir: Path, bed: Bed, running: Running) -> None:
    running.mirrors.append(start_mirror(workdir, bed))
    running.addresses = [str(running.mirrors[0].cfg.mirror.listen)]


def _replicas(workdir: Path, bed: Bed, running: Running, count: int = 2, bucket: bool = False) -> None:
    """`count` replicas sharing a redis-server and one storage folder, or (`bucket`) one bucket of an object store
    in the data center (each replica's `mirror.storage` is then a folder of its own, for its own files beside the
    bucket: last known tags, the notification secret)."""
    running.redis = RedisServer(workdir / "redis", netns=bed.site.dc_netns).start()
    if bucket:
        running.store = ObjectStore(workdir / "object-store", netns=bed.site.dc_netns).start()
    for i in range(count):
        replica = workdir / f"replica{i}"
        running.mirrors.append(start_mirror(
            replica, bed, replica / "storage" if bucket else workdir / "shared-storage",
            {"redis": running.redis.address, "listen": "127.0.0.1"},
            s3=running.store.mirror_keys() if running.store else None))
    running.addresses = [str(m.cfg.mirror.listen) for m in running.mirrors]


def _replicas_bucket(workdir: Path, bed: Bed, running: Running) -> None:
    _replicas(workdir, bed, running, bucket=True)


def nginx_config(workdir: Path, port: int, bed: Bed) -> str:
    """rpardini/docker-registry-proxy's caching, reduced to one upstream: blobs and manifests by digest cached
    for 60 days, everything else for a second, a cache lock long enough for the largest blob."""
    up, repo = bed.upstream, bed.upstream.repository
    location = f"""proxy_pass https://artifactory/artifactory/api/docker/{repo}/v2/$1$is_args$args;"""
    return f"""worker_processes auto;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/client-body;
  proxy_temp_path {workdir}/proxy-temp;
  proxy_cache_path {workdir}/cache levels=1:2 keys_zone=registry:16m max_size=50g inactive=60d use_temp_path=off;
  upstream artifactory {{ server {bed.upstream_host}; keepalive 32; }}
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {bed.cert[0]};
    ssl_certificate_key {bed.cert[1]};
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host {bed.upstream_host};
    proxy_set_header Authorization "Basic {bed.basic}";
    proxy_ssl_verify on;
    proxy_ssl_trusted_certificate {up.ca_file};
    proxy_ssl_name {TLS_NAME};
    proxy_ssl_session_reuse on;
    proxy_read_timeout {LOCK_SECONDS}s;
    proxy_cache registry;
    proxy_cache_lock on;
    proxy_cache_lock_timeout {LOCK_SECONDS}s;
    proxy_cache_lock_age {LOCK_SECONDS}s;
    proxy_ignore_headers Cache-Control Expires Set-Cookie;
    proxy_cache_key $uri$http_accept;
    location ~ "^/v2/(.*/blobs/sha256:[0-9a-f]{{64}})$" {{
      proxy_cache_key $uri; proxy_cache_valid 200 60d; {location}
    }}
    location ~ "^/v2/(.*/manifests/sha256:[0-9a-f]{{64}})$" {{ proxy_cache_valid 200 60d; {location} }}
    location ~ ^/v2/(.*)$ {{ proxy_cache_valid 200 1s; {location} }}
  }}
}}
"""


def _nginx(workdir: Path, bed: Bed, running: Running) -> None:
    port = free_port()
    config = workdir / "nginx.conf"
    config.touch(mode=0o600)  # it holds the credential
    config.write_text(nginx_config(workdir, port, bed))
    launch = launcher(bed.site.dc_netns)
    nginx = running.procs["nginx"] = launch.start(["nginx", "-c", str(config), "-p", str(workdir)],
                                                   workdir / "nginx.log")
    launch.wait_for_port("127.0.0.1", port, nginx, what="nginx", log_path=workdir / "nginx.log")
    running.addresses = [f"127.0.0.1:{port}"]


STARTERS: dict[str, Callable[[Path, Bed, Running], None]] = {
    DIRECT: _direct, SEED: _seed, MIRROR: _mirror, REPLICAS: _replicas, REPLICAS_BUCKET: _replicas_bucket,
    NGINX: _nginx}
