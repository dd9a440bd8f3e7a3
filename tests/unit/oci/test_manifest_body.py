"""Only a manifest is cached as one: whatever else an upstream (or a desynchronized connection) answers."""
import pytest
from multidict import CIMultiDict

from registry_mirror.oci.manifest_body import ManifestMismatch, manifest_problem
from registry_mirror.oci.registry_requests import classify
from registry_mirror.upstream.client import SmallResponse
from tests.unit.manifests.test_service import headers, service


@pytest.mark.parametrize("body,problem", [
    (b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}', None),
    (b'{"schemaVersion": 1, "name": "app", "tag": "1.0", "fsLayers": []}', None),
    (b'{"token": "abc", "expires_in": 300}', "schemaVersion is null, not 1 or 2"),
    (b'{"schemaVersion": true}', "schemaVersion is true, not 1 or 2"),
    (b'{"schemaVersion": "2"}', 'schemaVersion is "2", not 1 or 2'),
    (b"[2]", "not a JSON object"),
    (b"<html>login</html>", "not JSON"),
    (b"hello", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"", "not JSON"),
])
def test_what_counts_as_a_manifest(body, problem):
    assert manifest_problem(body) == problem


async def test_a_token_reply_read_as_a_manifest_is_never_cached():
    svc, up, _ = service()
    token_reply = b'{"token": "t0k3n", "access_token": "t0k3n", "expires_in": 300}'

    async def desynchronized(method, req, hdrs):  # no Docker-Content-Digest: the digest would be its own
        up.calls.append(method)
        return SmallResponse(200, CIMultiDict({"Content-Type": "application/json"}), token_reply, "Bearer")
    up.fetch_small = desynchronized
    tag = classify("GET", "/v2/app/manifests/1.0")
    with pytest.raises(ManifestMismatch, match=r"is not a manifest \(schemaVersion is null"):
        await svc.answer(tag, headers())
    assert len(svc.known.tags) == 0 and len(svc.manifests) == 0 and up.calls == ["GET"]
