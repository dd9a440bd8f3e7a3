"""The stock registry's configuration, generated from mirror.yaml (pure: config in, dict out)."""
from __future__ import annotations

import secrets

from .config import Config


def proxy_registry_config(cfg: Config, remote_url: str, http_secret: str | None = None) -> dict:
    """registry:2 in pull-through mode with its remote pointed at the addon; it holds no credentials."""
    http = {
        "addr": str(cfg.mirror.listen),
        "secret": http_secret or secrets.token_hex(16),
        "headers": {"X-Content-Type-Options": ["nosniff"]},
    }
    if cfg.mirror.tls:
        http["tls"] = {"certificate": cfg.mirror.tls_cert, "key": cfg.mirror.tls_key}
    generated = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "fields": {"service": "mirror-registry"}},
        "storage": {
            "filesystem": {"rootdirectory": cfg.mirror.storage},
            # replicas sharing the storage share what they know of it, too
            "cache": {"blobdescriptor": "redis" if cfg.scale.enabled else "inmemory"},
            "delete": {"enabled": True},  # the proxy's 7-day expiry deletes through this
        },
        "http": http,
        "proxy": {"remoteurl": remote_url},
    }
    if cfg.scale.enabled:
        generated["redis"] = {"addr": str(cfg.scale.redis), "db": cfg.scale.redis_db, "dialtimeout": "2s",
                              "readtimeout": "2s", "writetimeout": "2s"}
        if cfg.scale.redis_password:
            generated["redis"]["password"] = str(cfg.scale.redis_password)
    return generated


def plain_registry_config(listen: str, storage: str) -> dict:
    """A plain registry (no proxy, no TLS): the storage behind the demo's and tests' upstream front."""
    return {
        "version": 0.1,
        "log": {"level": "warn", "formatter": "text"},
        "storage": {"filesystem": {"rootdirectory": storage}, "delete": {"enabled": True}},
        "http": {"addr": listen, "secret": secrets.token_hex(16)},
    }
