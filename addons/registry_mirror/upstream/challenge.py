"""Parse `WWW-Authenticate` headers (RFC 7235) and decide whether a token realm may be trusted."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_SCHEME_RE = re.compile(rf"\s*({_TOKEN})(?=\s|,|$)")
_PARAM_RE = re.compile(rf'\s*({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|({_TOKEN}))\s*')
_TOKEN68_RE = re.compile(r"\s*([A-Za-z0-9._~+/-]+=*)\s*(?:,|$)")


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower-case
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


def parse_challenges(header: str) -> list[Challenge]:
    """All challenges in one header value; malformed parts end the parse instead of raising."""
    challenges: list[Challenge] = []
    pos = 0
    while pos < len(header):
        while pos < len(header) and header[pos] in " ,\t":
            pos += 1
        m = _SCHEME_RE.match(header, pos)
        if not m:
            break
        scheme, pos = m.group(1).lower(), m.end()
        params: dict[str, str] = {}
        while True:
            p = _PARAM_RE.match(header, pos)
            if not p:
                break
            value = re.sub(r"\\(.)", r"\1", p.group(2)) if p.group(2) is not None else p.group(3)
            params.setdefault(p.group(1).lower(), value)
            pos = p.end()
            if pos < len(header) and header[pos] == ",":
                # a comma ends this parameter; the next item is a parameter or a new challenge's scheme
                nxt = _PARAM_RE.match(header, pos + 1)
                if not nxt:
                    pos += 1
                    break
                pos += 1
            else:
                break
        if not params:
            t = _TOKEN68_RE.match(header, pos)
            if t:
                pos = t.end()
        challenges.append(Challenge(scheme, params))
    return challenges


def realm_refusal(realm: str, upstream_origin: str, allowed_hosts: tuple[str, ...]) -> str | None:
    """Why a token realm must not receive credentials, or None when it may.

    Only the upstream's own origin, or a host the operator listed, may receive them: a spoofed realm made
    clients send credentials anywhere (containerd CVE-2020-15157, distribution CVE-2026-33540).
    """
    try:
        realm_parts, up = urlsplit(realm), urlsplit(upstream_origin)
        realm_port = realm_parts.port
    except ValueError:
        return f"realm {realm[:100]!r} is not a URL"
    if realm_parts.scheme not in ("http", "https") or not realm_parts.hostname:
        return f"realm {realm[:100]!r} is not an http(s) URL"
    if realm_parts.username or realm_parts.password:
        return "realm URL carries user information"
    default = {"http": 80, "https": 443}
    realm_hostport = f"{realm_parts.hostname}:{realm_port or default[realm_parts.scheme]}"
    up_hostport = f"{up.hostname}:{up.port or default[up.scheme]}"
    if realm_parts.scheme == up.scheme and realm_hostport == up_hostport:
        return None
    if realm_parts.hostname in allowed_hosts or realm_hostport in allowed_hosts:
        if realm_parts.scheme == "http" and up.scheme == "https":
            return f"realm {realm_parts.hostname} is plain http while the upstream is https"
        return None
    return (f"realm host {realm_hostport} is not the upstream's origin {up_hostport}; "
            f"add it to upstream.allowed_realm_hosts if it is your registry's token service")
