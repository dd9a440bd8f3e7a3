"""Against an upstream that writes its answers as real servers and networks deliver them: in small pieces,
with pauses, chunked. Our own front writes each body at once over loopback and never shows a cut body."""
from __future__ import annotations

import json
import urllib.request

import pytest

from devtools import seed
from devtools.skopeo import PullError, pull

from .conftest import assert_pulled_identical, assert_storage_intact, credentials_of, small_image

SMALL_BODIES = "manifests,tags,token"


@pytest.mark.parametrize("behaviour", [{"piece": 100, "pause": 0.002}, {"piece": 512, "chunked": 1},
                                       {"target": "all", "piece": 16384, "chunked": 1}],
                         ids=["pieces", "chunked", "chunked-blobs-too"])
def test_manifests_tag_lists_and_tokens_written_in_pieces_arrive_whole(upstream, wire_factory, mirror_factory,
                                                                       layer_cache, tmp_path, behaviour):
    wire = wire_factory(upstream)
    image = small_image(layer_cache, name="team/pieces")
    seed.push(upstream.registry_url, image)
    for n in range(40):  # a tag list of some 1.5 KB: many pieces
        seed.push(upstream.registry_url, seed.build_image(image.name, f"release-{n:04d}", [image.layers[2]]))
    mirror = mirror_factory(credentials_of(upstream, via=wire), dump=False)
    wire.behave(**{"target": SMALL_BODIES, **behaviour})
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


def test_an_https_upstream_writing_in_pieces(upstream, wire_factory, mirror_factory, layer_cache, tmp_path):
    wire = wire_factory(upstream, tls=True)  # TLS records cut bodies too
    image = small_image(layer_cache, name="team/tls")
    seed.push(upstream.registry_url, image)
    mirror = mirror_factory(credentials_of(upstream, via=wire), dump=False)
    wire.behave(piece=1000)
    pull(f"{mirror.address}/{image.name}:{image.tag}", tmp_path / "out", cert_dir=mirror.trust)
    assert_pulled_identical(tmp_path / "out", image)
    assert wire.stats()["answered"] > 0 and not {k for k in mirror.counters() if k.endswith(":error")}


def test_blobs_redirected_to_signed_storage_on_another_host_get_no_credential(upstream, wire_factory,
                                                                             mirror_factory, layer_cache, tmp_path):
    wire = wire_factory(upstream, storage=True)
    image = small_image(layer_cache, name="team/signed")
    seed.push(upstream.registry_url, image)
    mirror = mirror_factory(credentials_of(upstream, via=wire))
    wire.behave(target="blobs", redirect=1)
    pull(f"{mirror.address}/{image.name}:{image.tag}", tmp_path / "out", cert_dir=mirror.trust)
    assert_pulled_identical(tmp_path / "out", image)
    mirror.settle(upstream, image)
    stats = wire.stats()
    assert stats["storage_requests"] == len(image.layers) + 1  # each blob once, through the redirect
    assert stats["storage_with_authorization"] == 0
    assert "X-Amz-Signature" not in mirror.logs()  # a signed URL's query is its credential


def test_a_429_is_retried_after_its_retry_after(upstream, wire_factory, mirror_factory, layer_cache, tmp_path):
    wire = wire_factory(upstream)
    image = small_image(layer_cache, name="team/limited")
    seed.push(upstream.registry_url, image)
    mirror = mirror_factory(credentials_of(upstream, via=wire), dump=False)
    wire.behave(target="manifests", status=429, retry_after="1", times=1)
    pull(f"{mirror.address}/{image.name}:{image.tag}", tmp_path / "out", cert_dir=mirror.trust)
    assert_pulled_identical(tmp_path / "out", image)
    assert wire.stats()["quirks"] == 1  # the one 429 was answered, and retried
    assert not {k for k in mirror.counters() if k.endswith(":error")}


def test_a_known_tag_is_answered_stale_while_rate_limited(upstream, wire_factory, mirror_factory, layer_cache,
                                                          tmp_path):
    wire = wire_factory(upstream)
    image = small_image(layer_cache, name="team/limited")
    seed.push(upstream.registry_url, image)
    mirror = mirror_factory(credentials_of(upstream, via=wire), dump=False, cache={"tag_ttl": 0})
    pull(f"{mirror.address}/{image.name}:{image.tag}", tmp_path / "first", cert_dir=mirror.trust)
    wire.behave(target="manifests", status=429, retry_after="120")  # longer than any retry may wait
    pull(f"{mirror.address}/{image.name}:{image.tag}", tmp_path / "again", cert_dir=mirror.trust)
    assert_pulled_identical(tmp_path / "again", image)
    assert mirror.counters().get("manifest-by-tag:stale", 0) >= 1


def test_a_wrong_blob_size_in_a_head_is_dropped_once_a_transfer_disagrees(upstream, wire_factory, mirror_factory,
                                                                          layer_cache, tmp_path):
    wire = wire_factory(upstream)
    image = small_image(layer_cache, name="team/sized")
    seed.push(upstream.registry_url, image)
    mirror = mirror_factory(credentials_of(upstream, via=wire), dump=False)
    wire.behave(target="blobs", head_size=5, times=1)  # the first blob HEAD claims 5 bytes
    with pytest.raises(PullError):  # the stock registry believes the HEAD: the client gets 5 bytes
        pull(f"{mirror.address}/{image.name}:{image.tag}", tmp_path / "first", cert_dir=mirror.trust)
    mirror.settle(upstream)
    assert mirror.stats()["integrity"]["cache_dropped_inconsistent"] == 1
    pull(f"{mirror.address}/{image.name}:{image.tag}", tmp_path / "second", cert_dir=mirror.trust)
    assert_pulled_identical(tmp_path / "second", image)
    assert_blob_heads_match(mirror, image)


def test_stray_bytes_after_an_answer_on_a_keep_alive_connection(upstream, wire_factory, mirror_factory,
                                                                 layer_cache, tmp_path):
    """A broken upstream leaves a whole bogus answer behind its own on a kept-alive connection. The request
    that reads it cannot tell (a pull then may fail once); what the mirror keeps must not be poisoned by it:
    the next pull succeeds, without a restart, and every cached size is the blob's true one."""
    wire = wire_factory(upstream)
    image = small_image(layer_cache, name="team/stray")
    seed.push(upstream.registry_url, image)
    mirror = mirror_factory(credentials_of(upstream, via=wire), dump=False)
    bogus = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    wire.behave(target="manifests,blobs", garbage=bogus, times=2)
    try:
        pull(f"{mirror.address}/{image.name}:{image.tag}", tmp_path / "first", cert_dir=mirror.trust)
    except PullError:
        pass  # which request met the stray answer is up to connection reuse: the next pull is what counts
    assert wire.stats()["quirks"] == 2
    mirror.settle(upstream)
    pull(f"{mirror.address}/{image.name}:{image.tag}", tmp_path / "out", cert_dir=mirror.trust)
    assert_pulled_identical(tmp_path / "out", image)
    assert_blob_heads_match(mirror, image)
    assert_storage_intact(mirror.storage)


def assert_blob_heads_match(mirror, image) -> None:
    """The mirror's HEAD answers (its cache) give every blob's true size."""
    for blob in (*image.layers, image.config):
        request = urllib.request.Request(f"{mirror.rewriter}/v2/{image.name}/blobs/{blob.digest}", method="HEAD")
        with urllib.request.urlopen(request, timeout=30) as resp:
            assert int(resp.headers["Content-Length"]) == blob.size, blob.digest
