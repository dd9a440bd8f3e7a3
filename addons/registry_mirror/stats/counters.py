"""What the mirror does and saves: counters by request class and outcome, upstream exchanges, bytes.

`Stats` only counts; `snapshot()` turns the counters, the upstream's health and the blob transfers in
flight into one dict, which stats/views.py renders as HTML, JSON and Prometheus text. Every upstream
exchange is also one log line (text, or JSON lines with `rewriter.log_format: json`), never with a secret.
"""
from __future__ import annotations

import json
import logging
import time
from collections import Counter, deque

from registry_mirror.outcomes import Outcome
from registry_mirror.stats.histograms import ANSWER_BUCKETS, TRANSFER_BUCKETS, Histograms

exchange_log = logging.getLogger("registry_mirror.exchanges")

CLASSES = ("ping", "token", "manifest-by-tag", "manifest-by-digest", "blob", "tags")
LATENCY_SAMPLES = 2048


def percentile(sorted_values: list[float], p: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))]


class Stats:
    def __init__(self, log_format: str = "text", clock=time.time):
        self.log_format = log_format
        self._clock = clock
        self.started = clock()
        self.requests: Counter = Counter()  # (class, outcome) -> answers given to the registry
        self.served_bytes: Counter = Counter()  # (class, outcome) -> body bytes sent to the registry
        self.upstream_requests: Counter = Counter()  # (class, status) -> exchanges with the upstream
        self.upstream_bytes: Counter = Counter()  # class -> body bytes received from the upstream
        self.peer_bytes = 0  # blob bytes read from another replica instead of the upstream (scale-out)
        self.latencies: deque = deque(maxlen=LATENCY_SAMPLES)  # seconds to the upstream's answer (not blob GETs)
        # the same as histograms by route and class, which add up across replicas; blob transfers by route
        self.answer_seconds = Histograms(ANSWER_BUCKETS)
        self.transfer_seconds = Histograms(TRANSFER_BUCKETS)
        self.bodies_cut_short = 0  # small upstream bodies over their cap or shorter than their Content-Length
        self.cache_dropped_inconsistent = 0  # cached answers dropped because verified bytes contradicted them
        # route -> manifests by digest the upstream has not: the stock registry answers clients a bare 500 for them
        self.missing_digests: Counter = Counter()
        # (who, class, method) -> pulls the registry served, from its notifications: from its storage too
        self.registry_pulls: Counter = Counter()
        self.registry_pull_bytes: Counter = Counter()

    def served(self, kind: str, outcome: Outcome, nbytes: int) -> None:
        """An answer to the stock registry (counted by the outcome's lower-case value)."""
        self.requests[(kind, outcome.lower())] += 1
        self.served_bytes[(kind, outcome.lower())] += nbytes

    def pulled(self, pulls: list[tuple[str, str, str, int]]) -> None:
        """Pulls the registry reported (pulls.served_pulls): who (clients or warming), class, method, bytes."""
        for who, kind, method, nbytes in pulls:
            self.registry_pulls[(who, kind, method)] += 1
            self.registry_pull_bytes[(who, kind, method)] += nbytes

    def from_peer(self, nbytes: int) -> None:
        self.peer_bytes += nbytes

    def body_cut_short(self) -> None:
        """A small body (manifest, tag list, token, error) from the upstream was over its cap or cut short."""
        self.bodies_cut_short += 1

    def missing_digest(self, route: str) -> None:
        """The upstream answered 404 for a manifest by digest (clients see 500: registry 2.8 maps only its own
        errors to 404)."""
        self.missing_digests[route] += 1

    def dropped_inconsistent(self, count: int = 1) -> None:
        """Cached answers (blob HEADs) dropped because a verified transfer contradicted them."""
        self.cache_dropped_inconsistent += count

    def upstream(self, kind: str, method: str, what: str, status: int | str, nbytes: int, seconds: float,
                 outcome: Outcome | str = Outcome.MISS, route: str = "upstream") -> None:
        """An exchange with the upstream (status is a number, or a word when there was no answer); `outcome`
        is logged lower-case, a blob GET's with how often it resumed."""
        self.upstream_requests[(kind, str(status))] += 1
        self.upstream_bytes[kind] += nbytes
        if isinstance(status, int) and not (kind == "blob" and method == "GET"):
            # answers only: a blob GET's time is its transfer (seconds for a layer), not how fast the upstream answers
            self.latencies.append(seconds)
            self.answer_seconds.observe((route, kind), seconds)
        elif kind == "blob" and status == 200 and seconds:  # a whole transfer (its first answer is counted apart)
            self.transfer_seconds.observe((route,), seconds)
        fields = {"class": kind, "method": method, "what": what, "outcome": (outcome or Outcome.MISS).lower(),
                  "status": status, "bytes": nbytes, "ms": round(seconds * 1000, 1)}
        if self.log_format == "json":
            exchange_log.info(json.dumps(fields))
        else:
            exchange_log.info(" ".join(f"{k}={v}" for k, v in fields.items()))

    def snapshot(self, routes=(), transfers=()) -> dict:
        """`routes`: routing.Route objects, the default (`upstream`) last, as Router.routes orders them."""
        latencies = sorted(self.latencies)
        by_class: dict = {}
        for (kind, outcome), count in self.requests.items():
            entry = by_class.setdefault(kind, {})
            entry[outcome] = {"requests": count, "bytes": self.served_bytes[(kind, outcome)]}
        served = sum(self.served_bytes.values())
        fetched = sum(self.upstream_bytes.values())
        pulls: dict = {}
        for (who, kind, method), count in self.registry_pulls.items():
            entry = pulls.setdefault(who, {}).setdefault(kind, {"requests": 0, "heads": 0, "bytes": 0})
            entry["requests"] += count
            entry["heads"] += count if method == "HEAD" else 0
            entry["bytes"] += self.registry_pull_bytes[(who, kind, method)]
        to_clients = sum(e["bytes"] for e in pulls.get("clients", {}).values())
        route_states = [_route_state(r) for r in routes]
        default = route_states[-1] if route_states else _route_state(None)
        return {
            "uptime_s": round(self._clock() - self.started, 1),
            "upstream": {
                **{k: default[k] for k in ("url", "state", "consecutive_failures", "last_error", "last_error_at",
                                           "last_error_resolved_at")},
                "latency_ms": {"p50": _ms(percentile(latencies, 0.5)), "p99": _ms(percentile(latencies, 0.99))},
                "requests": {f"{k}:{s}": n for (k, s), n in sorted(self.upstream_requests.items())},
                "bytes": dict(self.upstream_bytes),
                "token_refreshes": sum(r["token_refreshes"] for r in route_states),
            },
            "routes": route_states,
            "served": by_class,
            # saved: what clients received (from the registry's storage too) beyond what crossed the WAN
            "bytes": {"served_to_registry": served, "fetched_from_upstream": fetched,
                      "served_to_clients": to_clients,
                      "served_to_warming": sum(e["bytes"] for e in pulls.get("warming", {}).values()),
                      "saved": max(0, to_clients - fetched), "from_other_replicas": self.peer_bytes},
            "registry_pulls": pulls,
            "histograms": {"answer_seconds": self.answer_seconds.snapshot(),
                           "transfer_seconds": self.transfer_seconds.snapshot()},
            "missing_digests": dict(self.missing_digests),
            "integrity": {"bodies_cut_short": self.bodies_cut_short,
                          "cache_dropped_inconsistent": self.cache_dropped_inconsistent},
            "transfers": [{"digest": t.digest, "repository": t.name, "received": t.written, "size": t.size,
                           "readers": t.readers, "requests": t.served, "from": t.origin or "upstream"}
                          for t in transfers if not t.finished],
        }


def _route_state(route) -> dict:
    if route is None:
        return {"route": "upstream", "prefix": "", "ns": [], "url": "", "state": "up", "consecutive_failures": 0,
                "last_error": "", "last_error_at": 0, "last_error_resolved_at": 0, "token_refreshes": 0,
                "blob_transfers": {"active": 0, "waiting": 0, "limit": 0, "queue_timeouts": 0}}
    health, cfg, slots = route.health, route.cfg, route.blob_slots
    return {"route": cfg.label, "prefix": cfg.match_prefix, "ns": list(cfg.match_ns), "url": route.url,
            "state": health.state, "consecutive_failures": health.consecutive_failures,
            "last_error": health.last_error, "last_error_at": health.last_error_at,
            # when the upstream answered again after that error; 0 while it is the latest word
            "last_error_resolved_at": health.resolved_at,
            "token_refreshes": route.upstream.auth.token_refreshes,
            "blob_transfers": {"active": slots.active, "waiting": slots.waiting, "limit": slots.limit,
                               "queue_timeouts": slots.timed_out}}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)
