"""What the blob path needs from a route: its upstream and settings, its health, its transfer slots and its blob
HEAD cache. routes/routing.Route is the one implementation (checked below by mypy); tests give a small fake."""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from registry_mirror.config.load import UpstreamConfig
from registry_mirror.manifests.blob_heads import BlobHeads
from registry_mirror.upstream.client import Upstream
from registry_mirror.upstream.health import UpstreamHealth
from registry_mirror.upstream.slots import TransferSlots


@runtime_checkable  # tests check that the fakes they use still have what the blob path reads
class BlobRoute(Protocol):
    @property
    def cfg(self) -> UpstreamConfig: ...  # timeouts, resumes

    @property
    def upstream(self) -> Upstream: ...

    @property
    def health(self) -> UpstreamHealth: ...

    @property
    def blob_slots(self) -> TransferSlots: ...

    @property
    def blob_heads(self) -> BlobHeads: ...  # sizes a HEAD gave; a verified transfer corrects them


if TYPE_CHECKING:
    from registry_mirror.routes.routing import Route

    def _route_is_a_blob_route(route: Route) -> BlobRoute:
        return route
