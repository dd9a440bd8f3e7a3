"""Asks Artifactory, with a client's own credential, whether it may pull a repository: the image's tag list
(`?n=1`) through the route that serves the name, as the mirror itself would ask (prefix, repository-path names,
library), or, for a login, the route's `/v2/`. The mirror's own credential is never involved; the client's is sent
to the route's origin (and a token realm the route allows) only, and never kept (access/decisions.py).
"""
from __future__ import annotations

import logging
from dataclasses import replace

import aiohttp

from registry_mirror.access.decisions import Verdict
from registry_mirror.config.load import Secret, UpstreamConfig
from registry_mirror.oci.registry_requests import Kind, RegistryRequest
from registry_mirror.routes.routing import Router
from registry_mirror.stats.counters import Stats
from registry_mirror.upstream.auth import AuthError
from registry_mirror.upstream.client import Upstream, upstream_session
from registry_mirror.upstream.retry import UpstreamError

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 10.0  # seconds for one question, token exchange included; a client waits for it

REFUSED = {401: "Artifactory did not accept the credential", 403: "Artifactory denies this user read access",
           404: "Artifactory has no such image, or does not show it to this user"}


class ArtifactoryCheck:
    def __init__(self, router: Router):
        self.router = router
        self.questions = 0  # asked of Artifactory, for the stats and the figures
        # per route: connections kept between questions (each carries the asking user's Authorization only)
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()

    async def can_pull(self, user: str, secret: str, name: str) -> Verdict:
        return await self._ask(user, secret, name, RegistryRequest(Kind.TAGS, name=name, query="n=1"))

    async def login(self, user: str, secret: str) -> Verdict:
        return await self._ask(user, secret, "", RegistryRequest(Kind.PING))

    async def _ask(self, user: str, secret: str, name: str, request: RegistryRequest) -> Verdict:
        route = self.router.for_name(name) if name else self.router.routes[self.router.config.upstream.label]
        if route.health.down:
            return Verdict(False, f"Artifactory ({route.cfg.origin}) is down", reachable=False)
        session = self._sessions.get(route.cfg.label)
        if session is None:
            session = self._sessions[route.cfg.label] = upstream_session(route.cfg)
        upstream = Upstream(_as_user(route.cfg, user, secret), Stats(), session=session)
        self.questions += 1
        try:
            answer = await upstream.fetch_small("GET", request, {})
        except AuthError as e:
            if e.upstream_failure:
                return Verdict(False, f"Artifactory's token service failed: {e}", reachable=False)
            return Verdict(False, REFUSED[401], bad_credential=True)
        except UpstreamError as e:
            return Verdict(False, f"Artifactory could not be asked: {e}", reachable=False)
        if answer.status == 200:
            return Verdict(True, "")
        if answer.status in REFUSED:
            return Verdict(False, REFUSED[answer.status], bad_credential=answer.status == 401)
        if answer.status >= 500 or answer.status == 429:
            return Verdict(False, f"Artifactory answered {answer.status}", reachable=False)
        return Verdict(False, f"Artifactory answered {answer.status}")


def _as_user(cfg: UpstreamConfig, user: str, secret: str) -> UpstreamConfig:
    """The route as the client's user: its credential only, no retries (the client waits), a short timeout."""
    return replace(cfg, username=user, password=Secret(secret), token=None, anonymous=False, retries=0,
                   request_timeout=min(cfg.request_timeout, CHECK_TIMEOUT))
