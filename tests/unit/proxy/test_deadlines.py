"""The addon's listener closes a connection that sends no complete request headers within HEADER_DEADLINE.

Before, a client trickling header bytes held a connection until mitmproxy's tcp_timeout (600 s): each byte counts
as activity. The hooks are driven with a fake loop; one test runs a real mitmproxy, in this process, to check that
closing a connection the way the addon does still works with the installed mitmproxy."""
import asyncio
from types import SimpleNamespace

from mitmproxy import http, options
from mitmproxy.test import tflow
from mitmproxy.tools.dump import DumpMaster

from registry_mirror.proxy import deadlines
from registry_mirror.proxy.deadlines import HEADER_DEADLINE, HeaderDeadline
from tests.unit.support.waits import BOUND, until


class FakeLoop:
    """`call_later` that runs nothing by itself: the test fires the timers it wants."""
    def __init__(self):
        self.timers: list[FakeTimer] = []

    def call_later(self, delay, callback, *args):
        timer = FakeTimer(delay, callback, args)
        self.timers.append(timer)
        return timer

    def pending(self):
        return [t for t in self.timers if not t.cancelled]


class FakeTimer:
    def __init__(self, delay, callback, args):
        self.delay, self.callback, self.args, self.cancelled = delay, callback, args, False

    def cancel(self):
        self.cancelled = True

    def fire(self):
        assert not self.cancelled
        self.callback(*self.args)


def deadline_addon():
    loop, closed = FakeLoop(), []
    return HeaderDeadline(call_later=loop.call_later, close=closed.append), loop, closed


def test_a_client_without_request_headers_is_closed_at_the_deadline():
    addon, loop, closed = deadline_addon()
    client = tflow.tclient_conn()
    addon.client_connected(client)
    [timer] = loop.pending()
    assert timer.delay == HEADER_DEADLINE == 20.0
    timer.fire()
    assert closed == [client] and addon.closed == 1


def test_complete_headers_stop_the_clock_until_the_answer_and_it_restarts_then():
    addon, loop, closed = deadline_addon()
    client = tflow.tclient_conn()
    addon.client_connected(client)
    flow = tflow.tflow(client_conn=client)
    addon.requestheaders(flow)
    assert loop.pending() == []  # a slow upstream or a long blob stream is no header deadline's business
    addon.response(flow)
    [timer] = loop.pending()  # keep-alive: the next request's headers are due within the deadline
    timer.fire()
    assert closed == [client]


def test_an_error_restarts_the_clock_once_and_only_when_no_request_is_open():
    addon, loop, closed = deadline_addon()
    client = tflow.tclient_conn()
    addon.client_connected(client)
    first, second = tflow.tflow(client_conn=client), tflow.tflow(client_conn=client)  # e.g. HTTP/2 streams
    addon.requestheaders(first)
    addon.requestheaders(second)
    addon.error(first)
    assert loop.pending() == []  # the second request is still open
    addon.response(second)
    addon.error(second)  # a second hook for the same flow arms nothing more
    assert len(loop.pending()) == 1 and closed == []


def test_a_disconnected_client_leaves_no_timer_and_late_hooks_arm_none():
    addon, loop, closed = deadline_addon()
    client = tflow.tclient_conn()
    addon.client_connected(client)
    flow = tflow.tflow(client_conn=client)
    addon.requestheaders(flow)
    addon.client_disconnected(client)
    addon.error(flow)  # mitmproxy runs a flow's error hook in its own task: it may come after the disconnect
    assert loop.pending() == [] and closed == [] and addon._pending == {} and addon._timers == {}


def test_a_timer_firing_while_a_request_is_open_closes_nothing():
    addon, loop, closed = deadline_addon()
    client = tflow.tclient_conn()
    addon.client_connected(client)
    [timer] = loop.pending()
    addon.requestheaders(tflow.tflow(client_conn=client))
    timer.callback(*timer.args)  # already due in the loop when the headers came
    assert closed == []


def test_each_client_has_its_own_deadline():
    addon, loop, closed = deadline_addon()
    slow, quick = tflow.tclient_conn(), tflow.tclient_conn()
    addon.client_connected(slow)
    addon.client_connected(quick)
    addon.requestheaders(tflow.tflow(client_conn=quick))
    [timer] = loop.pending()
    timer.fire()
    assert closed == [slow]


class Answer:
    def request(self, flow: http.HTTPFlow) -> None:
        flow.response = http.Response.make(200, b"ok")


async def test_a_real_mitmproxy_closes_a_trickling_client_and_an_idle_keep_alive_one(tmp_path):
    """The default `close` (close_client) against mitmproxy's own proxy server, with a short deadline."""
    opts = options.Options(mode=["reverse:http://127.0.0.1:9@127.0.0.1:0"], confdir=str(tmp_path))
    master = DumpMaster(opts, with_termlog=False, with_dumper=False)
    addon = HeaderDeadline(0.2)
    master.addons.add(Answer(), addon)
    master.options.update(connection_strategy="lazy")
    running = asyncio.create_task(master.run())
    proxyserver = master.addons.get("proxyserver")
    try:
        await until(proxyserver.listen_addrs, "mitmproxy listening")
        host, port = proxyserver.listen_addrs()[0][:2]
        results = []
        for sent in (b"GET /v2/ HTTP/1.1\r\nHost: mirror\r\n", b"GET /v2/ HTTP/1.1\r\nHost: mirror\r\n\r\n"):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(sent)
            results.append(await asyncio.wait_for(reader.read(), BOUND))  # to EOF: closed by the deadline
            writer.close()
        (trickled, kept_alive), closed, connections = results, addon.closed, len(proxyserver.connections)
    finally:
        master.shutdown()
        await asyncio.wait_for(running, BOUND)
    assert trickled == b"" and kept_alive.startswith(b"HTTP/1.1 200 OK") and kept_alive.endswith(b"ok")
    assert closed == 2 and connections == 0


def test_closing_a_connection_that_is_gone_already_does_nothing(monkeypatch):
    proxyserver = SimpleNamespace(connections={})
    monkeypatch.setattr(deadlines, "ctx", SimpleNamespace(master=SimpleNamespace(
        addons=SimpleNamespace(get={"proxyserver": proxyserver}.get))))
    deadlines.close_client(tflow.tclient_conn())  # no handler for it: no KeyError
