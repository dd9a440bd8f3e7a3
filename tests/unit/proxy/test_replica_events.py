"""Cache invalidations between replicas: the message's grammar, and a real redis-server for the channel itself
(a replica hears the others, never itself; junk is counted and skipped; a lost subscription is taken up again)."""
import asyncio
import json
import shutil
from types import SimpleNamespace

import pytest
import redis.asyncio as aioredis

from devtools.ports import free_port
from devtools.redis_server import RedisServer
from registry_mirror.config.load import Address, CacheConfig, ScaleConfig
from registry_mirror.expiry.forget import Target
from registry_mirror.proxy.replica_events import (
    CHANNEL,
    Invalidation,
    ReplicaEvents,
    decode,
    encode,
    forgotten_digests,
    told_text,
)
from registry_mirror.proxy.services import Services
from registry_mirror.stats.counters import Stats
from registry_mirror.stats.views import prometheus_text, render_html
from tests.unit.support.waits import until

SHA = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64
A, B = "replica http://10.0.0.1:8083", "replica http://10.0.0.2:8083"


@pytest.mark.parametrize("inv", [
    Invalidation(A, "team/app"),
    Invalidation(A, "team/app", "1.0"),
    Invalidation(A, "registry/team/app", "v1.2-rc_3", frozenset({SHA, OTHER})),
    Invalidation("the forget command on host1", "app", None, frozenset({SHA})),
])
def test_an_invalidation_survives_the_channel(inv):
    assert decode(encode(inv)) == inv
    assert decode(encode(inv).encode()) == inv  # redis hands bytes over


GOOD = {"from": A, "repository": "team/app", "tag": "1.0", "digests": [SHA]}


@pytest.mark.parametrize("data", [
    b"", b"junk", b"\xff\xfe", b"null", b"42", b"[]", b'"team/app"',
    json.dumps({**GOOD, "from": ""}), json.dumps({k: v for k, v in GOOD.items() if k != "from"}),
    json.dumps({**GOOD, "repository": "Team/App"}), json.dumps({**GOOD, "repository": ["team/app"]}),
    json.dumps({**GOOD, "tag": ""}), json.dumps({**GOOD, "tag": "../1"}), json.dumps({**GOOD, "tag": 1}),
    json.dumps({**GOOD, "digests": SHA}), json.dumps({**GOOD, "digests": ["sha256:short"]}),
    json.dumps({**GOOD, "digests": [None]}), json.dumps({k: v for k, v in GOOD.items() if k != "digests"}),
])
def test_anything_else_on_the_channel_is_no_invalidation(data):
    assert decode(data) is None


def test_a_forget_drops_the_images_it_removed_and_the_digest_it_named():
    assert forgotten_digests(Target("team/app", tag="1.0"), [SHA]) == {SHA}
    assert forgotten_digests(Target("team/app", digest=OTHER), []) == {OTHER}
    assert forgotten_digests(Target("team/app"), iter([SHA, OTHER])) == {SHA, OTHER}


def test_the_answer_says_how_many_heard_or_how_long_the_others_may_answer():
    assert told_text(1, CacheConfig()) == "told 1 other replica to drop it from their caches"
    assert told_text(0, CacheConfig()).startswith("told 0 other replicas")
    text = told_text(None, CacheConfig(tag_ttl=45, max_stale=3600))
    assert "could not be told" in text and "cache.tag_ttl (45 s)" in text and "cache.max_stale (3600 s)" in text


async def test_the_invalidations_on_the_stats_page_and_in_metrics():
    events = ReplicaEvents(ScaleConfig(redis=Address("127.0.0.1", 6379)), A, lambda inv: 0)
    events.received, events.entries_dropped, events.ignored, events.publish_failures = 3, 7, 1, 2
    snap = Stats().snapshot()
    snap["scale"] = {"redis": "127.0.0.1:6379", "this_replica": A, "redis_errors": 0, "last_redis_error": "",
                     "invalidations": events.snapshot()}
    page = render_html(snap)
    assert 'id="invalidations-received">3' in page and "7 cache entries dropped" in page and ">no<" in page
    metrics = prometheus_text(snap).decode()
    for line in ("mirror_replica_invalidations_received_total 3.0", "mirror_replica_invalidations_subscribed 0.0",
                 "mirror_replica_invalidation_cache_entries_dropped_total 7.0",
                 "mirror_replica_invalidations_ignored_total 1.0",
                 "mirror_replica_invalidation_publish_failures_total 2.0"):
        assert line in metrics
    await events.close()


