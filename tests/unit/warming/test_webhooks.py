"""The webhook listener, on a real socket: what each request is answered, and that only a signed, valid event
for a repository the mirror serves starts a warm (warm.warm_digest is replaced: nothing is dialled)."""
import json
import threading
from types import SimpleNamespace

import aiohttp
import pytest

from devtools.ports import free_port
from registry_mirror.config.load import parse
from registry_mirror.tls import certs
from registry_mirror.warming import pull as warm
from registry_mirror.warming import webhooks
from registry_mirror.warming.events import EVENT_AUTH_HEADER, signature
from registry_mirror.warming.webhooks import WEBHOOK_PATH, WebhookListener
from tests.unit.support.waits import until
from tests.unit.warming.test_events import SECRET, SHA, event

DIGEST = f"sha256:{SHA}"


def config(tmp_path, tls=False, **webhook_keys):
    mirror = {"tls": tls, "tls_cert": str(tmp_path / "mirror.crt"), "tls_key": str(tmp_path / "mirror.key")}
    return parse({"upstream": {"url": "https://art.example.com", "repository": "docker-local", "anonymous": True,
                               "repository_path_names": True},
                  "routes": [{"prefix": "team-b/", "repository": "docker-team-b", "strip_prefix": True,
                              "repository_path_names": False},
                             {"prefix": "team-c/", "repository": "docker-team-c", "repository_path_names": False}],
                  "mirror": mirror, "webhooks": {"listen": f"127.0.0.1:{free_port()}", "secret": SECRET,
                                                 **webhook_keys}})


class Recorder:
    """Stands in for warm.warm_digest (in its thread) and for the routes' tag caches."""
    def __init__(self, hold: bool = False):
        self.warms, self.forgotten = [], []
        self.release = threading.Event()
        if not hold:
            self.release.set()

    def warm_digest(self, cfg, names, digest, tag, platforms):
        self.release.wait(30)
        self.warms.append((names, digest, tag, platforms))
        return SimpleNamespace(done_bytes=1234, blobs=3)

    def for_name(self, name, ns=""):
        return SimpleNamespace(manifests=SimpleNamespace(forget_tag=lambda n, t: self.forgotten.append((n, t))))


async def run(tmp_path, monkeypatch, requests, recorder=None, tls=False, drop_tag=None, **webhook_keys):
    """Start a listener, send `requests` ((headers, body) pairs, or a coroutine function of the session and
    URL), wait for the warms, stop it; the answers, the recorder and the snapshot."""
    cfg = config(tmp_path, tls, **webhook_keys)
    recorder = recorder or Recorder()
    monkeypatch.setattr(webhooks.warm, "warm_digest", recorder.warm_digest)
    context = warm.pinned_context(cfg.mirror.tls_cert) if tls else None

    listener = WebhookListener(cfg, recorder, drop_tag=drop_tag)
    await listener.start()
    url = f"{'https' if tls else 'http'}://127.0.0.1:{listener.port}{WEBHOOK_PATH}"
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context or False)) as session:
            answers = []
            for headers, body in requests:
                async with session.post(url, data=body, headers=headers) as resp:
                    answers.append((resp.status, await resp.json()))
            recorder.release.set()
            totals = listener.warmer.queue.totals
            await until(lambda: totals.queued + totals.running == 0, "the warms ended")
            snap = listener.snapshot()
    finally:
        await listener.close()
    return answers, recorder, snap


def signed(body: bytes) -> dict:
    return {EVENT_AUTH_HEADER: signature(SECRET, body), "Content-Type": "application/json"}


async def test_a_signed_event_is_accepted_at_once_and_warms_every_name_of_the_image(tmp_path, monkeypatch):
    answers, recorder, snap = await run(tmp_path, monkeypatch, [(signed(event()), event())])
    status, body = answers[0]
    assert status == 202 and body["warm"] == "queued"
    assert body["names"] == ["docker-local/team/app", "team/app"]  # with repository_path_names, both
    assert recorder.warms == [(("docker-local/team/app", "team/app"), DIGEST, "1.0", ())]
    # dropped when the event arrives, and again when its warm starts (a retry may follow a refilled cache)
    assert recorder.forgotten == [("docker-local/team/app", "1.0"), ("team/app", "1.0")] * 2
    assert snap["warms"]["done"] == 1 and snap["warms"]["bytes"] == 1234 and snap["answers"] == {"202": 1}


async def test_an_event_coalesced_with_a_warm_of_the_same_digest_still_drops_its_own_tag(tmp_path, monkeypatch):
    recorder = Recorder(hold=True)  # the first warm is running when the second tag's event comes
    latest = event(tag="latest")
    answers, recorder, snap = await run(tmp_path, monkeypatch, [(signed(event()), event()), (signed(latest), latest)],
                                        recorder)
    assert [a["warm"] for _, a in answers] == ["queued", "coalesced"]
    assert ("team/app", "latest") in recorder.forgotten and ("team/app", "1.0") in recorder.forgotten
    assert len(recorder.warms) == 1 and snap["warms"]["coalesced"] == 1


