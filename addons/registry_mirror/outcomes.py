"""How an answer to the registry came about: one vocabulary for the manifest path, the blob path, the addon and stats.

A StrEnum: the value is what the X-Mirror-Cache header, the log lines and the stats (lower-cased) show.
"""
from __future__ import annotations

import enum


class Outcome(enum.StrEnum):
    HIT = "HIT"  # from the mirror's caches or storage: nothing went upstream
    MISS = "MISS"  # fetched from the upstream for this request
    COALESCED = "COALESCED"  # joined a fetch another request had started
    PEER = "PEER"  # read from a peer replica's fetch in progress
    STALE = "STALE"  # the upstream failed: the last good answer, past its TTL
    ERROR = "ERROR"  # stats only: an answer with status >= 400
    LOCAL = "LOCAL"  # answered by the mirror itself: the ping
    REFUSED = "REFUSED"  # refused by the mirror with a registry-style error, never forwarded

    @property
    def cached(self) -> bool:
        """Answered without the upstream (mitmweb marks these flows)."""
        return self in (Outcome.HIT, Outcome.STALE)
