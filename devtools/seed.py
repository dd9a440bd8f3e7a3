"""Push images of random layers into a plain registry (the storage behind the demo's upstream).

Layers are files of random bytes, streamed from disk on upload and cached between runs by (seed, size).
Images are OCI manifests with uncompressed-tar layer types, so the config's diff_ids are the layer digests;
clients that unpack (containerd, podman, docker) get `tar_layer`s: real gzip'd tar files.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import os
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

MIB = 1024 * 1024
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
GZIP_LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    path: Path | None = None
    data: bytes = b""
    diff_id: str = ""  # a compressed layer's uncompressed digest; "" for an uncompressed one (the digest)


@dataclass(frozen=True)
class Image:
    name: str
    tag: str
    manifest: bytes
    manifest_digest: str
    layers: tuple[Blob, ...]
    config: Blob

    @property
    def size(self) -> int:
        """Bytes a cold pull moves: manifest, config and layers."""
        return len(self.manifest) + self.config.size + sum(layer.size for layer in self.layers)


def random_layer(cache_dir: Path, size: int, seed: int) -> Blob:
    """A file of `size` random bytes, made once per (seed, size) and reused."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"layer-{seed}-{size}.bin"
    digest_file = path.with_suffix(".sha256")
    if path.exists() and digest_file.exists() and path.stat().st_size == size:
        return Blob(digest_file.read_text().strip(), size, path)
    rng, h, left = random.Random(seed), hashlib.sha256(), size
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        while left:
            chunk = rng.randbytes(min(left, 4 * MIB))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    os.replace(tmp, path)
    digest_file.write_text(f"sha256:{h.hexdigest()}\n")
    return Blob(f"sha256:{h.hexdigest()}", size, path)


def tar_layer(size: int, seed: int, name: str = "data.bin") -> Blob:
    """A gzip'd tar holding one file of `size` random bytes at /<name>, in memory: for clients that unpack."""
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.PAX_FORMAT) as tar:
        member = tarfile.TarInfo(name)
        member.size, member.mtime, member.mode = size, 0, 0o644
        tar.addfile(member, io.BytesIO(random.Random(seed).randbytes(size)))
    raw = tar_bytes.getvalue()
    packed = gzip.compress(raw, compresslevel=1, mtime=0)
    return Blob(_sha256(packed), len(packed), data=packed, diff_id=_sha256(raw))


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def build_image(name: str, tag: str, layers: list[Blob], architecture: str = "amd64") -> Image:
    config = json.dumps({
        "architecture": architecture, "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id or layer.digest for layer in layers]},
    }, sort_keys=True).encode()
    config_blob = Blob("sha256:" + hashlib.sha256(config).hexdigest(), len(config), data=config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": config_blob.digest, "size": config_blob.size},
        "layers": [{"mediaType": GZIP_LAYER_TYPE if b.diff_id else LAYER_TYPE, "digest": b.digest, "size": b.size}
                   for b in layers],
    }, indent=3).encode()
    return Image(name, tag, manifest, "sha256:" + hashlib.sha256(manifest).hexdigest(), tuple(layers), config_blob)


def push(registry_url: str, image: Image) -> None:
    """Push an image to a plain registry over the v2 API, streaming layers from their files."""
    for blob in (*image.layers, image.config):
        _push_blob(registry_url, image.name, blob)
    status, _, body = _request(registry_url, "PUT", f"/v2/{image.name}/manifests/{image.tag}", image.manifest,
                               {"Content-Type": MANIFEST_TYPE})
    if status != 201:
        raise RuntimeError(f"manifest push of {image.name}:{image.tag} answered {status}: {body[:300]!r}")


INDEX_TYPE = "application/vnd.oci.image.index.v1+json"


def push_index(registry_url: str, name: str, tag: str, platforms: dict[str, Image]) -> tuple[bytes, str]:
    """Push images by digest and an OCI index naming them per platform ("linux/amd64": image); return the index."""
    entries = []
    for platform, image in platforms.items():
        for blob in (*image.layers, image.config):
            _push_blob(registry_url, name, blob)
        status, _, body = _request(registry_url, "PUT", f"/v2/{name}/manifests/{image.manifest_digest}",
                                   image.manifest, {"Content-Type": MANIFEST_TYPE})
        if status != 201:
            raise RuntimeError(f"manifest push of {name}@{image.manifest_digest} answered {status}: {body[:300]!r}")
        os_, arch = platform.split("/")
        entries.append({"mediaType": MANIFEST_TYPE, "digest": image.manifest_digest, "size": len(image.manifest),
                        "platform": {"os": os_, "architecture": arch}})
    index = json.dumps({"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": entries}, indent=3).encode()
    status, _, body = _request(registry_url, "PUT", f"/v2/{name}/manifests/{tag}", index, {"Content-Type": INDEX_TYPE})
    if status != 201:
        raise RuntimeError(f"index push of {name}:{tag} answered {status}: {body[:300]!r}")
    return index, "sha256:" + hashlib.sha256(index).hexdigest()


def _push_blob(registry_url: str, name: str, blob: Blob) -> None:
    status, _, _ = _request(registry_url, "HEAD", f"/v2/{name}/blobs/{blob.digest}")
    if status == 200:
        return
    status, headers, body = _request(registry_url, "POST", f"/v2/{name}/blobs/uploads/")
    if status != 202:
        raise RuntimeError(f"upload start for {name} answered {status}: {body[:300]!r}")
    location = urljoin(registry_url, headers["location"])
    target = urlsplit(location)
    path = f"{target.path}?{target.query + '&' if target.query else ''}digest={blob.digest}"
    if blob.path:
        with open(blob.path, "rb") as f:
            status, _, body = _request(registry_url, "PUT", path, f, {"Content-Length": str(blob.size)})
    else:
        status, _, body = _request(registry_url, "PUT", path, blob.data)
    if status != 201:
        raise RuntimeError(f"upload of {blob.digest} to {name} answered {status}: {body[:300]!r}")


def _request(base: str, method: str, path: str, body=None, headers: dict | None = None):
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120, blocksize=MIB)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/octet-stream",
                                                       **(headers or {})})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def seed_demo_images(registry_url: str, cache_dir: Path, big: tuple[int, int] = (160 * MIB, 60 * MIB)) -> dict:
    """The seed's Java service (base + app layer) and a small image."""
    java = build_image("team/java-service", "1.0",
                       [random_layer(cache_dir, big[0], 1), random_layer(cache_dir, big[1], 2)])
    small = build_image("tools/busybox", "latest",
                        [random_layer(cache_dir, 2 * MIB, 3), random_layer(cache_dir, 64 * 1024, 4)])
    for image in (java, small):
        push(registry_url, image)
    return {"java": java, "small": small}
