"""A deadline for request headers on the addon's listener.

mitmproxy closes a client connection only after `tcp_timeout` (600 s) without activity, and every byte counts as
activity (proxy/server.py, TimeoutWatchdog): a client that trickles header bytes holds a connection for as long as
it likes. Here a client must have sent a request's complete headers within HEADER_DEADLINE of connecting, or of
its last answer (keep-alive), or its connection is closed.

Addon hooks see no bytes, only complete headers (`requestheaders`), so an idle keep-alive connection is closed
after the same time; its client connects again (Go's http client, the stock registry's, retries a GET that met a
closed idle connection). The clock restarts at the `response` hook, which for an answer that is not streamed
comes just before it is sent: it is small (manifests, tag lists, errors), and 20 s is ample to send it.

Closing uses what mitmproxy's own code uses: the proxyserver addon's `connections` (handlers by client id, the
map `inject_event` uses) and the handler's `close_connection`, which the layers' CloseConnection command calls;
it cancels the connection's reader as mitmproxy's own inactivity timeout does.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from mitmproxy import connection, ctx, http
from mitmproxy.utils import human

log = logging.getLogger(__name__)

HEADER_DEADLINE = 20.0  # seconds from connect, or from the last answer, to a request's complete headers


def close_client(client: connection.Client) -> None:
    """Close a live client connection of this mitmproxy, as its CloseConnection command does."""
    proxyserver = ctx.master.addons.get("proxyserver")
    handler = proxyserver.connections.get(client.id) if proxyserver is not None else None
    if handler is not None and client in handler.transports:  # else it is closing already
        handler.close_connection(client)


class HeaderDeadline:
    """Closes client connections that send no complete request headers within `deadline` seconds.

    `call_later(delay, callback, *args)` schedules the deadline (the running loop's by default) and `close(client)`
    ends a connection (close_client by default): both injectable, for tests."""

    def __init__(self, deadline: float = HEADER_DEADLINE, call_later: Callable | None = None,
                 close: Callable[[connection.Client], None] = close_client):
        self.deadline = deadline
        self._call_later = call_later
        self._close = close
        self._pending: dict[str, set[str]] = {}  # client id -> flows whose headers are in and that await an answer
        self._timers: dict[str, asyncio.TimerHandle] = {}  # client id -> its deadline, while it has no request
        self.closed = 0  # connections closed for missing their deadline

    def client_connected(self, client: connection.Client) -> None:
        self._pending[client.id] = set()
        self._arm(client)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        pending = self._pending.get(flow.client_conn.id)
        if pending is None:
            return
        pending.add(flow.id)
        self._disarm(flow.client_conn.id)

    def response(self, flow: http.HTTPFlow) -> None:
        self._answered(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._answered(flow)

    def client_disconnected(self, client: connection.Client) -> None:
        self._disarm(client.id)
        self._pending.pop(client.id, None)

    def _answered(self, flow: http.HTTPFlow) -> None:
        pending = self._pending.get(flow.client_conn.id)
        if pending is None or flow.id not in pending:  # a client gone, or a second hook for the same flow
            return
        pending.discard(flow.id)
        if not pending:
            self._arm(flow.client_conn)

    def _arm(self, client: connection.Client) -> None:
        self._disarm(client.id)
        call_later = self._call_later or asyncio.get_running_loop().call_later
        self._timers[client.id] = call_later(self.deadline, self._expired, client)

    def _disarm(self, client_id: str) -> None:
        timer = self._timers.pop(client_id, None)
        if timer is not None:
            timer.cancel()

    def _expired(self, client: connection.Client) -> None:
        self._timers.pop(client.id, None)
        if client.id not in self._pending or self._pending[client.id]:  # gone, or a request arrived meanwhile
            return
        self.closed += 1
        log.info("closing the connection from %s: no complete request headers within %g s of its connecting or "
                 "its last answer", human.format_address(client.peername), self.deadline)
        self._close(client)

