"""The registry's notifications: refused without the secret, read under a cap; last pulls from them."""
import json
import os

import pytest

from registry_mirror.expiry.last_pulls import LastPulls, pulled_manifests, served_pulls
from registry_mirror.proxy.notifications import MAX_NOTIFICATION_BODY, check, notification_secret
from registry_mirror.storage.layout import secret_file
from registry_mirror.storage.store import FolderStore
from tests.unit.support.clocks import Clock

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def event(action="pull", media=MANIFEST, repository="team/app", digest="sha256:" + "a" * 64, method="GET",
          size=100):
    return {"action": action, "target": {"mediaType": media, "repository": repository, "digest": digest,
                                         "size": size}, "request": {"method": method}}


@pytest.mark.parametrize("method,secret,body,status", [
    ("POST", "s3cret", b'{"events": []}', 202),
    ("POST", "wrong", b'{"events": []}', 401),
    ("POST", "", b'{"events": []}', 401),
    ("GET", "s3cret", b"", 405),
    ("POST", "s3cret", b"x" * (MAX_NOTIFICATION_BODY + 1), 413),
    ("POST", "s3cret", None, 413),  # streamed by mitmproxy: over its buffering limit
    ("POST", "s3cret", b"not json", 400),
])
def test_check(method, secret, body, status):
    assert check(method, secret, body, "s3cret")[0] == status


def test_the_secret_is_made_once_and_readable_by_its_owner_only(tmp_path):
    storage = str(tmp_path / "storage")
    first = notification_secret(storage)
    assert notification_secret(storage) == first and len(first) >= 24
    assert os.stat(secret_file(storage)).st_mode & 0o777 == 0o600


def test_only_manifest_pulls_are_images():
    envelope = {"events": [
        event(), event(action="push"), event(media="application/octet-stream", size=5000),
        event(media="application/octet-stream", size=7000, method="HEAD"), "junk", {"action": "pull"},
        event(repository=None),
    ]}
    assert pulled_manifests(envelope) == [("team/app", "sha256:" + "a" * 64)]
    assert pulled_manifests("junk") == [] and pulled_manifests({"events": "x"}) == []


def test_last_pulls_survive_a_restart_and_replicas_merge(tmp_path):
    clock = Clock(1000.0)
    mine = LastPulls(FolderStore(tmp_path), "a", clock)
    mine.record([("team/app", "d1")])
    mine.save()
    other = LastPulls(FolderStore(tmp_path), "b", clock)
    clock.now = 2000.0
    other.record([("team/app", "d1"), ("team/web", "d2")])
    other.save()
    again = LastPulls(FolderStore(tmp_path), "a", clock)  # a restart of replica a
    assert again.mine == {("team/app", "d1"): 1000.0}
    assert again.merged(again.snapshot()) == {("team/app", "d1"): 2000.0, ("team/web", "d2"): 2000.0}


def test_an_image_never_seen_pulled_counts_from_when_it_is_first_seen(tmp_path):
    pulls = LastPulls(FolderStore(tmp_path), "a", Clock(1000.0))
    pulls.first_seen([("old/app", "d")], 500.0)
    pulls.first_seen([("old/app", "d")], 900.0)  # already known: unchanged
    assert pulls.mine == {("old/app", "d"): 500.0}


def test_a_flood_of_events_cannot_grow_the_state_without_bound(tmp_path, monkeypatch):
    monkeypatch.setattr("registry_mirror.expiry.last_pulls.MAX_IMAGES", 3)
    clock = Clock(1000.0)
    pulls = LastPulls(FolderStore(tmp_path), "a", clock)
    for n in range(10):
        clock.now += 1
        pulls.record([("team/app", f"d{n}")])
    pulls.record([("team/app", "d7")])  # pulled again: the most recent now
    assert list(pulls.mine) == [("team/app", "d8"), ("team/app", "d9"), ("team/app", "d7")]


def test_an_unreadable_state_file_is_ignored_with_a_warning(tmp_path, caplog):
    (tmp_path / "a.json").write_text("{not json")
    assert LastPulls(FolderStore(tmp_path), "a").mine == {}
    assert "count as pulled when next seen" in caplog.text
    (tmp_path / "a.json").write_text(json.dumps({"pulls": [["r", "d", 5.0]]}))
    assert LastPulls(FolderStore(tmp_path), "a").mine == {("r", "d"): 5.0}


def test_every_pull_is_counted_with_its_bytes_and_warms_apart():
    blob = "application/octet-stream"
    warm_get = {**event(media=blob, size=5000), "request": {"method": "GET", "useragent": "artifactory-mirror-warm"}}
    envelope = {"events": [
        event(size=1200), event(media=blob, size=5000), event(media=blob, size=7000, method="HEAD"),
        {**event(media=blob), "target": {"mediaType": blob, "length": 300, "size": 999}}, warm_get,
        event(action="push"), "junk", {"action": "pull", "target": {"size": "many"}},
    ]}
    assert served_pulls(envelope) == [
        ("clients", "manifest", "GET", 1200), ("clients", "blob", "GET", 5000), ("clients", "blob", "HEAD", 0),
        ("clients", "blob", "GET", 300), ("warming", "blob", "GET", 5000), ("clients", "blob", "GET", 0)]
    assert served_pulls("junk") == [] and served_pulls({"events": None}) == []
