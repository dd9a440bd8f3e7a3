"""Faults the test upstream can be told to inject, switched at run time: `POST /_front/fault?mode=...`.

    mode=none                         no fault
    mode=status&code=503              answer with this status instead of serving
    mode=hang                         accept the request and never answer
    mode=reset&after=N                blob bodies: drop the connection after N bytes
    mode=corrupt                      blob bodies: flip one byte of the first chunk
and for each: target=all|manifests|blobs|token (default all), times=K (the first K matching requests
only; 0 for all of them until cleared).
"""
from __future__ import annotations

from dataclasses import dataclass

MODES = ("none", "status", "hang", "reset", "corrupt")
TARGETS = ("all", "manifests", "blobs", "token")


@dataclass
class Fault:
    mode: str = "none"
    target: str = "all"
    code: int = 503
    after: int = 0
    times: int = 0
    applied: int = 0

    @classmethod
    def from_query(cls, query) -> "Fault":
        fault = cls(mode=query.get("mode", "none"), target=query.get("target", "all"),
                    code=int(query.get("code", 503)), after=int(query.get("after", 0)),
                    times=int(query.get("times", 0)))
        if fault.mode not in MODES or fault.target not in TARGETS:
            raise ValueError(f"mode must be one of {MODES} and target one of {TARGETS}")
        return fault

    def take(self, path: str, modes: tuple[str, ...]) -> bool:
        """Whether this fault applies to a request for `path` now (counting it against `times`)."""
        if self.mode not in modes or not self._targets(path):
            return False
        if self.times and self.applied >= self.times:
            return False
        self.applied += 1
        return True

    def _targets(self, path: str) -> bool:
        if self.target == "all":
            return True
        if self.target == "token":
            return "/v2/token" in path
        if self.target == "blobs":
            return "/blobs/" in path
        return "/manifests/" in path
