"""`artifactory-mirror warm IMAGE... | -f FILE`: pull images into the mirror before a deploy, every platform.

It asks the mirror (the stock registry, as a client would) for each image's manifest, follows an index to
every platform's manifest, and reads every blob once, discarding the bytes: the mirror fetches what it lacks
from the upstream and stores it. A progress line on stderr; at the end, images, blobs, bytes and time.
"""
from __future__ import annotations

import http.client
import json
import logging
import ssl
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from registry_mirror.access.tokens import PULL, Scope, Signer, mint
from registry_mirror.config.load import Config, any_address
from registry_mirror.oci.manifest_body import IMAGE_TYPES, INDEX_TYPES
from registry_mirror.oci.registry_requests import TAG_RE, valid_digest, valid_name
from registry_mirror.tls.certs import own_client_pair

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
# the registry's notifications carry it: warm pulls are counted apart from the clients'
USER_AGENT = "artifactory-mirror-warm"
WARM_TOKEN_TTL = 300.0  # a token is checked when a request starts: a long blob read outlives it harmlessly


class WarmError(Exception):
    pass


@dataclass
class Progress:
    total_bytes: int = 0
    done_bytes: int = 0
    blobs: int = 0
    seen: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)
    quiet: bool = False  # inside the addon: no progress bar in its log

    def show(self, label: str, out=sys.stderr) -> None:
        if self.quiet:
            return
        pct = 100 * self.done_bytes / self.total_bytes if self.total_bytes else 100
        width = 30
        bar = "#" * int(width * pct / 100)
        out.write(f"\r[{bar:<{width}}] {pct:5.1f}% {self.done_bytes / 1e6:9.1f} of {self.total_bytes / 1e6:.1f} MB "
                  f"{label[:40]:<40}")
        out.flush()


def parse_ref(ref: str) -> tuple[str, str]:
    """`name:tag`, `name@digest` or `name:tag@digest` (the digest wins, as with docker) -> (name, reference)."""
    if "@" in ref:
        name, _, reference = ref.partition("@")
        if ":" in name.rsplit("/", 1)[-1]:
            name = name.rpartition(":")[0]
        ok = valid_digest(reference)
    else:
        name, _, reference = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "latest")
        ok = TAG_RE.fullmatch(reference) is not None
    if not valid_name(name) or not ok:
        raise WarmError(f"{ref!r} is not an image reference like team/app:1.0 or team/app@sha256:<64 hex>")
    return name, reference


def read_refs(args_images: list[str], file: str | None) -> list[str]:
    refs = list(args_images)
    if file:
        text = sys.stdin.read() if file == "-" else Path(file).read_text()
        refs += [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return [r for r in refs if r]


def pinned_context(cert_path: str) -> ssl.SSLContext:
    """Trust exactly the mirror's own certificate, self-signed or issued by a CA, at whatever address it is
    reached on this machine (127.0.0.1 is rarely among a CA-issued certificate's names)."""
    context = ssl.create_default_context(cafile=cert_path)
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the leaf itself is the trust anchor
    context.check_hostname = False  # the pinned certificate identifies the server; no other is trusted
    return context


class LocalRegistryClient:
    """The mirror's own registry (`mirror.listen`): warming pulls through it as a client would, so it stores what
    it fetches."""

    def __init__(self, cfg: Config):
        """With `mirror.client_ca` it presents the mirror's own client certificate; with `access.users` on, a
        token it signs itself (the registry trusts the signer), for the warm's image only."""
        listen = cfg.mirror.listen
        self.host = "127.0.0.1" if any_address(listen.host) else listen.host
        self.port = listen.port
        self.context = pinned_context(cfg.mirror.trusted_ca) if cfg.mirror.tls else None
        if self.context and cfg.mirror.client_ca:
            self.context.load_cert_chain(*own_client_pair(cfg.mirror.tls_cert))
        access = cfg.access
        self.signer = Signer.load(access.signing_cert, access.signing_key) \
            if access.enabled and access.signing_cert and access.signing_key else None

    def _headers(self, name: str, **more: str) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, **more}
        if self.signer:
            token = mint(self.signer, USER_AGENT, [Scope("repository", name, (PULL,))], time.time(), WARM_TOKEN_TTL)
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _conn(self) -> http.client.HTTPConnection:
        if self.context:
            return http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=300)
        return http.client.HTTPConnection(self.host, self.port, timeout=300)

    def manifest(self, name: str, reference: str) -> tuple[str, dict]:
        conn = self._conn()
        try:
            conn.request("GET", f"/v2/{name}/manifests/{reference}",
                         headers=self._headers(name, Accept=", ".join(INDEX_TYPES + IMAGE_TYPES)))
            resp = conn.getresponse()
            body = resp.read(8 * 1024 * 1024)
            if resp.status != 200:
                raise WarmError(f"{name}:{reference}: the mirror answered {resp.status}: {body[:200]!r}")
            return resp.getheader("Content-Type", ""), json.loads(body)
        finally:
            conn.close()

    def read_blob(self, name: str, digest: str, progress: Progress) -> None:
        conn = self._conn()
        try:
            conn.request("GET", f"/v2/{name}/blobs/{digest}", headers=self._headers(name))
            resp = conn.getresponse()
            if resp.status != 200:
                raise WarmError(f"blob {name}@{digest}: the mirror answered {resp.status}")
            while chunk := resp.read(CHUNK):
                progress.done_bytes += len(chunk)
                progress.show(f"{name}@{digest[7:19]}")
        finally:
            conn.close()


