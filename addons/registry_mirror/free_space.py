"""Free space where the mirror writes: below `mirror.min_free` on the storage's or the spool's filesystem, cold
fetches are refused at once, so that a full disk never stops the mirror serving what it has.

The stock registry rewrites a tag's link on every pull by tag: at 100% it fails cached tags too. The reserve
keeps room for those small writes, counting what the transfers in flight will still write.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from registry_mirror.units import human_bytes


@dataclass(frozen=True)
class Space:
    what: str  # storage, spool, logs, dump
    path: str
    device: int
    free: int
    total: int


def space(what: str, path: str, statvfs: Callable = os.statvfs) -> Space | None:
    """The filesystem `path` is on, as an unprivileged writer sees it; None if it cannot be read."""
    try:
        st, device = statvfs(path), os.stat(path).st_dev
    except OSError:
        return None
    return Space(what, path, device, st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize)


def shortfall(spaces: Iterable[Space], writes: dict[str, int], min_free: int) -> Space | None:
    """The first filesystem that would fall under `min_free` after `writes` (bytes per `what`), those of one
    device added up; None when every one keeps its reserve."""
    by_device: dict[int, int] = {}
    spaces = list(spaces)
    for s in spaces:
        by_device[s.device] = by_device.get(s.device, 0) + writes.get(s.what, 0)
    return next((s for s in spaces if s.free - by_device[s.device] < min_free), None)


class DiskWatch:
    """The filesystems the mirror writes to, by what it writes there; `refusal` decides cold fetches."""

    def __init__(self, min_free: int, paths: dict[str, str | None], statvfs: Callable = os.statvfs):
        self.min_free, self._statvfs = min_free, statvfs
        self.paths = {what: path for what, path in paths.items() if path}
        self.refused = 0  # cold fetches refused for want of space
        self.last_refusal = ""

    def spaces(self) -> list[Space]:
        return [s for what, path in self.paths.items() if (s := space(what, path, self._statvfs))]

    def refusal(self, incoming: int) -> str | None:
        """Why a cold fetch must be refused when `incoming` bytes are still to be stored (this blob's and the
        transfers' in flight, each in the spool and in storage); None when there is room."""
        spaces = [s for s in self.spaces() if s.what in ("storage", "spool")]
        low = shortfall(spaces, {"storage": incoming, "spool": incoming}, self.min_free)
        if low is None:
            return None
        self.refused += 1
        self.last_refusal = (f"the {low.what} filesystem ({low.path}) has {human_bytes(low.free)} free, under "
                             f"mirror.min_free ({human_bytes(self.min_free)}) with {human_bytes(incoming)} still to "
                             f"be written: cold fetches are refused until space is freed; cached images are served")
        return self.last_refusal

    def snapshot(self) -> dict:
        return {"min_free_bytes": self.min_free, "refused_fetches": self.refused, "last_refusal": self.last_refusal,
                "filesystems": [{"what": s.what, "path": s.path, "free_bytes": s.free, "total_bytes": s.total,
                                 "low": s.free < self.min_free} for s in self.spaces()]}
