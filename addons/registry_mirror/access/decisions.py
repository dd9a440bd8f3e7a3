"""Who may pull what, as Artifactory last said: decisions cached per (user, a keyed hash of the secret, repository).

The secret itself is never kept: its HMAC under a key that lives only in this process's memory, so a wrong password
never meets a cached "allowed", and nothing kept is worth stealing. An "allowed" is reused for `ttl` seconds, and
while Artifactory is unreachable for `stale` seconds; a lasting refusal (the credential, or no read permission) for
`ttl` only, in a cache of its own, so that refusals (a guesser's) never push out the "allowed" an outage needs. Ages
on the monotonic clock: a clock step neither expires nor prolongs a decision.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import TTLCache

MAX_DECISIONS = 100_000  # (user, secret, repository) triples held of each kind; the least recent go first


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str  # said to the client and in the audit line when refused
    at: float  # monotonic
    bad_credential: bool = False  # refused for the credential itself, not for the repository


@dataclass(frozen=True)
class Verdict:
    """What Artifactory said: allowed, refused (with why), or nothing (unreachable: `reachable` False). A refusal
    that is not `lasting` (an image not there yet, a name the mirror cannot ask about) is not cached."""
    allowed: bool
    reason: str
    reachable: bool = True
    bad_credential: bool = False
    lasting: bool = True


Key = tuple[str, bytes, str]


class Decisions:
    def __init__(self, ttl: float, stale: float, clock: Callable[[], float] = time.monotonic,
                 maxsize: int = MAX_DECISIONS):
        self.ttl, self.stale = ttl, stale
        self._clock = clock
        self._secret_key = secrets.token_bytes(32)
        held = max(ttl, stale, 1e-9)
        self._allowed: TTLCache[Key, Decision] = TTLCache(maxsize, ttl=held, timer=clock)
        self._refused: TTLCache[Key, Decision] = TTLCache(maxsize, ttl=max(ttl, 1e-9), timer=clock)
        self._good: TTLCache[tuple[str, bytes], float] = TTLCache(maxsize, ttl=held, timer=clock)

    def key(self, user: str, secret: str, repository: str) -> Key:
        """`repository` "" stands for the credential itself (a login)."""
        return user, hmac.new(self._secret_key, secret.encode(), hashlib.sha256).digest(), repository

    def fresh(self, key: Key) -> Decision | None:
        decision = self._allowed.get(key) or self._refused.get(key)
        return decision if decision and self._clock() - decision.at < self.ttl else None

    def stale_allowed(self, key: Key) -> Decision | None:
        """An "allowed" within `stale`: what holds while Artifactory cannot be asked."""
        decision = self._allowed.get(key)
        return decision if decision and self._clock() - decision.at < self.stale else None

    def credential_good(self, key: Key) -> bool:
        """Whether Artifactory accepted this user's secret lately (any "allowed" for it)."""
        return key[:2] in self._good

    def record(self, key: Key, verdict: Verdict) -> Decision:
        decision = Decision(verdict.allowed, verdict.reason, self._clock(), verdict.bad_credential)
        if not verdict.reachable:
            return decision
        if verdict.allowed:
            self._refused.pop(key, None)
            if self.ttl or self.stale:
                self._allowed[key] = decision
                self._good[key[:2]] = decision.at
        elif verdict.lasting:
            self._allowed.pop(key, None)  # revoked: no stale "allowed" either
            if self.ttl:
                self._refused[key] = decision
        return decision

    def __len__(self) -> int:
        return len(self._allowed) + len(self._refused)
