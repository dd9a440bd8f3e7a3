"""`/_mirror/logs`: the supervisor reports the lines its log files dropped on a full disk, with the registry's
notification secret; the stats page shows them."""
import json

import pytest
from mitmproxy.test import tflow, tutils

from registry_mirror.proxy.addon import RegistryMirror
from registry_mirror.proxy.notifications import SECRET_HEADER
from registry_mirror.proxy.pages import StatusPages
from registry_mirror.stats.views import LOGS_PATH

SECRET = "s3cret-of-the-registry"
EARLIER = {"registry.log": {"dropped_lines": 1, "last_error": "earlier"}}
REPORT = {"mitmproxy.log": {"dropped_lines": 3, "last_error": "/logs/mitmproxy.log: No space left on device"}}


@pytest.fixture
def mirror():
    m = RegistryMirror()
    m.notify_secret = SECRET
    m.log_files = dict(EARLIER)
    return m


async def post(mirror, body: bytes, secret: str | None = SECRET, method: str = "POST"):
    headers = [(b"host", b"127.0.0.1:8081")] + ([(SECRET_HEADER.encode(), secret.encode())] if secret else [])
    f = tflow.tflow(req=tutils.treq(method=method.encode(), path=LOGS_PATH.encode(), host="127.0.0.1", port=8081,
                                    headers=headers, content=body))
    await StatusPages(mirror).request(f)
    return f


async def test_supervisor_report_is_accepted_and_shown(mirror):
    f = await post(mirror, json.dumps(REPORT).encode())
    assert f.response.status_code == 202
    assert json.loads(f.response.content) == {"accepted": True, "reason": ""}
    assert mirror.log_files == REPORT


@pytest.mark.parametrize("secret,method,body,status", [
    (None, "POST", json.dumps(REPORT).encode(), 401),
    ("guess", "POST", json.dumps(REPORT).encode(), 401),
    (SECRET, "GET", b"", 405),
    (SECRET, "POST", b"not json", 400),
    (SECRET, "POST", b"[]", 400),
    (SECRET, "POST", b'{"mitmproxy.log": 3}', 400),
    (SECRET, "POST", b'{"mitmproxy.log": {"last_error": ""}}', 400),
    (SECRET, "POST", b'{"mitmproxy.log": {"dropped_lines": "many", "last_error": ""}}', 400),
], ids=["no-secret", "wrong-secret", "not-a-post", "not-json", "not-an-object", "file-not-an-object",
        "no-dropped-lines", "dropped-lines-not-a-number"])
async def test_refused_report_changes_nothing(mirror, secret, method, body, status):
    f = await post(mirror, body, secret, method)
    assert f.response.status_code == status
    answer = json.loads(f.response.content)
    assert answer["accepted"] is False and answer["reason"]
    assert mirror.log_files == EARLIER


@pytest.mark.parametrize("secret", [SECRET, "guess"])
async def test_secret_never_stays_in_the_flow(mirror, secret):
    f = await post(mirror, json.dumps(REPORT).encode(), secret)
    assert SECRET_HEADER not in f.request.headers
