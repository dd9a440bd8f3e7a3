"""Classify the stock registry's requests and rewrite them for the upstream.

Every request is classified once; its class decides the policy (answered locally, small exchange, streamed
blob, refused). Names and references follow Distribution's reference grammar, so `..`, encoded slashes and
other tricks never reach the upstream's path.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from urllib.parse import unquote

# distribution/reference/regexp.go
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*"
NAME_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG_RE = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
# the algorithms the mirror can check a blob against, with their lengths in hex: only these reach the coalescer
DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
DIGEST_RE = re.compile("|".join(f"{algorithm}:[0-9a-f]{{{n}}}" for algorithm, n in DIGEST_HEX_LENGTHS.items()))
SHA256_RE = re.compile(r"sha256:[0-9a-f]{64}")
_EXPECTED_DIGEST = ", ".join(f"{algorithm}:<{n} lower-case hex>" for algorithm, n in DIGEST_HEX_LENGTHS.items())
NAME_MAX_LENGTH = 255
READ_METHODS = frozenset({"GET", "HEAD"})


class Kind(enum.Enum):
    PING = "ping"
    MANIFEST_BY_TAG = "manifest-by-tag"
    MANIFEST_BY_DIGEST = "manifest-by-digest"
    BLOB = "blob"
    TAGS = "tags"


@dataclass(frozen=True)
class RegistryRequest:
    kind: Kind
    name: str = ""
    reference: str = ""  # tag or digest
    query: str = ""  # passed on to the upstream, without `ns`
    ns: str = ""  # containerd's ?ns=<registry host>: a key into the routes, never a host to dial

    @property
    def v2_path(self) -> str:
        """The request's path under /v2/, rebuilt from validated parts only."""
        if self.kind is Kind.PING:
            return "/v2/"
        if self.kind is Kind.TAGS:
            return f"/v2/{self.name}/tags/list"
        segment = "blobs" if self.kind is Kind.BLOB else "manifests"
        return f"/v2/{self.name}/{segment}/{self.reference}"


@dataclass(frozen=True)
class Refusal:
    """A request the mirror answers itself with a registry-style error, never forwarding it."""
    status: int
    code: str
    message: str


def valid_name(name: str) -> bool:
    return len(name) <= NAME_MAX_LENGTH and NAME_RE.fullmatch(name) is not None


def valid_digest(digest: str) -> bool:
    return DIGEST_RE.fullmatch(digest) is not None


def digest_problem(digest: str) -> str | None:
    """What keeps `digest` from being one the mirror can check bytes against, or None when it is one."""
    if DIGEST_RE.fullmatch(digest):
        return None
    algorithm, sep, hex_part = digest.partition(":")
    if not sep:
        return f"no algorithm: expected one of {_EXPECTED_DIGEST}"
    length = DIGEST_HEX_LENGTHS.get(algorithm)
    if length is None:
        return f"algorithm {algorithm[:30]!r} is not supported: expected one of {_EXPECTED_DIGEST}"
    if len(hex_part) != length:
        return f"{algorithm} takes {length} hex characters, not {len(hex_part)}"
    return f"{algorithm} takes lower-case hex (0-9, a-f) only"


def classify(method: str, raw_path: str) -> RegistryRequest | Refusal:
    """Sort a request by method and raw path (as sent, with its query) into a class, or refuse it."""
    path, _, query = raw_path.partition("?")
    query, ns = split_ns(query)
    if method not in READ_METHODS:
        return Refusal(405, "UNSUPPORTED", f"the mirror is read-only: {method} is not supported, only GET and HEAD")
    if path in ("/v2", "/v2/"):
        return RegistryRequest(Kind.PING)
    if not path.startswith("/v2/"):
        return Refusal(404, "NOT_FOUND", "only the registry API under /v2/ is served")
    if "%" in path or "\\" in path:
        return Refusal(400, "NAME_INVALID", "percent-encoded or backslash characters are not allowed in the path")
    rest = path[len("/v2/"):]
    if "/blobs/uploads" in f"/{rest}":
        return Refusal(405, "UNSUPPORTED", "the mirror is read-only: blob uploads are not supported")
    for segment, kind in (("/manifests/", None), ("/blobs/", Kind.BLOB)):
        name, sep, ref = rest.rpartition(segment)
        if sep:
            return _reference_request(name, ref, kind, query, ns)
    if rest.endswith("/tags/list"):
        name = rest[: -len("/tags/list")]
        if not valid_name(name):
            return _bad_name(name)
        return RegistryRequest(Kind.TAGS, name, query=query, ns=ns)
    return Refusal(404, "NOT_FOUND", f"unknown registry API path: /v2/{rest[:100]}")


def _reference_request(name: str, ref: str, kind: Kind | None, query: str, ns: str) -> RegistryRequest | Refusal:
    if not valid_name(name):
        return _bad_name(name)
    if kind is Kind.BLOB:
        if problem := digest_problem(ref):
            return Refusal(400, "DIGEST_INVALID", f"invalid blob digest {ref[:100]!r}: {problem}")
        return RegistryRequest(Kind.BLOB, name, ref, query, ns)
    if ":" in ref:
        if problem := digest_problem(ref):
            return Refusal(400, "DIGEST_INVALID", f"invalid manifest digest {ref[:100]!r}: {problem}")
        return RegistryRequest(Kind.MANIFEST_BY_DIGEST, name, ref, query, ns)
    if not TAG_RE.fullmatch(ref):
        return Refusal(400, "MANIFEST_INVALID",
                       f"invalid tag {ref[:100]!r}: up to 128 of [A-Za-z0-9_.-], not starting with . or -")
    return RegistryRequest(Kind.MANIFEST_BY_TAG, name, ref, query, ns)


def split_ns(query: str) -> tuple[str, str]:
    """(the query without `ns`, the `ns` value): containerd adds ns for the mirror; the upstream never sees it."""
    kept, ns = [], ""
    for pair in query.split("&") if query else ():
        key, _, value = pair.partition("=")
        if key == "ns":
            ns = unquote(value).lower()  # as the blob endpoint's query parser reads it
        else:
            kept.append(pair)
    return "&".join(kept), ns


def _bad_name(name: str) -> Refusal:
    return Refusal(400, "NAME_INVALID",
                   f"invalid repository name {name[:100]!r}: lowercase components of [a-z0-9] joined by . _ __ -, "
                   f"separated by /, at most {NAME_MAX_LENGTH} characters")


def upstream_path(prefix: str, request: RegistryRequest) -> str:
    """The upstream path for a request: `<prefix>/v2/<rest>`, the query string kept."""
    path = prefix.rstrip("/") + request.v2_path
    return f"{path}?{request.query}" if request.query else path


def default_scope(name: str) -> str:
    return f"repository:{name}:pull"
