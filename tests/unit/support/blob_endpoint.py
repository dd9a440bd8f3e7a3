"""A blob endpoint on 127.0.0.1 for unit tests: one route whose upstream is a stand-in with `open`."""
from types import SimpleNamespace

from registry_mirror.blobs.server import BlobServer
from registry_mirror.config.load import CacheConfig
from registry_mirror.stats.counters import Stats
from registry_mirror.upstream.health import UpstreamHealth
from registry_mirror.upstream.slots import TransferSlots


async def started_server(tmp_path, upstream, storage=None, request_timeout: float = 3600,
                         resumes: int = 0, head_size: int | None = None,
                         slots: TransferSlots | None = None) -> BlobServer:
    """Timeouts no test can reach unless its upstream never answers; `resumes` blob resumes; `head_size`: the
    size a cached HEAD of every blob gave (None: no HEAD cached); `slots`: the route's transfer slots."""
    route = SimpleNamespace(cfg=SimpleNamespace(request_timeout=request_timeout, blob_stall_timeout=3600,
                                                blob_resumes=resumes), upstream=upstream, health=UpstreamHealth(),
                            blob_slots=slots or TransferSlots(256, 3600),
                            manifests=SimpleNamespace(blob_size=lambda name, digest: head_size))
    server = BlobServer(SimpleNamespace(for_request=lambda req: route, routes={}),
                        CacheConfig(spool_dir=str(tmp_path / "spool")), Stats(), 3600, storage=storage)
    await server.start()
    return server
