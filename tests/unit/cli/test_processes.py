"""Start-up waits: an open port is not a ready mirror (mitmproxy listens before its scripts have run)."""
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from devtools.ports import free_port
from registry_mirror.cli import processes
from tests.unit.support.waits import BOUND, until_sync

# a server that accepts at once and answers 503 {"ready": false} until the test creates its file, then
# 200 {"ready": true}; it logs each answer's status, one a line
SERVER = """
import http.server, json, os, sys
port, ready_file, answers = int(sys.argv[1]), sys.argv[2], sys.argv[3]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ready = os.path.exists(ready_file)
        body = json.dumps({"ready": ready}).encode()
        self.send_response(200 if ready else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        with open(answers, "a") as log:
            log.write(f"{200 if ready else 503}\\n")
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


@pytest.fixture
def server(tmp_path):
    port = free_port()
    ready_file, answers = tmp_path / "ready", tmp_path / "answers"
    answers.touch()
    # a session of its own, as processes.start gives: processes.stop ends it by its process group
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port), str(ready_file), str(answers)],
                            start_new_session=True)
    try:
        yield port, proc, ready_file, lambda: answers.read_text().split()
    finally:
        processes.stop(proc)


def test_waits_past_an_open_port_until_the_answer_says_ready(server):
    port, proc, ready_file, answers = server
    processes.wait_for_port("127.0.0.1", port, proc)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(processes.wait_until_ready, f"http://127.0.0.1:{port}/_mirror/ready", proc,
                              timeout=BOUND)
        until_sync(lambda: len(answers()) >= 3, "probed three times")
        assert not waiting.done()  # three answers said "not ready" to an open port: still waiting
        ready_file.touch()
        waiting.result(BOUND)  # returns once an answer says ready (raises what the wait raised)
    assert set(answers()[:3]) == {"503"} and answers()[-1] == "200"


def test_a_process_that_dies_while_starting_is_named(tmp_path):
    log = tmp_path / "out.log"
    log.write_text("config error: upstream.url is missing\n")
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    named = r"(?s)mitmproxy with the addon exited with status 3.*upstream\.url"
    with pytest.raises(processes.ProcessError, match=named):
        processes.wait_until_ready(f"http://127.0.0.1:{free_port()}/_mirror/ready", proc,
                                   what="mitmproxy with the addon", log_path=log)


def test_an_answer_that_is_not_ready_times_out_clearly(server):
    port, proc, _, answers = server  # never made ready
    with pytest.raises(processes.ProcessError, match=r"did not report ready at http://127.0.0.1:\d+/x within 0 s"):
        processes.wait_until_ready(f"http://127.0.0.1:{port}/x", proc, timeout=0.3)
    assert "200" not in answers()


def test_a_started_process_gets_our_environment_plus_env_without_unset(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_CA_BUNDLE", "/etc/ssl/our-bundle.pem")
    monkeypatch.setenv("KEPT_FOR_TEST", "kept")
    log = tmp_path / "child.log"
    code = ("import json, os; print(json.dumps({k: os.environ.get(k) for k in "
            "('AWS_CA_BUNDLE', 'KEPT_FOR_TEST', 'ADDED')}))")
    proc = processes.start([sys.executable, "-c", code], log, env={"ADDED": "yes"}, unset=("AWS_CA_BUNDLE",))
    assert proc.wait(timeout=BOUND) == 0
    processes.stop(proc)  # flushes its last lines to the log
    assert '{"AWS_CA_BUNDLE": null, "KEPT_FOR_TEST": "kept", "ADDED": "yes"}' in log.read_text()
