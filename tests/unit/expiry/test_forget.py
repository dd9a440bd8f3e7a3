"""`forget`: an image deleted upstream leaves the mirror's storage and caches; nothing another image needs goes."""
import json
import time

import pytest
from mitmproxy.test import tflow, tutils

from registry_mirror.config.load import CacheConfig
from registry_mirror.expiry.forget import Target, TargetError, images_named, parse_target
from registry_mirror.expiry.last_pulls import LastPulls
from registry_mirror.expiry.passes import Expiry
from registry_mirror.manifests.blob_heads import BlobHeads
from registry_mirror.manifests.service import Manifest, ManifestService
from registry_mirror.manifests.tag_state import KnownTag, TagState
from registry_mirror.proxy.addon import RegistryMirror
from registry_mirror.proxy.notifications import SECRET_HEADER
from registry_mirror.proxy.pages import StatusPages
from registry_mirror.stats.counters import Stats
from registry_mirror.stats.views import FORGET_PATH
from registry_mirror.storage.inventory import Image, inventory

SHA = "sha256:" + "a" * 64


@pytest.mark.parametrize("text,target", [
    ("team/app", Target("team/app")),
    ("team/app:1.0", Target("team/app", tag="1.0")),
    ("registry/team/app@" + SHA, Target("registry/team/app", digest=SHA)),
    ("team/app:1.0@" + SHA, Target("team/app", digest=SHA)),  # the digest wins, as with docker
])
def test_parse_target(text, target):
    assert parse_target(text) == target


@pytest.mark.parametrize("text", ["", "Team/App", "team/app:", "team/app@sha256:short", "../etc:1"])
def test_a_bad_target_names_what_would_be_right(text):
    with pytest.raises(TargetError, match="team/app:1.0"):
        parse_target(text)


def two_tags_and_a_shared_base(storage):
    base = storage.blob(5000)
    old = storage.image("team/app", [base, storage.blob(3000)], tag="1.0")
    new = storage.image("team/app", [base, storage.blob(2000)], tag="2.0")
    other = storage.image("team/web", [base], tag="1.0")
    return base, old, new, other


def test_a_tag_names_its_image_a_digest_its_image_a_repository_all_of_its(storage):
    _, old, new, _ = two_tags_and_a_shared_base(storage)
    inv = inventory(storage.store)
    assert images_named(inv, Target("team/app", tag="1.0")) == {Image("team/app", old)}
    assert images_named(inv, Target("team/app", digest=new)) == {Image("team/app", new)}
    assert images_named(inv, Target("team/app")) == {Image("team/app", old), Image("team/app", new)}
    assert images_named(inv, Target("team/app", tag="9.9")) == frozenset()
    assert images_named(inv, Target("team/gone")) == frozenset()


async def test_forget_removes_the_image_and_keeps_what_others_need(storage, new_store):
    base, old, new, other = two_tags_and_a_shared_base(storage)
    expiry = Expiry(storage.store, 7 * 86400, None, LastPulls(new_store("pulls"), "test"), grace=0)
    before = storage.tree()
    dry = await expiry.forget(Target("team/app", tag="1.0"), dry_run=True)
    assert [r.image for r in dry.removals] == [Image("team/app", old)] and storage.tree() == before
    await expiry.forget(Target("team/app", tag="1.0"))
    inv = inventory(storage.store)
    assert Image("team/app", old) not in inv.images and "1.0" not in inv.repositories["team/app"].tags
    assert {Image("team/app", new), Image("team/web", other)} <= set(inv.images)
    assert base in inv.blob_sizes and storage.broken_links() == []
    assert expiry.state.images_forgotten == 1


class NoUpstream:
    pass


async def test_the_caches_forget_the_tag_its_last_known_digest_and_its_manifest(tmp_path):
    service = ManifestService(NoUpstream(), CacheConfig(), None, Stats(), TagState(None), BlobHeads(0, time.monotonic))
    service.tags[("team/app", "1.0", "accepts")] = SHA
    service.tags[("team/app", "2.0", "accepts")] = "sha256:" + "b" * 64
    service.known.put(("team/app", "1.0", frozenset()), KnownTag(SHA, "t", 1, 0.0))
    service.manifests[SHA] = Manifest(SHA, "application/vnd.oci.image.manifest.v1+json", b"{}")
    service.forget("team/app", "1.0")
    assert list(service.tags) == [("team/app", "2.0", "accepts")]
    assert not service.known.tags and SHA not in service.manifests


async def post_forget(mirror, body: dict, secret: str = "s3cret"):
    headers = [(b"host", b"127.0.0.1:8081"), (SECRET_HEADER.encode(), secret.encode())]
    f = tflow.tflow(req=tutils.treq(method=b"POST", path=FORGET_PATH.encode(), host="127.0.0.1", port=8081,
                                    headers=headers, content=json.dumps(body).encode()))
    await StatusPages(mirror).request(f)
    return f.response.status_code, json.loads(f.response.content)


async def test_the_forget_page_needs_the_secret_and_a_valid_image():
    mirror = RegistryMirror()
    mirror.notify_secret = "s3cret"
    mirror.services = object()  # started
    assert (await post_forget(mirror, {"image": "team/app:1.0"}, secret="guess"))[0] == 401
    status, answer = await post_forget(mirror, {"image": "Team/App"})
    assert status == 400 and "team/app:1.0" in answer["reason"]


def test_the_forget_command_acts_on_the_storage_when_no_mirror_listens(tmp_path, folder_storage, capsys):
    from devtools.ports import free_port
    from registry_mirror.cli.commands import main
    storage = folder_storage
    _, old, new, _ = two_tags_and_a_shared_base(storage)
    config = tmp_path / "mirror.yaml"
    config.write_text(f"upstream:\n  url: https://art.example.com\n  repository: docker-local\n  anonymous: true\n"
                      f"mirror:\n  storage: {storage.root}\nrewriter:\n  listen: 127.0.0.1:{free_port()}\n")
    assert main(["--config", str(config), "forget", "team/app:1.0"]) == 0
    out = capsys.readouterr().out
    assert f"forgot team/app@{old}" in out and "no mirror answers at" in out
    assert Image("team/app", old) not in inventory(storage.store).images and storage.broken_links() == []
    assert main(["--config", str(config), "forget", "Team/App"]) == 2
