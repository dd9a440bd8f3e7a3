"""Start-up waits: an open port is not a ready mirror (mitmproxy listens before its scripts have run)."""
import subprocess
import sys
import time

import pytest

from registry_mirror import processes

# a server that accepts at once, answers 503 {"ready": false} for its first second, then 200 {"ready": true}
SERVER = """
import http.server, json, sys, time
started = time.monotonic()
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ready = time.monotonic() - started > 1.0
        body = json.dumps({"ready": ready}).encode()
        self.send_response(200 if ready else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


@pytest.fixture
def slow_server():
    port = processes.free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    try:
        yield port, proc
    finally:
        processes.stop(proc)


def test_waits_past_an_open_port_until_the_answer_says_ready(slow_server):
    port, proc = slow_server
    processes.wait_for_port("127.0.0.1", port, proc)
    started = time.monotonic()
    processes.wait_until_ready(f"http://127.0.0.1:{port}/_mirror/ready", proc, timeout=10)
    assert time.monotonic() - started > 0.5  # the port was open well before


def test_a_process_that_dies_while_starting_is_named(tmp_path):
    log = tmp_path / "out.log"
    log.write_text("config error: upstream.url is missing\n")
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    named = r"(?s)mitmproxy with the addon exited with status 3.*upstream\.url"
    with pytest.raises(processes.ProcessError, match=named):
        processes.wait_until_ready(f"http://127.0.0.1:{processes.free_port()}/_mirror/ready", proc,
                                   what="mitmproxy with the addon", log_path=log)


def test_an_answer_that_is_not_ready_times_out_clearly(slow_server):
    port, proc = slow_server
    with pytest.raises(processes.ProcessError, match=r"did not report ready at http://127.0.0.1:\d+/x within 0 s"):
        processes.wait_until_ready(f"http://127.0.0.1:{port}/x", proc, timeout=0.3)
