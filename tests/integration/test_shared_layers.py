"""A base layer shared by many repositories crosses the WAN once per data center, not once per repository.

The stock registry's proxy looks a blob up per repository (a layer link under the repository), so a pull of
`team/b` asks the remote again for a base layer it stored for `team/a` minutes ago."""
from __future__ import annotations

from pathlib import Path

from devtools import seed
from devtools.skopeo import pull

from .conftest import assert_pulled_identical, blob_gets, credentials_of, wait_for


def test_a_layer_shared_by_two_repositories_is_fetched_once(upstream, mirror_factory, layer_cache, tmp_path):
    base = seed.random_layer(layer_cache, 8 * seed.MIB, 70)
    a = seed.build_image("team/a", "1.0", [base, seed.random_layer(layer_cache, seed.MIB, 71)])
    b = seed.build_image("team/b", "1.0", [base, seed.random_layer(layer_cache, seed.MIB, 72)])
    for image in (a, b):
        seed.push(upstream.registry_url, image)
    mirror = mirror_factory(credentials_of(upstream), dump=False, cache={"spool_keep": 0.5})
    pull(f"{mirror.address}/{a.name}:{a.tag}", tmp_path / "a", cert_dir=mirror.trust)
    mirror.settle(upstream, a)
    spool = Path(mirror.cfg.cache.spool_dir)
    wait_for(lambda: not any(spool.glob("artifactory-mirror-spool-*/blob-*")),
             "the addon to drop its spools (spool_keep)")
    pull(f"{mirror.address}/{b.name}:{b.tag}", tmp_path / "b", cert_dir=mirror.trust)
    mirror.settle(upstream, b)
    assert_pulled_identical(tmp_path / "a", a)
    assert_pulled_identical(tmp_path / "b", b)
    requests = upstream.stats()["requests"]
    base_gets = [r for r in blob_gets(upstream.stats()) if r["path"].endswith(base.digest)]
    assert len(base_gets) == 1 and "/team/a/" in base_gets[0]["path"], base_gets
    # the upstream still said that team/b has the layer: the registry asked before it fetched
    assert any(r["method"] == "HEAD" and r["path"].endswith(f"/team/b/blobs/{base.digest}") for r in requests)
    assert f"blob HIT blob team/b@{base.digest}: {base.size} bytes from the mirror's storage" in mirror.logs()
    assert mirror.stats()["served"]["blob"]["hit"]["bytes"] >= base.size
