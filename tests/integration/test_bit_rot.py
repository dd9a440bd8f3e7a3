"""A flipped bit in a stored layer heals on the pull after the first failing one.

Before, the blob endpoint sent a stored file it found for another repository as verified, unhashed: every
repository sharing the layer got the corrupt bytes as a HIT, and the registry, which never replaces a data
file that exists, kept them for ever."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from devtools import seed
from devtools.skopeo import PullError, pull
from registry_mirror.blobs.stored import stored_path
from registry_mirror.storage.quarantine import folder

from .conftest import assert_pulled_identical, assert_storage_intact, blob_gets, credentials_of, wait_for


def flip_bit(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x01]))


def test_a_flipped_bit_in_a_shared_layer_is_moved_aside_and_fetched_again(upstream, mirror_factory, layer_cache,
                                                                          tmp_path):
    base = seed.random_layer(layer_cache, 4 * seed.MIB, 80)
    a = seed.build_image("team/a", "1.0", [base, seed.random_layer(layer_cache, seed.MIB, 81)])
    b = seed.build_image("team/b", "1.0", [base, seed.random_layer(layer_cache, seed.MIB, 82)])
    for image in (a, b):
        seed.push(upstream.registry_url, image)
    mirror = mirror_factory(credentials_of(upstream), dump=False, cache={"spool_keep": 0.5})
    pull(f"{mirror.address}/{a.name}:{a.tag}", tmp_path / "a", cert_dir=mirror.trust)
    mirror.settle(upstream, a)
    spool = Path(mirror.cfg.cache.spool_dir)
    wait_for(lambda: not any(spool.glob("artifactory-mirror-spool-*/blob-*")),
             "the addon to drop its spools (spool_keep)")
    data = stored_path(mirror.storage, base.digest)
    flip_bit(data, base.size // 2)

    # team/b has no link to the layer: the registry asks the addon, whose endpoint finds the stored file
    try:
        pull(f"{mirror.address}/{b.name}:{b.tag}", tmp_path / "b", cert_dir=mirror.trust)
    except PullError:
        pass  # the corrupt answer was cut short; a second fetch of the registry's may already have the good one
    pull(f"{mirror.address}/{b.name}:{b.tag}", tmp_path / "b", cert_dir=mirror.trust)
    mirror.settle(upstream, b)
    assert_pulled_identical(tmp_path / "b", b)

    moved = list(folder(mirror.storage).iterdir())
    assert len(moved) == 1 and moved[0].name.endswith(f"-sha256-{base.digest[7:]}")
    assert "sha256:" + hashlib.sha256(moved[0].read_bytes()).hexdigest() != base.digest
    logs = mirror.logs()
    assert f"stored blob {base.digest} is corrupt" in logs and "by the blob endpoint as it sent them" in logs
    assert mirror.stats()["served"]["blob"]["error"]["requests"] >= 1
    # the good copy came from the upstream, once more than before, and serves team/a again too
    base_gets = [r for r in blob_gets(upstream.stats()) if r["path"].endswith(base.digest)]
    assert len(base_gets) == 2 and "/team/b/" in base_gets[1]["path"], base_gets
    pull(f"{mirror.address}/{a.name}:{a.tag}", tmp_path / "a", cert_dir=mirror.trust)
    assert_pulled_identical(tmp_path / "a", a)
    assert_storage_intact(mirror.storage)



def test_a_flipped_bit_the_registry_serves_itself_is_moved_aside_after_its_pull(upstream, mirror_factory,
                                                                                layer_cache, tmp_path):
    """team/a links the layer, so the registry serves it from its storage, unchecked; its notification of the
    pull has the addon check the file in the background. A check is remembered for mirror.verify_interval, and the
    cold pull's may have found the file good: the flip comes while the mirror is stopped, as on a disk."""
    base = seed.random_layer(layer_cache, 4 * seed.MIB, 83)
    a = seed.build_image("team/a", "1.0", [base, seed.random_layer(layer_cache, seed.MIB, 84)])
    seed.push(upstream.registry_url, a)
    first = mirror_factory(credentials_of(upstream), dump=False)
    pull(f"{first.address}/{a.name}:{a.tag}", tmp_path / "a", cert_dir=first.trust)
    first.settle(upstream, a)
    first.mirror.stop()
    flip_bit(stored_path(first.storage, base.digest), 12345)
    mirror = mirror_factory(credentials_of(upstream), dump=False, storage=first.storage)

    with pytest.raises(PullError, match="(?i)digest"):  # the client checks what the registry sent
        pull(f"{mirror.address}/{a.name}:{a.tag}", tmp_path / "a", cert_dir=mirror.trust)
    wait_for(lambda: any(folder(mirror.storage).glob(f"*-sha256-{base.digest[7:]}")),
             "the check after the registry's pull to move the corrupt file aside")
    assert f"stored blob {base.digest} is corrupt" in mirror.logs() and "after a pull" in mirror.logs()

    pull(f"{mirror.address}/{a.name}:{a.tag}", tmp_path / "a", cert_dir=mirror.trust)
    mirror.settle(upstream, a)
    assert_pulled_identical(tmp_path / "a", a)
    assert len([r for r in blob_gets(upstream.stats()) if r["path"].endswith(base.digest)]) == 2
    assert_storage_intact(mirror.storage)
