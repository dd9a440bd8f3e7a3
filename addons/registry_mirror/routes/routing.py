"""Which upstream serves an image name, and the per-route machinery behind each.

`routes` in mirror.yaml map image-name prefixes (and containerd `ns` values) to an upstream, a repository
and credentials; every other name goes to `upstream`. Each route has its own HTTP client and token cache, so
one route's credentials and tokens never touch another's. Routes to one origin (Artifactory's repositories)
share one health and one probe: Artifactory down is every such route down, and a route to another host keeps
its own (its `failures_before_down` and `down_period` are the first such route's). A repository answering 5xx
alone counts against the origin too. Caches stay keyed by the names the registry asked for, which a route
decides, so routes cannot answer for each other either.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from registry_mirror.config.load import Config, UpstreamConfig
from registry_mirror.manifests.blob_heads import BlobHeads
from registry_mirror.manifests.service import ManifestService
from registry_mirror.manifests.tag_state import TagState
from registry_mirror.oci.registry_requests import RegistryRequest
from registry_mirror.stats.counters import Stats
from registry_mirror.upstream.client import Upstream
from registry_mirror.upstream.health import HealthProbe, UpstreamHealth
from registry_mirror.upstream.slots import TransferSlots


def choose(routes: Sequence[UpstreamConfig], default: UpstreamConfig, name: str, ns: str = "") -> UpstreamConfig:
    """The route for `name`: one that lists the request's `ns` beats one that lists none, then the longest
    prefix wins; `default` when none matches. An `ns` no route lists is ignored, never dialled."""
    best, best_rank = default, (-1, -1)
    for route in routes:
        if route.match_ns and ns not in route.match_ns:
            continue
        prefix = route.match_prefix
        if prefix and name != prefix and not name.startswith(prefix + "/"):
            continue
        rank = (1 if route.match_ns else 0, len(prefix))
        if rank > best_rank:
            best, best_rank = route, rank
    return best


def mirror_names(config: Config, repository: str, image: str) -> list[str]:
    """The names the mirror's clients pull `image` of Artifactory repository `repository` by: per route that
    asks that repository (chosen as for the stock registry's requests, which carry no `ns`), the shortest name
    it serves that image as. Candidates are the inverse of the route's prefix and library handling, kept only
    if the forward mapping gives `image` back; empty when no route serves it."""
    names = set()
    bare = image[len("library/"):] if image.startswith("library/") else image
    for route in (*config.routes, config.upstream):
        if route.repository != repository or route.match_ns:
            continue
        served = [name for name in (bare, image, f"library/{image}")
                  for name in [f"{route.match_prefix}/{name}" if route.strip_prefix else name]
                  if route.upstream_name(name) == image and choose(config.routes, config.upstream, name) is route]
        names.update(served[:1])
    return sorted(names)


@dataclass
class Route:
    cfg: UpstreamConfig
    upstream: Upstream
    health: UpstreamHealth
    blob_heads: BlobHeads  # filled by the manifest service, read and corrected by the blob path
    manifests: ManifestService
    blob_slots: TransferSlots
    prober: HealthProbe | None = None

    @property
    def url(self) -> str:
        return self.cfg.origin + self.cfg.prefix


def tag_state_file(base: str | None, index: int | str | None) -> str | None:
    """Last known tags per route: an `ns` route and the default may both know `nginx:latest`, from two
    registries. The default route keeps the configured file; route N adds `.routeN` before its suffix, a
    route of repository-path names `.repository-<key>`."""
    if base is None or index is None:
        return base
    path = Path(base)
    name = index if isinstance(index, str) else f"route{index}"
    return str(path.with_name(f"{path.stem}.{name}{path.suffix}"))


class Router:
    def __init__(self, config: Config, stats: Stats):
        self.config = config
        self.routes: dict[str, Route] = {}  # by label; the default (`upstream`) last
        # routes to one origin (Artifactory's repositories) share its health: one is down when all are
        healths: dict[str, UpstreamHealth] = {}
        for index, cfg in [*enumerate(config.routes), (None, config.upstream)]:
            upstream = Upstream(cfg, stats)
            health = healths.setdefault(cfg.origin, UpstreamHealth(cfg.failures_before_down, cfg.down_period))
            # a route of repository-path names is named by its repository: its index moves as routes are added
            suffix = f"repository-{cfg.repository}" if cfg.path_names_of else index
            known = TagState(tag_state_file(config.cache.tag_state_file, suffix))
            heads = BlobHeads(config.cache.blob_head_ttl, time.monotonic)
            self.routes[cfg.label] = Route(cfg, upstream, health, heads,
                                           ManifestService(upstream, config.cache, health, stats, known, heads,
                                                           route=cfg.label),
                                           TransferSlots(cfg.max_blob_transfers, cfg.blob_queue_timeout))

    def for_request(self, req: RegistryRequest) -> Route:
        return self.for_name(req.name, req.ns)

    def for_name(self, name: str, ns: str = "") -> Route:
        return self.routes[choose(self.config.routes, self.config.upstream, name, ns).label]

    async def start(self) -> None:
        probed: set[int] = set()
        for route in self.routes.values():
            await route.upstream.start()
            if id(route.health) not in probed:  # one probe per origin
                probed.add(id(route.health))
                route.prober = HealthProbe(route.upstream, route.health)

    async def close(self) -> None:
        for route in self.routes.values():
            if route.prober:
                route.prober.stop()
            route.manifests.known.save()
            await route.upstream.close()
