"""Upstream authentication: Basic, a static Bearer token, or the Docker token flow with a token cache.

The stock registry holds no credentials; this module decides what `Authorization` each upstream request
carries. Tokens are cached per scope until shortly before `expires_in`.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cachetools import TLRUCache

from registry_mirror.config.load import UpstreamConfig
from registry_mirror.oci.registry_requests import default_scope
from registry_mirror.upstream.challenge import Challenge, parse_challenges, realm_refusal

log = logging.getLogger(__name__)

DEFAULT_EXPIRES_IN = 60  # the token spec's default when expires_in is absent
MAX_TOKEN_BYTES = 64 * 1024


class AuthError(Exception):
    """The upstream's authentication cannot be satisfied; the message is safe to show (no secret).

    `upstream_failure`: the token service was unreachable or answered 5xx (counts against upstream health);
    `status`: the token service's answer, when it answered one."""

    def __init__(self, message: str, upstream_failure: bool = False, status: int | None = None):
        super().__init__(message)
        self.upstream_failure, self.status = upstream_failure, status


@dataclass(frozen=True)
class Token:
    value: str
    lifetime: float  # seconds this mirror may use it


def usable_lifetime(expires_in: float) -> float:
    """Use a token until shortly before it expires: 10% of its life, at most 30 s, earlier."""
    return max(0.0, expires_in - min(30.0, expires_in * 0.1))


def parse_token_response(body: bytes) -> Token:
    """The token from a token endpoint's JSON (`token` or `access_token`, `expires_in`)."""
    if len(body) > MAX_TOKEN_BYTES:
        raise AuthError(f"token endpoint answered {len(body)} bytes; expected a small JSON object")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise AuthError("token endpoint answered something that is not JSON") from e
    if not isinstance(data, dict):
        raise AuthError("token endpoint answered JSON that is not an object")
    value = data.get("token") or data.get("access_token")
    if not isinstance(value, str) or not value or any(c in value for c in "\r\n"):
        raise AuthError("token endpoint answered no usable token (expected 'token' or 'access_token')")
    expires_in = data.get("expires_in", DEFAULT_EXPIRES_IN)
    if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)) or expires_in <= 0:
        expires_in = DEFAULT_EXPIRES_IN
    return Token(value, usable_lifetime(float(expires_in)))


def basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


# fetch(realm_url, query_params, authorization_or_None) -> (status, body)
TokenFetcher = Callable[[str, dict[str, str], str | None], Awaitable[tuple[int, bytes]]]


class UpstreamAuth:
    def __init__(self, cfg: UpstreamConfig, fetch: TokenFetcher, timer: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        self._fetch = fetch
        self._basic = basic_header(cfg.username, cfg.password) if cfg.username and cfg.password else None
        self._tokens: TLRUCache = TLRUCache(maxsize=4096, ttu=lambda _k, tok, now: now + tok.lifetime, timer=timer)
        self._bearer: Challenge | None = None  # learned from the upstream's first Bearer challenge
        self._scopes: dict[str, str] = {}  # repository name -> scope the upstream asked for
        self._pending: dict[str, asyncio.Future] = {}
        self.token_refreshes = 0

    async def authorization(self, name: str) -> str | None:
        """What to send for a request on repository `name` (None: nothing)."""
        if self.cfg.token:
            return f"Bearer {self.cfg.token}"
        if self._bearer is None:
            return self._basic  # Artifactory accepts Basic directly; a Bearer challenge switches us to tokens
        token = await self._token(self._scopes.get(name) or default_scope(name))
        return f"Bearer {token.value}"

    async def on_unauthorized(self, name: str, www_authenticate: list[str], sent: str | None) -> bool:
        """Learn from a 401; True when a retry with a new credential is worth it."""
        challenges = [c for value in www_authenticate for c in parse_challenges(value)]
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        if bearer is not None and not self.cfg.token:
            refusal = realm_refusal(bearer.realm, self.cfg.origin, self.cfg.allowed_realm_hosts)
            if refusal:
                log.warning("refusing the upstream's token realm, no credential sent: %s", refusal)
                raise AuthError(f"upstream token realm refused: {refusal}")
            self._bearer = bearer
            scope = bearer.params.get("scope") or self._scopes.get(name) or default_scope(name)
            self._scopes[name] = scope
            stale = self._tokens.get(scope)
            if stale is not None and sent == f"Bearer {stale.value}":
                self._tokens.pop(scope, None)  # rejected (revoked or expired early): refresh once
            return True
        if any(c.scheme == "basic" for c in challenges) and self._basic and sent != self._basic:
            return True
        return False

    async def _token(self, scope: str) -> Token:
        token = self._tokens.get(scope)
        if token is not None:
            return token
        pending = self._pending.get(scope)
        if pending is None:  # one fetch per scope, however many requests wait for it
            pending = asyncio.ensure_future(self._fetch_token(scope))
            self._pending[scope] = pending
            pending.add_done_callback(lambda _f: self._pending.pop(scope, None))
        return await asyncio.shield(pending)

    async def _fetch_token(self, scope: str) -> Token:
        assert self._bearer is not None
        params = {"scope": scope}
        if service := self._bearer.params.get("service"):
            params["service"] = service
        status, body = await self._fetch(self._bearer.realm, params, self._basic)
        if status != 200:
            hint = " (check upstream.username and upstream.password)" if status in (401, 403) else ""
            raise AuthError(f"token endpoint answered {status} for scope {scope}{hint}", upstream_failure=status >= 500,
                            status=status)
        token = parse_token_response(body)
        self.token_refreshes += 1
        self._tokens[scope] = token
        log.info("token for %s cached for %.0f s", scope, token.lifetime)
        return token
