"""The parts of a started mirror: started together from the configuration and stopped by the exit stack, and what
acts on several of them: forgetting an image (storage, every route's caches, the other replicas) and dropping a
tag deleted upstream."""
import asyncio
import contextlib
import logging
from types import SimpleNamespace

import pytest

from devtools.ports import free_port
from registry_mirror.config.load import CacheConfig, parse
from registry_mirror.expiry.forget import Target
from registry_mirror.expiry.last_pulls import LastPulls
from registry_mirror.expiry.passes import Expiry
from registry_mirror.proxy.services import Services, start_services
from registry_mirror.stats.counters import Stats
from registry_mirror.storage.inventory import Image, inventory
from registry_mirror.storage.store import FolderStore
from tests.unit.support.storage import Storage


async def accepts(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port`."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


def config(tmp_path, **sections):
    # port 9 (discard) on loopback: nothing is asked of the upstream here
    return parse({"upstream": {"url": "http://127.0.0.1:9", "repository": "docker-local", "anonymous": True},
                  "mirror": {"storage": str(tmp_path / "storage"), "tls": False},
                  "cache": {"spool_dir": str(tmp_path / "spool"), **sections.pop("cache", {})}, **sections},
                 base_dir=tmp_path)


async def test_every_part_starts_from_the_configuration_and_the_exit_stack_stops_them(tmp_path):
    cfg = config(tmp_path, routes=[{"prefix": "team-a"}])
    async with contextlib.AsyncExitStack() as stops:
        services = await start_services(cfg, Stats(), {"logs": str(tmp_path)}, stops)
        assert services.config is cfg and list(services.router.routes) == ["routes[0]", "upstream"]
        assert await accepts(services.blobs.port)  # the blob endpoint, where the registry reaches the addon
        assert services.disk.paths == {"storage": str(tmp_path / "storage"), "spool": str(tmp_path / "spool"),
                                       "logs": str(tmp_path)}
        assert services.replicas is None and services.webhooks is None  # neither scale-out nor webhooks asked for
        assert all(route.manifests.on_tag_gone is None for route in services.router.routes.values())
    assert not await accepts(services.blobs.port)


async def test_webhooks_and_forgetting_deleted_tags_start_only_when_configured(tmp_path):
    port = free_port()
    cfg = config(tmp_path, cache={"forget_deleted_tags": True},
                 webhooks={"listen": f"127.0.0.1:{port}", "secret": "fake-webhook-secret"})
    async with contextlib.AsyncExitStack() as stops:
        services = await start_services(cfg, Stats(), {}, stops)
        assert await accepts(port)
        assert all(route.manifests.on_tag_gone == services.tag_gone for route in services.router.routes.values())
    assert not await accepts(port)


class Caches:
    """A route's manifest caches: what they were told to forget, and how many entries each call dropped."""
    def __init__(self, entries: int):
        self.entries, self.forgotten = entries, []

    def forget(self, name, tag=None, digests=frozenset()):
        self.forgotten.append((name, tag, digests))
        return self.entries


class Replicas:
    """The other replicas as redis tells them: how many heard, and what they were told."""
    def __init__(self, heard: int | None):
        self.heard, self.told = heard, []

    async def publish(self, repository, tag=None, digests=()):
        self.told.append((repository, tag, frozenset(digests)))
        return self.heard

    def publish_soon(self, repository, tag=None, digests=()):
        self.told.append((repository, tag, frozenset(digests)))


def started(tmp_path, replicas=None):
    """Services over a real storage (team/app:1.0 and :2.0 sharing a base, team/web:1.0) and two routes' caches."""
    storage = Storage(FolderStore(tmp_path / "storage"))
    base = storage.blob(5000)
    images = {"old": storage.image("team/app", [base, storage.blob(3000)], tag="1.0"),
              "new": storage.image("team/app", [base, storage.blob(2000)], tag="2.0"),
              "web": storage.image("team/web", [base], tag="1.0")}
    routes = {"routes[0]": SimpleNamespace(manifests=Caches(1)), "upstream": SimpleNamespace(manifests=Caches(2))}
    router = SimpleNamespace(routes=routes, for_name=lambda name: routes["upstream"])
    expiry = Expiry(storage.store, 7 * 86400, None, LastPulls(FolderStore(tmp_path / "pulls"), "test"), grace=0)
    services = Services(config=SimpleNamespace(cache=CacheConfig()), router=router, disk=None, blobs=None,
                        expiry=expiry, scrub=None, replicas=replicas)
    return services, storage, images, routes


async def test_a_dry_run_forget_says_what_would_go_and_changes_nothing(tmp_path):
    services, storage, images, routes = started(tmp_path, replicas := Replicas(heard=2))
    before = storage.tree()
    done = await services.forget(Target("team/app", tag="1.0"), dry_run=True)
    assert done["images"] == [f"team/app@{images['old']}"] and done["dry_run"] is True
    assert done["blobs"] == 3  # its manifest, config and own layer; the base other images use stays
    assert storage.tree() == before and done["cache_entries"] == 0
    assert routes["upstream"].manifests.forgotten == [] and replicas.told == []


async def test_a_forget_removes_the_image_from_storage_every_routes_caches_and_tells_the_others(tmp_path):
    services, storage, images, routes = started(tmp_path, replicas := Replicas(heard=2))
    done = await services.forget(Target("team/app", tag="1.0"))
    left = inventory(storage.store).images
    assert Image("team/app", images["old"]) not in left
    assert {Image("team/app", images["new"]), Image("team/web", images["web"])} <= set(left)
    told = ("team/app", "1.0", frozenset({images["old"]}))
    assert [r.manifests.forgotten for r in routes.values()] == [[told], [told]] and done["cache_entries"] == 3
    assert replicas.told == [told] and done["other_replicas"] == 2
    assert done["replicas"] == "told 2 other replicas to drop it from their caches"
    assert done["target"] == "team/app:1.0" and done["images"] == [f"team/app@{images['old']}"]


async def test_a_forget_without_replicas_acts_here_only(tmp_path):
    services, _, images, routes = started(tmp_path)
    done = await services.forget(Target("team/web"))
    assert done["images"] == [f"team/web@{images['web']}"] and done["cache_entries"] == 3
    assert done["other_replicas"] is None and done["replicas"] is None
    assert services.forgotten_elsewhere(SimpleNamespace(repository="team/app", tag=None,
                                                        digests=frozenset())) == 3  # another replica's forget


async def test_a_tag_deleted_upstream_leaves_the_storage_and_the_caches_and_the_image_stays(tmp_path, caplog):
    services, storage, images, routes = started(tmp_path, replicas := Replicas(heard=1))
    with caplog.at_level(logging.WARNING, logger="registry_mirror.proxy.services"):
        await services.tag_gone("team/app", "1.0")
    inv = inventory(storage.store)
    assert "1.0" not in inv.repositories["team/app"].tags and Image("team/app", images["old"]) in inv.images
    assert routes["upstream"].manifests.forgotten == [("team/app", "1.0", frozenset())]
    assert replicas.told == [("team/app", "1.0", frozenset())]
    assert "team/app:1.0 is not found upstream: the mirror's tag is removed" in caplog.text


@pytest.mark.parametrize("tag,digest,stored,caches_forget", [
    ("1.0", "old", True, True),
    ("1.0", "new", False, False),  # deleted and pushed again since: the tag names another image, which stays
    ("9.9", None, False, True),  # not in the storage: the caches may still know it
])
async def test_drop_tag_acts_only_while_the_tag_names_the_digest(tmp_path, tag, digest, stored, caches_forget):
    services, storage, images, routes = started(tmp_path)
    assert await services.drop_tag("team/app", tag, images.get(digest)) is stored
    assert ("1.0" in inventory(storage.store).repositories["team/app"].tags) is not stored
    assert bool(routes["upstream"].manifests.forgotten) is caches_forget
    assert routes["routes[0]"].manifests.forgotten == []  # the route that serves the name, only
