"""Who may use the blob endpoint: whoever knows its key, and the requests the addon sends it, each with a ticket.

The other replicas learn the key from redis and send it in the query; the header is for local callers. A
redirected registry carries its ticket in the query, a request mitmproxy routes there in a header. Flows
(mitmweb, `-w` dumps) hold those requests and the redirects' Locations, so they never carry the key; a ticket
is good for one request for its blob, within TICKET_SECONDS.
"""
from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

from registry_mirror.oci.registry_requests import RegistryRequest

KEY_HEADER = "X-Mirror-Blob-Key"
KEY_PARAM = "mirror_key"
TICKET_PARAM = "mirror_ticket"
TICKET_HEADER = "X-Mirror-Blob-Ticket"
TICKET_SECONDS = 60.0  # the registry follows a redirect at once; a ticket read from a dump later is void
MAX_TICKETS = 10_000  # unused tickets kept, oldest dropped first: a bound on memory, far above any pull's need

BlobId = tuple[str, str, str]  # a blob of one repository under one `ns`: (name, digest, ns)


def blob_id(req: RegistryRequest) -> BlobId:
    return req.name, req.reference, req.ns


class Tickets:
    """Single-use permissions to fetch one blob of one repository (and `ns`) from the endpoint, each valid for
    `seconds` on `timer`; at most `limit` are kept."""

    def __init__(self, seconds: float = TICKET_SECONDS, limit: int = MAX_TICKETS,
                 timer: Callable[[], float] = time.monotonic):
        self.seconds, self.limit, self._timer = seconds, limit, timer
        self._issued: OrderedDict[str, tuple[BlobId, float]] = OrderedDict()  # token -> (blob, expiry)

    def __len__(self) -> int:
        return len(self._issued)

    def issue(self, req: RegistryRequest) -> str:
        now = self._timer()
        while self._issued and (len(self._issued) >= self.limit or next(iter(self._issued.values()))[1] <= now):
            self._issued.popitem(last=False)  # issued in order, with one lifetime: the oldest expire first
        token = secrets.token_urlsafe(16)
        self._issued[token] = (blob_id(req), now + self.seconds)
        return token

    def redeem(self, token: str, req: RegistryRequest) -> bool:
        """Whether `token` is an unexpired ticket for exactly `req`'s blob; used up either way."""
        issued = self._issued.pop(token, None)
        return issued is not None and issued[0] == blob_id(req) and self._timer() < issued[1]


def allowed(headers: Mapping[str, str], query: Mapping[str, str], key: str, tickets: Tickets,
            blob: RegistryRequest | None) -> bool:
    """Whether a request with these headers and query may have `blob` (None: it asks for no blob)."""
    given = headers.get(KEY_HEADER) or query.get(KEY_PARAM, "")
    if secrets.compare_digest(given.encode(), key.encode()):  # bytes: any input, no TypeError
        return True
    ticket = headers.get(TICKET_HEADER) or query.get(TICKET_PARAM, "")
    return bool(ticket) and blob is not None and tickets.redeem(ticket, blob)