async def test_a_forget_with_redis_away_still_acts_here_and_says_the_others_were_not_told():
    dropped = []
    router = SimpleNamespace(routes={"upstream": SimpleNamespace(
        manifests=SimpleNamespace(forget=lambda *args: dropped.append(args) or 3))})
    removed = SimpleNamespace(image=SimpleNamespace(repository="team/app", digest=SHA))

    async def forget(target, dry_run):
        return SimpleNamespace(removals=[removed], blobs={OTHER: 10}, bytes_freed=10)
    services = Services(SimpleNamespace(cache=CacheConfig()), router, None, None,
                              SimpleNamespace(forget=forget), None)

    # nothing listens on that port: refused at once
    services.replicas = ReplicaEvents(ScaleConfig(redis=Address("127.0.0.1", free_port())), A, lambda inv: 0)
    try:
        done = await services.forget(Target("team/app", tag="1.0"))
    finally:
        await services.replicas.close()
    assert dropped == [("team/app", "1.0", frozenset({SHA}))] and done["cache_entries"] == 3
    assert done["images"] == [f"team/app@{SHA}"] and done["other_replicas"] is None
    assert "could not be told" in done["replicas"] and services.replicas.publish_failures == 1


@pytest.fixture
def redis_server(tmp_path):
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed: apt-get install redis-server (./run.sh test installs it)")
    server = RedisServer(tmp_path / "redis")
    try:
        yield server.start()
    finally:
        server.stop()


class Replica:
    """A ReplicaEvents whose caches are a list of what it was told to drop."""
    def __init__(self, server: RedisServer, me: str):
        self.dropped: list[Invalidation] = []
        scale = ScaleConfig(redis=Address(server.host, server.port))
        self.events = ReplicaEvents(scale, me, self.drop, retry_seconds=(0.05, 0.2))

    def drop(self, inv: Invalidation) -> int:
        self.dropped.append(inv)
        return 2


async def test_each_replica_hears_the_others_forgets_never_its_own_and_skips_junk(redis_server):
    a, b = Replica(redis_server, A), Replica(redis_server, B)
    raw = aioredis.Redis(host=redis_server.host, port=redis_server.port)
    for each in (a, b):
        each.events.start()
    try:
        await until(lambda: a.events.subscribed and b.events.subscribed, "both replicas subscribed")
        assert await a.events.publish("team/app", "1.0", [SHA]) == 1  # b; a's own subscription is not counted
        await until(lambda: b.dropped, "b told")
        assert b.dropped == [Invalidation(A, "team/app", "1.0", frozenset({SHA}))]
        assert (b.events.received, b.events.entries_dropped) == (1, 2)

        assert await raw.publish(CHANNEL, b"junk") == 2
        assert await b.events.publish("team/app") == 1
        await until(lambda: a.dropped, "a told")
        assert a.dropped == [Invalidation(B, "team/app")] and a.events.ignored == b.events.ignored == 1
        assert a.events.received == 1 and b.events.received == 1  # each heard the other once, itself never
    finally:
        await raw.aclose()
        for each in (a, b):
            await each.events.close()


async def test_a_lost_subscription_is_taken_up_again_and_a_publish_meanwhile_fails_softly(redis_server, caplog):
    with caplog.at_level("WARNING", logger="registry_mirror.proxy.replica_events"):
        a, b = Replica(redis_server, A), Replica(redis_server, B)
        for each in (a, b):
            each.events.start()
        try:
            await until(lambda: a.events.subscribed and b.events.subscribed, "both replicas subscribed")
            redis_server.stop()
            await until(lambda: not b.events.subscribed, "b noticing redis gone")
            assert await a.events.publish("team/app", "1.0") is None
            assert a.events.publish_failures == 1 and "publish" in a.events.last_error
            redis_server.start()  # the same port
            await until(lambda: a.events.subscribed and b.events.subscribed, "both subscribed again")
            assert await a.events.publish("team/app", "1.0") == 1
            await until(lambda: b.dropped, "b told after the outage")
        finally:
            for each in (a, b):
                await each.events.close()
    messages = [r.getMessage() for r in caplog.records]
    assert 1 <= sum("not subscribed to" in m for m in messages) <= 2  # once per replica and outage, not per retry
    assert any("subscribed again" in m for m in messages)


async def test_the_forget_command_without_a_running_mirror_still_tells_the_replicas(redis_server, tmp_path,
                                                                                   folder_storage, capsys):
    from registry_mirror.cli.commands import main
    from tests.unit.expiry.test_forget import two_tags_and_a_shared_base
    storage = folder_storage
    _, old, _, _ = two_tags_and_a_shared_base(storage)
    config = tmp_path / "mirror.yaml"
    config.write_text(f"upstream:\n  url: https://art.example.com\n  repository: docker-local\n  anonymous: true\n"
                      f"mirror:\n  storage: {storage.root}\nrewriter:\n  listen: 127.0.0.1:{free_port()}\n"
                      f"scale:\n  redis: {redis_server.address}\n  listen: 127.0.0.1\n")

    other = Replica(redis_server, B)
    other.events.start()
    try:
        await until(lambda: other.events.subscribed, "the other replica subscribed")
        assert await asyncio.to_thread(main, ["--config", str(config), "forget", "team/app:1.0"]) == 0
        await until(lambda: other.dropped, "the other replica told")
        told = other.dropped
    finally:
        await other.events.close()
    assert [(inv.repository, inv.tag, inv.digests) for inv in told] == [("team/app", "1.0", frozenset({old}))]
    out = capsys.readouterr().out
    assert "no mirror answers at" in out and "told 1 other replica to drop it" in out
