"""Redis trouble: a replica fetches on its own for REDIS_RETRY_SECONDS on the coordinator's timer, then asks
redis again."""
import asyncio

from redis.exceptions import ConnectionError as RedisConnectionError

from registry_mirror.blobs.peers import REDIS_RETRY_SECONDS, PeerCoordinator
from registry_mirror.config.load import Address, ScaleConfig
from tests.unit.support.clocks import Clock

DIGEST = "sha256:" + "a" * 64


class DownRedis:
    """Counts what it is asked; every answer is a refused connection."""
    def __init__(self):
        self.asked = 0

    async def _refuse(self, *args, **kwargs):
        self.asked += 1
        raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    set = get = eval = _refuse

    async def aclose(self):
        pass


async def test_after_a_redis_failure_the_replica_fetches_on_its_own_until_the_retry_window_ends():
    clock = Clock()
    peers = PeerCoordinator(ScaleConfig(redis=Address("127.0.0.1", 6379), advertise="10.0.0.1"), 10, timer=clock)
    await peers._redis.aclose()  # never connected: the test's stand-in answers instead
    peers._redis = redis = DownRedis()
    peers.announce(5000, "key")
    assert await peers.claim(DIGEST) is None  # lead: fetch from the upstream
    assert (redis.asked, peers.redis_errors) == (1, 1) and "Connection refused" in peers.last_error
    clock.now = REDIS_RETRY_SECONDS - 0.1
    assert await peers.claim(DIGEST) is None
    async with peers.leading(DIGEST):
        pass
    await asyncio.gather(*peers._releases)  # the release runs in the background
    assert (redis.asked, peers.redis_errors) == (1, 1)  # neither the claim nor the release asked redis
    clock.now = REDIS_RETRY_SECONDS
    assert await peers.claim(DIGEST) is None
    assert (redis.asked, peers.redis_errors) == (2, 2)  # asked again, and the window starts over
    await peers.close()