def platform_of(entry: dict) -> str:
    """An index entry's platform as os/architecture[/variant]."""
    p = entry.get("platform") or {}
    return "/".join(str(v) for v in (p.get("os"), p.get("architecture"), p.get("variant")) if v)


def image_manifests(client: LocalRegistryClient, name: str, reference: str,
                    platforms: tuple[str, ...] = ()) -> list[dict]:
    """The image manifests of a reference: itself, or every platform of an index (those in `platforms`, if
    given: `linux/arm64` also takes its variants)."""
    media_type, manifest = client.manifest(name, reference)
    media_type = manifest.get("mediaType", media_type)
    if media_type in INDEX_TYPES or "manifests" in manifest:
        entries = [e for e in manifest.get("manifests", []) if not platforms
                   or any(platform_of(e) == p or platform_of(e).startswith(p + "/") for p in platforms)]
        return [client.manifest(name, entry["digest"])[1] for entry in entries]
    return [manifest]


def plan_blobs(name: str, manifests: list[dict], progress: Progress) -> list[tuple[str, str, int]]:
    """(name, digest, size) of every blob of `manifests` not planned yet."""
    plan = []
    for manifest in manifests:
        for blob in (manifest.get("config"), *manifest.get("layers", [])):
            if blob and blob["digest"] not in progress.seen:
                progress.seen.add(blob["digest"])
                plan.append((name, blob["digest"], int(blob.get("size", 0))))
    return plan


def warm_digest(cfg: Config, names: tuple[str, ...], digest: str, tag: str = "",
                platforms: tuple[str, ...] = ()) -> Progress:
    """Warm one image by digest under each of its names (a webhook's event), quietly; the tag is asked for
    first, so that the registry and the addon know its new digest, but only as a courtesy: the tag may have
    moved or gone since the event, and the digest is what is warmed. WarmError or OSError on a failure."""
    client, progress = LocalRegistryClient(cfg), Progress(quiet=True)
    for name in names:
        if tag:
            try:
                client.manifest(name, tag)
            except (WarmError, OSError) as e:
                log.info("warm of %s@%s: the tag %s is not refreshed (%s); the digest is warmed", name, digest,
                         tag, e)
        plan = plan_blobs(name, image_manifests(client, name, digest, platforms), progress)
        progress.seen.clear()  # each name is its own repository in the registry's storage
        for _, blob, _size in plan:
            client.read_blob(name, blob, progress)
            progress.blobs += 1
    return progress


def warm(cfg: Config, refs: list[str], out=sys.stdout) -> int:
    client, progress, failed_images, failed_blobs = LocalRegistryClient(cfg), Progress(), 0, 0
    plan: list[tuple[str, str, int]] = []
    for ref in refs:
        try:
            name, reference = parse_ref(ref)
            manifests = image_manifests(client, name, reference)
        except (WarmError, OSError, ValueError) as e:
            print(f"warm: {ref}: {e}", file=sys.stderr)
            failed_images += 1
            continue
        plan += plan_blobs(name, manifests, progress)
        print(f"warm: {ref}: {len(manifests)} platform(s)", file=sys.stderr)
    progress.total_bytes = sum(size for _, _, size in plan)
    for name, digest, _size in plan:
        try:
            client.read_blob(name, digest, progress)
            progress.blobs += 1
        except (WarmError, OSError) as e:
            print(f"\nwarm: {e}", file=sys.stderr)
            failed_blobs += 1
    elapsed = time.monotonic() - progress.started
    print(file=sys.stderr)
    print(f"warm: {len(refs) - failed_images} of {len(refs)} images, {progress.blobs} of {len(plan)} blobs, "
          f"{progress.done_bytes / 1e6:.1f} MB in {elapsed:.1f} s "
          f"({progress.done_bytes / 1e6 / max(elapsed, 1e-9):.1f} MB/s)", file=out)
    return 1 if failed_images or failed_blobs else 0
