"""Free loopback ports and the plain registry behind the test front: set-up for the demo, tests and bench."""
from __future__ import annotations

import secrets
import socket


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def plain_registry_config(listen: str, storage: str) -> dict:
    """A plain registry (no proxy, no TLS): the storage behind the demo's and tests' upstream front."""
    return {
        "version": 0.1,
        "log": {"level": "warn", "formatter": "text"},
        "storage": {"filesystem": {"rootdirectory": storage}, "delete": {"enabled": True}},
        "http": {"addr": listen, "secret": secrets.token_hex(16)},
    }