async def test_the_plain_secret_works_too_over_tls_with_the_mirror_certificate(tmp_path, monkeypatch):
    certs.ensure_self_signed(str(tmp_path / "mirror.crt"), str(tmp_path / "mirror.key"))
    body = event(repo_key="docker-team-b", image_name="app")
    answers, recorder, _ = await run(tmp_path, monkeypatch, [({EVENT_AUTH_HEADER: SECRET}, body)], tls=True,
                                     platforms=["linux/amd64"])
    assert answers[0][0] == 202
    assert recorder.warms == [(("team-b/app",), DIGEST, "1.0", ("linux/amd64",))]


@pytest.mark.parametrize("headers", [{}, {EVENT_AUTH_HEADER: ""}, {EVENT_AUTH_HEADER: "wrong"},
                                     {EVENT_AUTH_HEADER: signature("another", event())},
                                     {EVENT_AUTH_HEADER: signature(SECRET, event(tag="2.0"))}])
async def test_unauthenticated_events_get_401_and_nothing_is_fetched(tmp_path, monkeypatch, caplog, headers):
    answers, recorder, snap = await run(tmp_path, monkeypatch, [(headers, event())])
    assert answers[0][0] == 401 and EVENT_AUTH_HEADER in answers[0][1]["reason"]
    assert recorder.warms == [] and recorder.forgotten == [] and snap["warms"]["queued"] == 0
    assert SECRET not in caplog.text and SECRET not in json.dumps(answers) and SECRET not in json.dumps(snap)


async def test_bad_bodies(tmp_path, monkeypatch):
    big = event(path="x" * (64 * 1024))
    wrong_shape = json.dumps({"domain": "docker", "event_type": "pushed", "data": {"repo_key": "docker-local"}})
    unknown_repo = event(repo_key="docker-elsewhere")
    outside_route = event(repo_key="docker-team-c", image_name="other/app")  # that route serves team-c/ only
    requests = [(signed(big), big), ({EVENT_AUTH_HEADER: SECRET}, b"not json"),
                ({EVENT_AUTH_HEADER: SECRET}, wrong_shape.encode()), (signed(unknown_repo), unknown_repo),
                (signed(outside_route), outside_route)]
    answers, recorder, snap = await run(tmp_path, monkeypatch, requests)
    assert [status for status, _ in answers] == [413, 400, 400, 422, 422]
    assert "docker-elsewhere" in answers[3][1]["reason"] and "other/app" in answers[4][1]["reason"]
    assert "data.image_name" in answers[2][1]["reason"]
    assert recorder.warms == [] and recorder.forgotten == [] and snap["answers"] == {"400": 2, "413": 1, "422": 2}


async def test_other_domains_and_event_types_are_acknowledged_and_ignored(tmp_path, monkeypatch):
    bodies = [event(domain="artifact", event_type="deployed"), event(event_type="deleted")]
    answers, recorder, _ = await run(tmp_path, monkeypatch, [(signed(b), b) for b in bodies])
    assert [(s, a["ignored"]) for s, a in answers] == [(202, True), (202, True)]
    assert recorder.warms == []


async def test_a_burst_of_duplicates_makes_one_warm(tmp_path, monkeypatch):
    recorder = Recorder(hold=True)  # the first warm runs until the whole burst is in
    answers, recorder, snap = await run(tmp_path, monkeypatch, [(signed(event()), event())] * 10, recorder)
    assert [a["warm"] for _, a in answers] == ["queued"] + ["coalesced"] * 9
    assert len(recorder.warms) == 1 and snap["warms"]["coalesced"] == 9 and snap["warms"]["done"] == 1


async def test_only_post():
    listener = WebhookListener(config_for_get(), Recorder())
    assert (await listener._answer(SimpleNamespace(method="GET"))).status == 405


def config_for_get():
    return parse({"upstream": {"url": "https://a", "repository": "r", "anonymous": True},
                  "webhooks": {"listen": "127.0.0.1:8084", "secret": SECRET}})


async def test_a_deleted_tag_goes_under_every_name_of_the_image_while_it_names_the_deleted_digest(
        tmp_path, monkeypatch):
    asked = []

    async def drop_tag(name, tag, digest):
        asked.append((name, tag, digest))
        return name == "team/app"  # stored under one name only
    deleted = event(event_type="deleted")
    answers, recorder, snap = await run(tmp_path, monkeypatch, [(signed(deleted), deleted)], drop_tag=drop_tag)
    status, body = answers[0]
    assert status == 202 and body["forgotten"] == ["team/app:1.0"]
    assert asked == [("docker-local/team/app", "1.0", DIGEST), ("team/app", "1.0", DIGEST)] and recorder.warms == []
