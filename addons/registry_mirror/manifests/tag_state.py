"""The last known answer for each tag, kept beyond the tag TTL and across restarts, for stale-if-error.

A small JSON file (`cache.tag_state_file`), rewritten whole (temp file + rename, so never half-written) at
most once a second. It holds digests and media types, never a credential.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from cachetools import LRUCache

log = logging.getLogger(__name__)

TagKey = tuple[str, str, frozenset]  # repository name, tag, accepted media types


@dataclass(frozen=True)
class KnownTag:
    digest: str
    content_type: str
    length: int
    fetched_at: float  # wall-clock time, so that ages survive restarts


def key_text(key: TagKey) -> str:
    name, tag, accepts = key
    return f"{name}:{tag}|{','.join(sorted(accepts))}"


def key_from_text(text: str) -> TagKey:
    ref, _, accepts = text.partition("|")
    name, _, tag = ref.rpartition(":")
    return name, tag, frozenset(a for a in accepts.split(",") if a)


class TagState:
    def __init__(self, path: str | None, maxsize: int = 100_000, clock: Callable[[], float] = time.time):
        self.path = Path(path) if path else None
        self._clock = clock  # wall-clock, like `fetched_at`
        self.tags: LRUCache = LRUCache(maxsize=maxsize)
        self._save_scheduled = False
        self._load()

    def get(self, key: TagKey) -> KnownTag | None:
        return self.tags.get(key)

    def put(self, key: TagKey, known: KnownTag) -> None:
        if self.tags.get(key) == known:
            return
        self.tags[key] = known
        self._schedule_save()

    def forget(self, name: str, tag: str | None = None, digests: frozenset[str] = frozenset()) -> set[str]:
        """Drop the last known digests of `name:tag` (without a tag: every tag of `name`, or only those naming
        `digests` when given); the digests they named."""
        keys = [key for key in self.tags if key[0] == name and (tag is None or key[1] == tag)
                and (tag is not None or not digests or self.tags[key].digest in digests)]
        named = {self.tags.pop(key).digest for key in keys}
        if keys:
            self._schedule_save()
        return named

    def now(self) -> float:
        """The time to stamp a tag fetched now with (`fetched_at`)."""
        return self._clock()

    def age(self, known: KnownTag) -> float:
        return max(0.0, self._clock() - known.fetched_at)

    def _load(self) -> None:
        if not self.path or not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text())
            for text, fields in data.get("tags", {}).items():
                self.tags[key_from_text(text)] = KnownTag(**fields)
        except (OSError, ValueError, TypeError, AttributeError) as e:  # AttributeError: JSON of another shape
            log.warning("ignoring the tag state file %s (%s); it is rewritten as tags are fetched", self.path, e)

    def _schedule_save(self) -> None:
        if not self.path or self._save_scheduled:
            return
        self._save_scheduled = True
        asyncio.get_running_loop().call_later(1.0, self.save)  # puts come from the event loop's fetches

    def save(self) -> None:
        self._save_scheduled = False
        if not self.path:
            return
        data = {"tags": {key_text(k): asdict(v) for k, v in self.tags.items()}}
        tmp = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.path)
        except OSError as e:
            log.warning("cannot write the tag state file %s: %s", self.path, e)
