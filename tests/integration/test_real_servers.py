"""Against an upstream that writes its answers as real servers and networks deliver them: in small pieces,
with pauses, chunked. Our own front writes each body at once over loopback and never shows a cut body."""
from __future__ import annotations

import json
import urllib.request

import pytest
from devtools import seed
from devtools.skopeo import pull

from .conftest import assert_pulled_identical, credentials_of, small_image

SMALL_BODIES = "manifests,tags,token"


@pytest.mark.parametrize("behaviour", [{"piece": 100, "pause": 0.002}, {"piece": 512, "chunked": 1}],
                         ids=["pieces", "chunked"])
def test_manifests_tag_lists_and_tokens_written_in_pieces_arrive_whole(upstream, wire_factory, mirror_factory,
                                                                       layer_cache, tmp_path, behaviour):
    wire = wire_factory(upstream)
    image = small_image(layer_cache, name="team/pieces")
    seed.push(upstream.registry_url, image)
    for n in range(40):  # a tag list of some 1.5 KB: many pieces
        seed.push(upstream.registry_url, seed.build_image(image.name, f"release-{n:04d}", [image.layers[2]]))
    mirror = mirror_factory(credentials_of(upstream, via=wire), dump=False)
    wire.behave(target=SMALL_BODIES, **behaviour)
    pull(f"{mirror.address}/{image.name}:{image.tag}", tmp_path / "out", cert_dir=mirror.trust)
    assert_pulled_identical(tmp_path / "out", image)
    with urllib.request.urlopen(f"{mirror.rewriter}/v2/{image.name}/tags/list", timeout=30) as resp:
        tags = json.load(resp)["tags"]
    assert len(tags) == 41 and image.tag in tags
    counters = mirror.counters()
    assert counters.get("manifest-by-tag:miss", 0) >= 1 and counters.get("tags:miss", 0) == 1
    assert not {k for k in counters if k.endswith(":error")}, counters
    assert mirror.stats()["upstream"]["token_refreshes"] >= 1  # the token reply came in pieces too
    assert wire.stats()["answered"] > 0
