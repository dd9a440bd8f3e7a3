import asyncio
import hashlib
import json
import time

import pytest
from mitmproxy.http import Headers
from multidict import CIMultiDict

from registry_mirror.config.load import CacheConfig
from registry_mirror.manifests.blob_heads import BlobHeads
from registry_mirror.manifests.service import ManifestService, accept_key
from registry_mirror.manifests.tag_state import TagState
from registry_mirror.oci.manifest_body import ManifestMismatch
from registry_mirror.oci.registry_requests import classify
from registry_mirror.responses import next_page_link
from registry_mirror.stats.counters import Stats
from registry_mirror.upstream.client import SmallResponse
from registry_mirror.upstream.health import UpstreamHealth
from tests.unit.oci.test_schema1 import signed
from tests.unit.support.clocks import Clock

INDEX = "application/vnd.oci.image.index.v1+json"
IMAGE = "application/vnd.oci.image.manifest.v1+json"


def body_for(media_type: str, n: int = 0) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": media_type, "n": n}).encode()


def digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


class FakeUpstream:
    """Serves an index to clients that accept one, else the image manifest; counts calls."""

    def __init__(self):
        self.calls, self.version, self.lie = [], 0, False
        self.anonymous_heads = False  # blob HEADs without the Docker-Content-Digest that names the blob

    async def fetch_small(self, method, req, headers):
        self.calls.append((method, req.kind.value, req.reference))
        await asyncio.sleep(0)  # a suspension point, as a real request has; no time passes
        if req.kind.value == "blob":
            named = {} if self.anonymous_heads else {"Docker-Content-Digest": req.reference}
            return SmallResponse(200, CIMultiDict({"Content-Length": "42", "Content-Type": "x/y", **named}), b"",
                                 "Bearer")
        media = INDEX if INDEX in (headers.get("Accept") or "") else IMAGE
        body = body_for(media, self.version)
        claimed = digest(body_for(media, 99)) if self.lie else digest(body)
        return SmallResponse(200, CIMultiDict({"Content-Type": media, "Docker-Content-Digest": claimed,
                                               "Content-Length": str(len(body))}), body, "Bearer")


def manifest_service(up, cfg: CacheConfig, clock=time.monotonic, health=None, stats=None, known=None):
    """A ManifestService with what Router gives one (the route's health, the stats, its last known tags, its blob
    HEAD cache), each
    a fresh one unless given."""
    return ManifestService(up, cfg, health or UpstreamHealth(timer=clock), stats or Stats(),
                           TagState(cfg.tag_state_file) if known is None else known,
                           BlobHeads(cfg.blob_head_ttl, clock), timer=clock)


def service(ttl=30.0):
    up, clock = FakeUpstream(), Clock()
    return manifest_service(up, CacheConfig(tag_ttl=ttl), clock), up, clock


def headers(*accept):
    return Headers([(b"Accept", a.encode()) for a in accept])


@pytest.mark.parametrize("values,expected", [
    (["a/b, c/d"], {"a/b", "c/d"}),
    (["c/d", "A/B; q=0.5"], {"a/b", "c/d"}),
    ([], set()),
])
def test_accept_key(values, expected):
    assert accept_key(values) == frozenset(expected)


async def test_tag_cached_per_accept_set_with_the_right_headers():
    svc, up, _ = service()
    tag = classify("GET", "/v2/app/manifests/1.0")
    a = await svc.answer(tag, headers(INDEX, IMAGE))
    b = await svc.answer(tag, headers(IMAGE, INDEX))  # same set, other order
    c = await svc.answer(tag, headers(IMAGE))
    assert (a.outcome, b.outcome, c.outcome) == ("MISS", "HIT", "MISS")
    assert a.headers["Content-Type"] == INDEX and c.headers["Content-Type"] == IMAGE
    assert b.headers["Docker-Content-Digest"] == digest(body_for(INDEX))
    assert b.headers["Content-Length"] == str(len(b.body)) and b.body == body_for(INDEX)
    by_digest = await svc.answer(classify("HEAD", f"/v2/app/manifests/{digest(body_for(IMAGE))}"), headers())
    assert by_digest.outcome == "HIT" and by_digest.headers["Content-Type"] == IMAGE
    assert len(up.calls) == 2


async def test_tag_change_is_seen_after_the_ttl():
    svc, up, clock = service(ttl=30)
    tag = classify("GET", "/v2/app/manifests/1.0")
    first = await svc.answer(tag, headers(IMAGE))
    up.version = 1
    clock.now = 29
    assert (await svc.answer(tag, headers(IMAGE))).body == first.body
    clock.now = 31
    later = await svc.answer(tag, headers(IMAGE))
    assert later.outcome == "MISS" and later.body == body_for(IMAGE, 1)


async def test_zero_ttl_never_caches_tags():
    svc, up, _ = service(ttl=0)
    tag = classify("GET", "/v2/app/manifests/1.0")
    await svc.answer(tag, headers(IMAGE))
    assert (await svc.answer(tag, headers(IMAGE))).outcome == "MISS"


