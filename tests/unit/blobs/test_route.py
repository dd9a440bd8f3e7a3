"""What the blob path needs from a route (blobs/route.BlobRoute): the real route has it, the tests' fake too, and
the HEAD cache the blob path reads is the one its manifest service fills."""
import pytest

from registry_mirror.blobs.route import BlobRoute
from registry_mirror.config.load import parse
from registry_mirror.routes.routing import Router
from registry_mirror.stats.counters import Stats
from tests.unit.support.routes import FakeRoute

CONFIG = {"upstream": {"url": "https://art.example.com", "repository": "docker-local", "username": "u",
                       "password": "p"},
          "routes": [{"prefix": "team", "url": "https://other.example.com", "repository": "team-local",
                      "username": "u2", "password": "p2"}]}


@pytest.fixture
def router() -> Router:
    return Router(parse(CONFIG), Stats())


def test_every_route_the_router_builds_is_a_blob_route(router):
    assert len(router.routes) == 2
    assert all(isinstance(route, BlobRoute) for route in router.routes.values())


def test_the_tests_fake_route_is_a_blob_route():
    assert isinstance(FakeRoute(upstream=None), BlobRoute)


def test_a_route_without_a_head_cache_is_not_one():
    class Partial:
        cfg = upstream = health = blob_slots = None
    assert not isinstance(Partial(), BlobRoute)


def test_the_blob_path_reads_the_heads_its_manifest_service_fills(router):
    route = router.for_name("team/app")
    assert route.manifests.blob_heads is route.blob_heads
    route.manifests.blob_heads.put("team/app", "sha256:" + "a" * 64, {"Content-Length": "42"})
    assert route.blob_heads.size("team/app", "sha256:" + "a" * 64) == 42


def test_each_route_has_its_own_heads(router):
    first, second = router.routes.values()
    assert first.blob_heads is not second.blob_heads
