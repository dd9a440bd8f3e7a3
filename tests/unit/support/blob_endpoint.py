"""A blob endpoint on 127.0.0.1 for unit tests: one route whose upstream is a stand-in with `open`."""
from registry_mirror.blobs.server import BlobServer
from registry_mirror.config.load import CacheConfig
from registry_mirror.stats.counters import Stats
from registry_mirror.upstream.slots import TransferSlots

from .routes import UNREACHABLE, FakeRoute, FakeRouter, SizedHeads, upstream_config


async def started_server(tmp_path, upstream, storage=None, request_timeout: float = 3600,
                         resumes: int = 0, head_size: int | None = None,
                         slots: TransferSlots | None = None) -> BlobServer:
    """Timeouts no test can reach unless its upstream never answers; `resumes` blob resumes; `head_size`: the
    size a cached HEAD of every blob gave (None: no HEAD cached); `slots`: the route's transfer slots."""
    route = FakeRoute(upstream, upstream_config(request_timeout, blob_resumes=resumes),
                      blob_slots=slots or TransferSlots(256, UNREACHABLE), blob_heads=SizedHeads(head_size))
    server = BlobServer(FakeRouter(route), CacheConfig(spool_dir=str(tmp_path / "spool")), Stats(), UNREACHABLE,
                        storage=storage)
    await server.start()
    return server
