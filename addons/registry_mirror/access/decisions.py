"""Who may pull what, as Artifactory last said: decisions cached per (user, a keyed hash of the secret, repository).

The secret itself is never kept: its HMAC under a key that lives only in this process's memory, so a wrong password
never meets a cached "allowed", and nothing kept is worth stealing. An "allowed" is reused for `ttl` seconds, and
while Artifactory is unreachable for `stale` seconds; a refusal for `ttl` only. Ages on the monotonic clock: a
clock step neither expires nor prolongs a decision.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import TTLCache

MAX_DECISIONS = 100_000  # (user, secret, repository) triples held; the least recent go first


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str  # said to the client and in the audit line when refused
    at: float  # monotonic
    bad_credential: bool = False  # refused for the credential itself, not for the repository


@dataclass(frozen=True)
class Verdict:
    """What Artifactory said: allowed, refused (with why), or nothing (unreachable: `reachable` False)."""
    allowed: bool
    reason: str
    reachable: bool = True
    bad_credential: bool = False


Key = tuple[str, bytes, str]


class Decisions:
    def __init__(self, ttl: float, stale: float, clock: Callable[[], float] = time.monotonic,
                 maxsize: int = MAX_DECISIONS):
        self.ttl, self.stale = ttl, stale
        self._clock = clock
        self._secret_key = secrets.token_bytes(32)
        self._cache: TTLCache[Key, Decision] = TTLCache(maxsize, ttl=max(ttl, stale, 1e-9), timer=clock)

    def key(self, user: str, secret: str, repository: str) -> Key:
        """`repository` "" stands for the credential itself (a login)."""
        return user, hmac.new(self._secret_key, secret.encode(), hashlib.sha256).digest(), repository

    def fresh(self, key: Key) -> Decision | None:
        decision = self._cache.get(key)
        return decision if decision and self._clock() - decision.at < self.ttl else None

    def stale_allowed(self, key: Key) -> Decision | None:
        """An "allowed" within `stale`: what holds while Artifactory cannot be asked."""
        decision = self._cache.get(key)
        return decision if decision and decision.allowed and self._clock() - decision.at < self.stale else None

    def record(self, key: Key, verdict: Verdict) -> Decision:
        decision = Decision(verdict.allowed, verdict.reason, self._clock(), verdict.bad_credential)
        if verdict.reachable and (self.ttl or (verdict.allowed and self.stale)):
            self._cache[key] = decision
        return decision

    def __len__(self) -> int:
        return len(self._cache)
