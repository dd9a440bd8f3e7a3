"""Stored blobs checked against their digests while the mirror runs; a corrupt one is moved aside.

Two paths take a stored blob to a client, and both are checked:
- the blob endpoint reads it for a repository that has no link to it (blobs/stored.py): `check_served` hashes it
  as it is sent, the last byte held until the verdict, so a mismatch ends the answer short and the registry
  stores nothing;
- the registry serves the repositories that link it from its storage itself, and those bytes never pass the
  addon: after the registry's notification of such a pull, `pulled` queues its data file for a check in the
  background, at most once per digest per `mirror.verify_interval`, one file at a time in a thread (the I/O of
  one reader).

A mismatch (or a file that cannot be read) is moved aside (storage/quarantine.py), counted and logged; the pull that
got the bad bytes fails (clients check digests), and the next pull of the digest, in any repository, finds no
data and fetches a good copy from the upstream.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from registry_mirror.blobs.stored import hash_as_sent
from registry_mirror.blobs.transfers import Transfer
from registry_mirror.oci.registry_requests import DIGEST_RE
from registry_mirror.storage import quarantine
from registry_mirror.storage.verify import Checked, verify_stored

log = logging.getLogger(__name__)

MAX_QUEUED = 10_000  # files waiting for a check; beyond, a pull queues nothing (the next one will)
MAX_REMEMBERED = 200_000  # digests whose last check is remembered; beyond, the oldest are forgotten


def pulled_digests(envelope: object) -> list[str]:
    """The digests of the manifests and blobs the registry sent (GET pulls; a HEAD reads no bytes) in a
    notification envelope (the format expiry/last_pulls.py reads); junk is skipped."""
    events = envelope.get("events") if isinstance(envelope, dict) else None
    found = []
    for event in events if isinstance(events, list) else ():
        if not isinstance(event, dict) or event.get("action") != "pull":
            continue
        target = given if isinstance(given := event.get("target"), dict) else {}
        request = asked if isinstance(asked := event.get("request"), dict) else {}
        digest = target.get("digest")
        if str(request.get("method", "GET")).upper() == "GET" and isinstance(digest, str) \
                and DIGEST_RE.fullmatch(digest):
            found.append(digest)
    return found


@dataclass
class Mismatch:
    digest: str
    at: float  # wall-clock time
    found: str  # the digest of the bytes read, or why they could not be read
    by: str  # "served": the blob endpoint sending it; "pulled": the check after the registry's pull
    moved_to: str  # "" when it was gone or replaced by then


@dataclass
class VerifierState:
    verified: int = 0  # stored files whose bytes matched their digest
    verified_bytes: int = 0
    mismatches: int = 0  # checks that found other bytes, or none readable
    quarantined: int = 0  # files moved aside (a file two checks found bad at once is moved once)
    skipped: int = 0  # pulls not queued: the queue was full
    last_mismatch: Mismatch | None = None


class BlobVerifier:
    def __init__(self, storage: Path | None, interval: float,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        """`storage`: the registry's `rootdirectory` (None: nothing is stored, nothing checked); `clock` times
        the interval, `wall` dates mismatches."""
        self.root, self.interval, self._clock, self._wall = storage, interval, clock, wall
        self.state = VerifierState()
        self._checked: OrderedDict[str, float] = OrderedDict()  # digest -> when last checked or queued
        self._queue: deque[str] = deque()
        self._task: asyncio.Task | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False

    @property
    def _storage(self) -> Path:
        """The storage, for the checks of files read from it: without one there are none (`pulled` queues none)."""
        assert self.root is not None, "a stored file is checked without a storage"
        return self.root

    def pulled(self, digests: Iterable[str]) -> int:
        """The registry sent these digests from its storage (or is about to store them): each data file not
        checked within the interval is queued for a check; the number queued."""
        if self.root is None or self._closed:
            return 0
        now, queued = self._clock(), 0
        for digest in digests:
            last = self._checked.get(digest)
            if last is not None and now - last < self.interval:
                continue
            if len(self._queue) >= MAX_QUEUED:
                self.state.skipped += 1
                continue
            self._remember(digest, now)
            self._queue.append(digest)
            queued += 1
        if queued and (self._task is None or self._task.done()):
            self._idle.clear()
            self._task = asyncio.get_running_loop().create_task(self._work())
        return queued

    def notified(self, envelope: object) -> int:
        """A notification from the registry (expiry/last_pulls.py): its GET pulls' data files are checked."""
        return self.pulled(pulled_digests(envelope))

    async def check_served(self, transfer: Transfer, stored: BinaryIO) -> None:
        """Hash the stored file the blob endpoint sends (stored_blobs.stored_transfer) and settle `transfer`:
        verified, or failed with its file moved aside. Cancelled (the answer ended first), it fails."""
        try:
            hashed = os.fstat(stored.fileno())
            try:
                found = await hash_as_sent(transfer, stored)
            except OSError as e:
                found = f"unreadable: {e.strerror or e}"
            if found == transfer.digest and transfer.written == transfer.size:
                transfer.verified = True
                self._record(Checked(transfer.digest, transfer.written, found), "served")
                return
            moved = await asyncio.to_thread(quarantine.move_aside, self._storage, transfer.digest, hashed, self._wall())
            self._record(Checked(transfer.digest, transfer.written, found, moved), "served")
            transfer.error = (f"the mirror's stored copy of {transfer.digest} is corrupt (its bytes are {found});"
                              f" it was moved aside, and the next request fetches the blob from the upstream")
        finally:
            if not transfer.finished:
                transfer.error = "the check of the stored blob ended before its verdict"
            transfer.notify()

    async def idle(self) -> None:
        """Return once every queued check has run."""
        await self._idle.wait()

    async def close(self) -> None:
        self._closed = True
        self._queue.clear()
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def snapshot(self) -> dict:
        return {**asdict(self.state), "queued": len(self._queue), "interval_s": self.interval,
                "quarantine": str(quarantine.folder(self.root)) if self.root else ""}

    async def _work(self) -> None:
        try:
            while self._queue:
                digest = self._queue.popleft()
                try:
                    checked = await asyncio.to_thread(verify_stored, self._storage, digest, self._wall())
                except Exception as e:  # noqa: BLE001 - one file's trouble never stops the checks of the rest
                    log.warning("cannot check the stored blob %s: %s", digest, e)
                    continue
                if checked is None:  # not stored (not yet: a cold pull's; or not any more): the next pull asks
                    self._checked.pop(digest, None)
                else:
                    self._record(checked, "pulled")
        finally:
            self._idle.set()

    async def check_now(self, digest: str) -> Checked | None:
        """A check of one stored file now (the scrub's), unless one was made within the interval; None when
        skipped, or the file is not stored."""
        last = self._checked.get(digest)
        if last is not None and self._clock() - last < self.interval:
            return None
        checked = await asyncio.to_thread(verify_stored, self._storage, digest, self._wall())
        if checked is not None:
            self._record(checked, "scrub")
        return checked

    def record_served(self, checked: Checked) -> None:
        """A stored blob checked as another part of the mirror sent it (blobs/bucket_fill.py)."""
        self._record(checked, "served")

    def _record(self, checked: Checked, by: str) -> None:
        if checked.ok:
            self.state.verified += 1
            self.state.verified_bytes += checked.size
            self._remember(checked.digest, self._clock())
            return
        self.state.mismatches += 1
        self.state.quarantined += checked.moved_to is not None
        moved = str(checked.moved_to or "")
        self.state.last_mismatch = Mismatch(checked.digest, self._wall(), checked.actual, by, moved)
        log.error("stored blob %s is corrupt: %d bytes read as %s, %s; %s", checked.digest, checked.size,
                  checked.actual, {"served": "by the blob endpoint as it sent them", "pulled": "after a pull"}.get(
                      by, "by the background scrub"),
                  f"moved to {moved}: the next pull fetches it from the upstream" if moved
                  else "not moved: gone, replaced by a good copy, or it could not be moved (logged)")

    def _remember(self, digest: str, now: float) -> None:
        self._checked.pop(digest, None)  # re-inserted last: oldest first
        self._checked[digest] = now
        while len(self._checked) > MAX_REMEMBERED:
            self._checked.popitem(last=False)
