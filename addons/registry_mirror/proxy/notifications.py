"""The stock registry's notifications, received on the addon's loopback listener: every pull it serves.

The registry POSTs each event as it happens, with a secret header its generated configuration holds, and
queues events in memory until they are answered: so they are answered at once, before any work. The secret
lives in a file next to the storage (0600), read by the supervisor that writes the registry's configuration
and by the addon, and survives restarts.
"""
from __future__ import annotations

import hmac
import json
import os
import secrets

from registry_mirror.storage.layout import secret_file

NOTIFY_PATH = "/_mirror/notifications"
SECRET_HEADER = "X-Mirror-Notify-Secret"
MAX_NOTIFICATION_BODY = 1024 * 1024  # the registry sends one event per request: a few KiB


def notification_secret(storage: str) -> str:
    """The shared secret, created (0600, never world-readable even for a moment) when missing."""
    path = secret_file(storage)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(24)
    try:
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(value)
        return value
    except FileExistsError:  # another process made it first
        return path.read_text().strip()


def endpoint_config(url: str, secret: str) -> dict:
    """The registry's `notifications` section for one endpoint: the addon."""
    return {"endpoints": [{"name": "artifactory-mirror", "url": url, "headers": {SECRET_HEADER: [secret]},
                           "timeout": "5s", "threshold": 3, "backoff": "1s"}]}


def check(method: str, given_secret: str, body: bytes | None, secret: str) -> tuple[int, str, object]:
    """(status, reason, envelope): 202 with the parsed envelope, or why not."""
    if method != "POST":
        return 405, "notifications are POSTed", None
    if not hmac.compare_digest(given_secret.encode(), secret.encode()):
        return 401, f"{SECRET_HEADER} is missing or wrong", None
    if body is None or len(body) > MAX_NOTIFICATION_BODY:
        return 413, f"a notification is at most {MAX_NOTIFICATION_BODY} bytes", None
    try:
        return 202, "", json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return 400, "a notification is a JSON envelope of events", None
