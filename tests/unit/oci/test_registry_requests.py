import pytest

from registry_mirror.oci.registry_requests import Kind, Refusal, RegistryRequest, classify, upstream_path

D = "sha256:" + "a" * 64


@pytest.mark.parametrize("method,path,kind,name,ref", [
    ("GET", "/v2/", Kind.PING, "", ""),
    ("GET", "/v2", Kind.PING, "", ""),
    ("HEAD", "/v2/busybox/manifests/latest", Kind.MANIFEST_BY_TAG, "busybox", "latest"),
    ("GET", "/v2/team-a/app/manifests/1.0.3_rc-1", Kind.MANIFEST_BY_TAG, "team-a/app", "1.0.3_rc-1"),
    ("GET", f"/v2/library/busybox/manifests/{D}", Kind.MANIFEST_BY_DIGEST, "library/busybox", D),
    ("GET", f"/v2/a/b/c/blobs/{D}", Kind.BLOB, "a/b/c", D),
    ("HEAD", f"/v2/x__y.z/blobs/{D}", Kind.BLOB, "x__y.z", D),
    ("GET", "/v2/foo/tags/list", Kind.TAGS, "foo", ""),
    ("GET", "/v2/foo/blobs/x/manifests/v1", Kind.MANIFEST_BY_TAG, "foo/blobs/x", "v1"),
])
def test_classify_accepts(method, path, kind, name, ref):
    req = classify(method, path)
    assert req == RegistryRequest(kind, name, ref)


@pytest.mark.parametrize("method,path,status,code", [
    ("PUT", "/v2/foo/manifests/latest", 405, "UNSUPPORTED"),
    ("POST", "/v2/foo/blobs/uploads/", 405, "UNSUPPORTED"),
    ("DELETE", f"/v2/foo/blobs/{D}", 405, "UNSUPPORTED"),
    ("PATCH", "/v2/foo/blobs/uploads/abc", 405, "UNSUPPORTED"),
    ("GET", "/v2/foo/blobs/uploads/abc", 405, "UNSUPPORTED"),
    ("GET", "/v2/Foo/manifests/latest", 400, "NAME_INVALID"),
    ("GET", "/v2/../etc/manifests/latest", 400, "NAME_INVALID"),
    ("GET", "/v2/a/../b/manifests/latest", 400, "NAME_INVALID"),
    ("GET", "/v2/a%2fb/manifests/latest", 400, "NAME_INVALID"),
    ("GET", "/v2/a/%2e%2e/manifests/latest", 400, "NAME_INVALID"),
    ("GET", "/v2/a//b/manifests/latest", 400, "NAME_INVALID"),
    ("GET", "/v2/-a/manifests/latest", 400, "NAME_INVALID"),
    ("GET", "/v2/" + "a" * 256 + "/manifests/latest", 400, "NAME_INVALID"),
    ("GET", "/v2/foo/manifests/.hidden", 400, "MANIFEST_INVALID"),
    ("GET", "/v2/foo/manifests/" + "t" * 129, 400, "MANIFEST_INVALID"),
    ("GET", "/v2/foo/blobs/latest", 400, "DIGEST_INVALID"),
    ("GET", "/v2/foo/blobs/sha256:abc", 400, "DIGEST_INVALID"),
    ("GET", "/v2/foo/blobs/sha256:" + "A" * 64, 400, "DIGEST_INVALID"),
    ("GET", "/v2/foo/manifests/sha256:" + "g" * 64, 400, "DIGEST_INVALID"),
    ("GET", "/v2/_catalog", 404, "NOT_FOUND"),
    ("GET", "/artifactory/api/docker/x/v2/foo/manifests/latest", 404, "NOT_FOUND"),
    ("GET", "/v2/foo\\bar/manifests/latest", 400, "NAME_INVALID"),
])
def test_classify_refuses(method, path, status, code):
    refusal = classify(method, path)
    assert isinstance(refusal, Refusal)
    assert (refusal.status, refusal.code) == (status, code)
    assert refusal.message


@pytest.mark.parametrize("prefix,path,expected", [
    ("/artifactory/api/docker/docker-local", "/v2/busybox/manifests/latest",
     "/artifactory/api/docker/docker-local/v2/busybox/manifests/latest"),
    ("/artifactory/api/docker/docker-local/", f"/v2/a/b/blobs/{D}",
     f"/artifactory/api/docker/docker-local/v2/a/b/blobs/{D}"),
    ("", "/v2/foo/tags/list?n=10&last=a", "/v2/foo/tags/list?n=10&last=a"),
    ("/repository/docker-hosted", "/v2/", "/repository/docker-hosted/v2/"),
])
def test_upstream_path_keeps_query(prefix, path, expected):
    req = classify("GET", path)
    assert upstream_path(prefix, req) == expected