async def test_manifest_not_matching_its_digest_is_refused_and_not_cached():
    svc, up, _ = service()
    up.lie = True
    with pytest.raises(ManifestMismatch):
        await svc.answer(classify("GET", "/v2/app/manifests/1.0"), headers(IMAGE))
    wrong = "sha256:" + "0" * 64
    up.lie = False
    with pytest.raises(ManifestMismatch):
        await svc.answer(classify("GET", f"/v2/app/manifests/{wrong}"), headers(IMAGE))
    assert len(svc.manifests) == 0 and len(svc.tags) == 0


async def test_overlapping_requests_share_one_fetch():
    svc, up, _ = service()
    tag = classify("GET", "/v2/app/manifests/1.0")
    answers = await asyncio.gather(*(svc.answer(tag, headers(IMAGE)) for _ in range(10)))
    assert len(up.calls) == 1
    assert sorted(a.outcome for a in answers) == ["COALESCED"] * 9 + ["MISS"]


async def test_blob_heads_are_remembered():
    svc, up, _ = service()
    head = classify("HEAD", "/v2/app/blobs/sha256:" + "a" * 64)
    assert (await svc.answer(head, headers())).outcome == "MISS"
    again = await svc.answer(head, headers())
    assert again.outcome == "HIT" and again.headers["Content-Length"] == "42"
    assert len(up.calls) == 1


async def test_a_blob_head_that_does_not_name_its_blob_is_passed_on_never_cached():
    svc, up, _ = service()
    up.anonymous_heads = True  # a stray answer, a proxy's page: no Docker-Content-Digest for this blob
    head = classify("HEAD", "/v2/app/blobs/sha256:" + "a" * 64)
    outcomes = [(await svc.answer(head, headers())).outcome for _ in range(2)]
    assert outcomes == ["MISS", "MISS"] and len(up.calls) == 2


@pytest.mark.parametrize("link,expected", [
    ('</artifactory/api/docker/docker-local/v2/team/app/tags/list?last=v9&n=100>; rel="next"',
     '</v2/team/app/tags/list?last=v9&n=100>; rel="next"'),
    ('<https://art.example.com/v2/library/app/tags/list?n=2&last=b&evil=1>; rel=next',
     '</v2/team/app/tags/list?n=2&last=b>; rel="next"'),  # only the page parameters survive
    ('<https://art.example.com/v2/app/tags/list?n=2>; rel="prev"', None),
    (None, None),
    ("garbage", None),
])
def test_a_paginated_tag_list_links_to_the_mirrors_own_path(link, expected):
    assert next_page_link(link, "team/app") == expected


async def test_the_tag_list_answer_carries_the_rewritten_link():
    class Paginating(FakeUpstream):
        async def fetch_small(self, method, req, headers):
            return SmallResponse(200, CIMultiDict({"Content-Type": "application/json", "Link":
                                                   '</artifactory/api/docker/r/v2/team/app/tags/list?last=b&n=2>; '
                                                   'rel="next"'}), b'{"tags": ["a", "b"]}', "Bearer")
    svc = manifest_service(Paginating(), CacheConfig())
    answer = await svc.answer(classify("GET", "/v2/team/app/tags/list?n=2"), headers(), "GET")
    assert answer.headers["Link"] == '</v2/team/app/tags/list?last=b&n=2>; rel="next"'


SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+prettyjws"


class Schema1Upstream(FakeUpstream):
    """Serves a signed schema1 manifest, claiming the digest Distribution gives it (or the whole body's)."""

    def __init__(self, body: bytes, claimed: str):
        super().__init__()
        self.body, self.claimed = body, claimed

    async def fetch_small(self, method, req, headers):
        self.calls.append((method, req.kind.value, req.reference))
        return SmallResponse(200, CIMultiDict({"Content-Type": SCHEMA1, "Docker-Content-Digest": self.claimed,
                                               "Content-Length": str(len(self.body))}), self.body, "Bearer")


async def test_a_signed_schema1_manifest_is_named_by_its_payload_and_cached():
    body, payload = signed(keys=("K1", "K2"))
    up = Schema1Upstream(body, digest(payload))
    svc = manifest_service(up, CacheConfig())

    by_tag = await svc.answer(classify("GET", "/v2/app/manifests/1.0"), headers(SCHEMA1))
    assert by_tag.outcome == "MISS" and by_tag.body == body  # served as signed, byte for byte
    assert by_tag.headers["Docker-Content-Digest"] == digest(payload) != digest(body)
    assert by_tag.headers["Content-Type"] == SCHEMA1 and by_tag.headers["Content-Length"] == str(len(body))
    by_digest = await svc.answer(classify("GET", f"/v2/app/manifests/{digest(payload)}"), headers(SCHEMA1))
    assert by_digest.outcome == "HIT" and by_digest.body == body and len(up.calls) == 1
    assert list(svc.manifests) == [digest(payload)]
    assert svc.tags[("app", "1.0", frozenset({SCHEMA1}))] == digest(payload)


