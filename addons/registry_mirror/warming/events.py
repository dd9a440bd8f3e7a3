"""Artifactory's predefined Docker webhook events: who sent them, and what they say.

A webhook POSTs `{"domain": "docker", "event_type": "pushed", "data": {"repo_key", "image_name", "tag",
"sha256", ...}, "subscription_key", "jpd_origin", "source"}` (JFrog's "Domain: Docker"). Its secret arrives
in `X-JFrog-Event-Auth`: the secret itself, or, with "use secret for signing", the hex HMAC-SHA256 of the raw
body keyed with it. The header is checked before the body is parsed, so an unauthenticated sender learns
nothing about what would be accepted; `sha256` is the manifest file's, that is the image's digest.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass

from registry_mirror.oci.registry_requests import TAG_RE, valid_name

EVENT_AUTH_HEADER = "X-JFrog-Event-Auth"
MAX_EVENT_BODY = 64 * 1024  # one event is about a KiB; an index with many platforms stays far below
WARMED_EVENTS = frozenset({"pushed", "promoted"})  # a new digest under a tag
DELETED = "deleted"  # a tag deleted upstream: the mirror forgets it
_HEX_RE = re.compile(r"[0-9a-f]{64}")
_REPO_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class EventError(ValueError):
    """A body that is not a Docker event of the expected shape; the message says which field."""


@dataclass(frozen=True)
class TagEvent:
    event_type: str
    repo_key: str
    image_name: str
    tag: str
    digest: str  # sha256:<hex> of the manifest (an index or an image)

    def __str__(self) -> str:
        return f"{self.event_type} {self.repo_key}/{self.image_name}:{self.tag}@{self.digest}"


def signature(secret: str, body: bytes) -> str:
    """What Artifactory sends with "use secret for signing": the hex HMAC-SHA256 of the body."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def authentic(given: str, secret: str, body: bytes) -> bool:
    """`given` (the header) is the secret or the body's signature under it. Both comparisons always run, each
    in constant time, so neither the mode nor a prefix of the secret shows in how long the answer takes."""
    # a header aiohttp decoded with surrogateescape (not UTF-8) is compared as the bytes it was
    raw = given.encode("utf-8", "surrogateescape")
    plain = hmac.compare_digest(raw, secret.encode())
    signed = hmac.compare_digest(raw.strip().lower(), signature(secret, body).encode())
    return bool(given) and (plain | signed)


def parse(body: bytes) -> TagEvent | None:
    """The event a body announces: a TagEvent to warm, None for one the mirror acknowledges and ignores
    (another domain or event type), or EventError."""
    try:
        event = json.loads(body)
    except (UnicodeDecodeError, ValueError) as e:
        raise EventError(f"the body is not JSON ({e})") from e
    if not isinstance(event, dict):
        raise EventError("the body is not a JSON object with domain, event_type and data")
    if event.get("domain") != "docker" or event.get("event_type") not in WARMED_EVENTS | {DELETED}:
        return None
    data = event.get("data")
    if not isinstance(data, dict):
        raise EventError("data: missing; a Docker event carries repo_key, image_name, tag and sha256 there")
    repo_key, image, tag, sha = (data.get(k) for k in ("repo_key", "image_name", "tag", "sha256"))
    if not isinstance(repo_key, str) or not _REPO_KEY_RE.fullmatch(repo_key):
        raise EventError(f"data.repo_key: {_shown(repo_key)} is not a repository key")
    if not isinstance(image, str) or not valid_name(image):
        raise EventError(f"data.image_name: {_shown(image)} is not an image name")
    if not isinstance(tag, str) or not TAG_RE.fullmatch(tag):
        raise EventError(f"data.tag: {_shown(tag)} is not a tag")
    if not isinstance(sha, str) or not _HEX_RE.fullmatch(sha):
        raise EventError(f"data.sha256: {_shown(sha)} is not 64 lower-case hex digits")
    return TagEvent(event["event_type"], repo_key, image, tag, f"sha256:{sha}")


def kind_of(body: bytes) -> str:
    """`domain/event_type` of an authenticated body, for the log line of an event that is ignored."""
    try:
        event = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return "not JSON"
    if not isinstance(event, dict):
        return "not an object"
    return f"{_shown(event.get('domain'))}/{_shown(event.get('event_type'))}"


def _shown(value: object) -> str:
    return repr(value)[:80]
