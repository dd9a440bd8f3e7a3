"""The stock registry's configuration, generated from mirror.yaml (pure: config in, dict out)."""
from __future__ import annotations

import secrets

from registry_mirror.access.tokens import registry_auth
from registry_mirror.config.load import Config, MirrorConfig
from registry_mirror.proxy.notifications import NOTIFY_PATH, endpoint_config, notification_secret
from registry_mirror.storage.uploads import PURGE_AGE_SECONDS
from registry_mirror.tls.certs import own_client_pair


def proxy_registry_config(cfg: Config, remote_url: str, http_secret: str | None = None,
                          realm: str | None = None, signer_bundle: str | None = None) -> dict:
    """registry:2 in pull-through mode with its remote pointed at the addon; it holds no credentials. With
    `access.users` on: `realm`, where clients fetch tokens, and `signer_bundle`, the certificates tokens are
    verified against (by default the signing certificate alone)."""
    http: dict = {
        "addr": str(cfg.mirror.listen),
        "secret": http_secret or secrets.token_hex(16),
        "headers": {"X-Content-Type-Options": ["nosniff"]},
    }
    if cfg.mirror.drain_timeout:  # SIGTERM closes the listener and lets the requests in flight finish
        http["draintimeout"] = f"{cfg.mirror.drain_timeout:g}s"
    if cfg.mirror.tls:
        tls: dict = {"certificate": cfg.mirror.tls_cert, "key": cfg.mirror.tls_key}
        if cfg.mirror.client_ca:  # the mirror's own warms present a certificate of its own
            tls["clientcas"] = [cfg.mirror.client_ca, own_client_pair(cfg.mirror.tls_cert)[0]]
        http["tls"] = tls
        # HTTP/1.1 only: a pull is a few large streams, and Go's HTTP/2 frames them at a CPU cost the registry and
        # its clients both pay (docs/benchmarks.md)
        http["http2"] = {"disabled": True}
    generated = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "fields": {"service": "mirror-registry"}},
        "storage": {
            **storage_driver(cfg.mirror),
            # no blob descriptor cache: the mirror's expiry deletes blobs behind the registry's back, and a
            # cached descriptor of a deleted blob is served as 200 with no bytes
            # deletes off: the proxy's own 7-day expiry then fails harmlessly instead of deleting blob data
            # other repositories link to (distribution#2367, #4249); expiry/passes.py expires instead
            "delete": {"enabled": False},
            # a backstop for partial uploads (storage/uploads.py removes those no transfer writes any more, within
            # minutes): it deletes an upload older than `age` even while written, so `age` is far above any fetch.
            # Off on a bucket: 2.8's purger walks it with a listing that panicked on an S3-compatible store (the
            # registry exits); storage/bucket_uploads.py aborts the incomplete uploads there instead
            "maintenance": {"uploadpurging": {"enabled": cfg.mirror.s3 is None, "age": f"{PURGE_AGE_SECONDS}s",
                                              "interval": "1h", "dryrun": False}},
        },
        "http": http,
        "proxy": {"remoteurl": remote_url},
        # every pull it serves, from storage too: the last pulls the mirror's expiry goes by
        "notifications": endpoint_config(remote_url.rstrip("/") + NOTIFY_PATH,
                                         notification_secret(cfg.mirror.storage)),
    }
    if cfg.access.enabled:
        if realm is None or cfg.access.signing_cert is None:
            raise ValueError("access.users is on: the registry needs the token realm and the signing certificate")
        generated["auth"] = registry_auth(realm, signer_bundle or cfg.access.signing_cert)
    return generated


def storage_driver(mirror: MirrorConfig) -> dict:
    """The registry's storage: the filesystem folder, or `mirror.s3`'s bucket."""
    s3 = mirror.s3
    if s3 is None:
        return {"filesystem": {"rootdirectory": mirror.storage}}
    driver: dict = {"bucket": s3.bucket, "region": s3.region, "v4auth": True}
    if s3.endpoint:  # any endpoint makes the driver address the bucket path style
        driver["regionendpoint"] = s3.endpoint
    if s3.prefix:
        driver["rootdirectory"] = "/" + s3.prefix.strip("/")
    if s3.credentials:  # else the AWS credential chain (environment, instance role)
        driver["accesskey"], driver["secretkey"] = (str(part) for part in s3.credentials)
    # on by default in the driver: clients get 307s to presigned URLs of the store
    return {"s3": driver, "redirect": {"disable": not s3.redirect}}
