"""`artifactory-mirror forget`: an image deleted upstream (a leaked secret) stops being served, even while
Artifactory is down, when the stock registry would otherwise answer from its own tag."""
from __future__ import annotations

import subprocess

import pytest

from devtools import seed
from devtools.skopeo import PullError, pull

from .conftest import MIRROR_COMMAND, Stored, assert_storage_intact, credentials_of, small_image, wait_for

PULL_DEADLINE = 120


def test_a_forgotten_tag_is_not_served_from_storage_while_the_upstream_fails(upstream, mirror_factory, layer_cache,
                                                                             tmp_path, bucket):
    image = small_image(layer_cache)
    kept = small_image(layer_cache, name="team/kept", seed_base=70)
    for each in (image, kept):
        seed.push(upstream.registry_url, each)
    mirror = mirror_factory(credentials_of(upstream), cache={"tag_ttl": 0}, bucket=bucket)
    for each in (image, kept):
        pull(f"{mirror.address}/{each.name}:{each.tag}", tmp_path / each.name, cert_dir=mirror.trust,
             timeout=PULL_DEADLINE)
    mirror.settle(upstream, image, kept)
    upstream.fault(mode="status", code=503)  # cached tags are served from the registry's storage now

    command = [MIRROR_COMMAND, "--config", mirror.cfg.source, "forget"]
    dry = subprocess.run([*command, "--dry-run", f"{image.name}:{image.tag}"], capture_output=True, text=True)
    assert dry.returncode == 0 and f"would forget {image.name}@{image.manifest_digest}" in dry.stdout
    pull(f"{mirror.address}/{image.name}:{image.tag}", tmp_path / "still", cert_dir=mirror.trust,
         timeout=PULL_DEADLINE)  # a dry run changes nothing
    done = subprocess.run([*command, f"{image.name}:{image.tag}"], capture_output=True, text=True)
    assert done.returncode == 0 and f"forgot {image.name}@{image.manifest_digest}" in done.stdout
    assert "the running mirror" in done.stdout

    for ref in (f":{image.tag}", f"@{image.manifest_digest}"):
        with pytest.raises(PullError):
            pull(f"{mirror.address}/{image.name}{ref}", tmp_path / "gone", cert_dir=mirror.trust,
                 timeout=PULL_DEADLINE)
    pull(f"{mirror.address}/{kept.name}:{kept.tag}", tmp_path / "kept", cert_dir=mirror.trust,
         timeout=PULL_DEADLINE)  # another image: still served
    assert mirror.stats()["storage"]["images_forgotten"] == 1
    stored = Stored(mirror, bucket)
    stored.assert_intact()
    assert image.manifest_digest not in stored.digests() and not stored.links(image.name)


@pytest.mark.parametrize("forget_deleted_tags", [True, False])
def test_a_tag_deleted_upstream_is_not_found_here_when_asked(upstream, mirror_factory, layer_cache, tmp_path,
                                                             forget_deleted_tags):
    """With cache.forget_deleted_tags, an upstream 404 for a tag removes the mirror's tag (the image stays by
    digest); without, the stock registry keeps serving its own tag. A 503 never removes anything."""
    image = small_image(layer_cache)
    seed.push(upstream.registry_url, image)
    mirror = mirror_factory(credentials_of(upstream), cache={"tag_ttl": 0, "forget_deleted_tags": forget_deleted_tags})
    by_tag = f"{mirror.address}/{image.name}:{image.tag}"
    by_digest = f"{mirror.address}/{image.name}@{image.manifest_digest}"
    pull(by_tag, tmp_path / "cold", cert_dir=mirror.trust, timeout=PULL_DEADLINE)
    mirror.settle(upstream, image)

    upstream.fault(mode="status", code=503, target="manifests")  # an outage: the tag stays
    pull(by_tag, tmp_path / "outage", cert_dir=mirror.trust, timeout=PULL_DEADLINE)
    upstream.fault(mode="status", code=404, target="manifests")  # deleted upstream
    try:  # right after the outage the tag is answered stale at once, its refresh in the background
        pull(by_tag, tmp_path / "deleted", cert_dir=mirror.trust, timeout=PULL_DEADLINE)
    except PullError:
        assert forget_deleted_tags
    if forget_deleted_tags:
        wait_for(lambda: "is not found upstream: the mirror's tag is removed" in mirror.logs(), "the tag removed")
        with pytest.raises(PullError):
            pull(by_tag, tmp_path / "deleted", cert_dir=mirror.trust, timeout=PULL_DEADLINE)
    else:
        pull(by_tag, tmp_path / "deleted", cert_dir=mirror.trust, timeout=PULL_DEADLINE)
    pull(by_digest, tmp_path / "by-digest", cert_dir=mirror.trust, timeout=PULL_DEADLINE)  # until `forget`
    assert_storage_intact(mirror.storage)