async def test_a_signed_schema1_manifest_claiming_its_whole_bodys_digest_is_refused():
    body, _ = signed()
    svc = manifest_service(Schema1Upstream(body, digest(body)), CacheConfig())
    with pytest.raises(ManifestMismatch, match="does not match its digest"):
        await svc.answer(classify("GET", "/v2/app/manifests/1.0"), headers(SCHEMA1))
    assert len(svc.manifests) == 0


async def test_a_malformed_signed_manifest_is_refused_saying_why():
    body = json.dumps({"schemaVersion": 1, "signatures": []}).encode()
    svc = manifest_service(Schema1Upstream(body, digest(body)), CacheConfig())
    with pytest.raises(ManifestMismatch, match='malformed signed manifest .*no "signatures" list'):
        await svc.answer(classify("GET", "/v2/app/manifests/1.0"), headers(SCHEMA1))
    assert len(svc.manifests) == 0 and len(svc.tags) == 0


@pytest.mark.parametrize("status", [401, 403])
async def test_a_refused_credential_is_the_last_error_though_the_upstream_is_up(status):
    class Refusing(FakeUpstream):
        async def fetch_small(self, method, req, headers):
            return SmallResponse(status, CIMultiDict({"Content-Type": "application/json"}), b"{}", "Basic")

    health = UpstreamHealth()
    svc = manifest_service(Refusing(), CacheConfig(), health=health)
    answer = await svc.answer(classify("GET", "/v2/app/manifests/1.0"), headers(IMAGE))
    assert answer.status == status and not health.down
    assert health.last_error == (f"GET manifest-by-tag app: status {status}: the upstream refused the mirror's "
                                 "credential or its permissions")


async def test_forget_tag_makes_the_next_answer_ask_the_upstream():
    svc, up, _ = service()
    tag = classify("GET", "/v2/app/manifests/1.0")
    await svc.answer(tag, headers(IMAGE))
    await svc.answer(tag, headers(INDEX))
    await svc.answer(classify("GET", "/v2/app/manifests/2.0"), headers(IMAGE))
    up.version = 1  # pushed: a webhook says so before the TTL ends
    assert svc.forget_tag("app", "1.0") == 2  # every Accept set
    later = await svc.answer(tag, headers(IMAGE))
    assert later.outcome == "MISS" and later.body == body_for(IMAGE, 1)
    assert (await svc.answer(classify("GET", "/v2/app/manifests/2.0"), headers(IMAGE))).outcome == "HIT"
    assert svc.known.get(("app", "1.0", frozenset({INDEX}))) is not None  # still there for stale-if-error
    assert service(ttl=0)[0].forget_tag("app", "1.0") == 0


class Deleted(FakeUpstream):
    """Answers 404 for the tag `gone` and any other status for the tag `broken`."""
    async def fetch_small(self, method, req, headers):
        if req.reference in ("gone", "broken"):
            self.calls.append((method, req.kind.value, req.reference))
            return SmallResponse(404 if req.reference == "gone" else 503, CIMultiDict(), b"{}", "Bearer")
        return await super().fetch_small(method, req, headers)


async def test_a_tag_the_upstream_answers_404_for_is_told_before_the_404_is_answered_and_others_never():
    svc = manifest_service(Deleted(), CacheConfig(tag_ttl=30.0), Clock())
    told = []

    async def gone(name, tag):
        told.append((name, tag, svc.upstream.calls[-1]))
    svc.on_tag_gone = gone
    answers = [await svc.answer(classify("GET", f"/v2/team/app/manifests/{tag}"), headers(IMAGE), "GET")
               for tag in ("gone", "broken")]
    assert [a.status for a in answers] == [404, 503]
    assert told == [("team/app", "gone", ("GET", "manifest-by-tag", "gone"))]


class MissingDigests(FakeUpstream):
    """Has no manifest by digest: 404, as Artifactory answers one never pushed."""

    async def fetch_small(self, method, req, headers):
        if req.kind.value == "manifest-by-digest":
            return SmallResponse(404, CIMultiDict({"Content-Type": "application/json"}),
                                 b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}', "Bearer")
        return await super().fetch_small(method, req, headers)


async def test_a_missing_digest_is_counted_and_said_as_the_last_error():
    stats, clock = Stats(), Clock()
    health = UpstreamHealth(timer=clock, wall_clock=Clock(1_800_000_000.0))
    svc = manifest_service(MissingDigests(), CacheConfig(tag_ttl=30), clock, health=health, stats=stats)
    ref = "sha256:" + "0" * 64
    answer = await svc.answer(classify("GET", f"/v2/team/app/manifests/{ref}"), headers(IMAGE), "GET")
    assert answer.status == 404
    assert stats.snapshot()["missing_digests"] == {"upstream": 1}
    assert health.last_error == (f"GET manifest-by-digest team/app@{ref}: the upstream has no such manifest (404); "
                                 "clients see 500 from the stock registry")
    assert not health.down and health.last_error_at == 1_800_000_000.0
