"""Asks Artifactory, with a client's own credential, whether it may pull a repository: the image's tag list
(`?n=1`) through the route that serves the name, as the mirror itself would ask (prefix, repository-path names,
library), or, for a login, the default route's `/v2/`. The mirror's own credential is never involved.

Only routes to Artifactory are asked: those on the default upstream's origin, with a credential of their own. A
name served from another host (a route with its own `url`) is refused without asking, for the user's Artifactory
password goes nowhere else; `access.anonymous` opens such names. The credential is sent to that origin (and a
token realm it allows) only, on connections kept per route, and never kept (access/decisions.py).
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import aiohttp

from registry_mirror.access.decisions import Verdict
from registry_mirror.config.load import Secret, UpstreamConfig
from registry_mirror.oci.registry_requests import Kind, RegistryRequest
from registry_mirror.routes.routing import Route, Router
from registry_mirror.stats.counters import Stats
from registry_mirror.upstream.auth import AuthError
from registry_mirror.upstream.client import SmallResponse, Upstream, upstream_session
from registry_mirror.upstream.retry import UpstreamError

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 10.0  # seconds for one whole question, token exchange and redirects included; a client waits
MAX_QUESTIONS = 64  # questions to one route at once; more are answered "unreachable" at once, never queued
BAD_CREDENTIAL = "Artifactory did not accept the credential"
DENIED = "Artifactory denies this user read access"
NOT_FOUND = "Artifactory has no such image, or does not show it to this user"


class ArtifactoryCheck:
    def __init__(self, router: Router, timeout: float = CHECK_TIMEOUT, max_questions: int = MAX_QUESTIONS):
        self.router = router
        self.timeout, self.max_questions = timeout, max_questions
        self.questions = 0  # asked of Artifactory, for the stats and the figures
        self._open: dict[str, int] = {}  # per route: questions under way
        # per route: connections kept between questions (each carries the asking user's Authorization only)
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()

    async def can_pull(self, user: str, secret: str, name: str) -> Verdict:
        return await self._ask(self.router.for_name(name), user, secret,
                               RegistryRequest(Kind.TAGS, name=name, query="n=1"))

    async def login(self, user: str, secret: str) -> Verdict:
        return await self._ask(self.router.routes[self.router.config.upstream.label], user, secret,
                               RegistryRequest(Kind.PING))

    def _artifactory(self, route: Route) -> bool:
        default = self.router.config.upstream
        return route.cfg.origin == default.origin and not route.cfg.anonymous

    async def _ask(self, route: Route, user: str, secret: str, request: RegistryRequest) -> Verdict:
        if not self._artifactory(route):
            return Verdict(False, f"{request.name} is served from {route.cfg.origin}, not Artifactory: the mirror "
                                  f"cannot ask it about a user (access.anonymous can open it)", lasting=False)
        if route.health.down:
            return Verdict(False, f"Artifactory ({route.cfg.origin}) is down", reachable=False)
        label = route.cfg.label
        if self._open.get(label, 0) >= self.max_questions:
            return Verdict(False, f"{self.max_questions} questions to Artifactory are under way already",
                           reachable=False)
        session = self._sessions.get(label)
        if session is None:
            session = self._sessions[label] = upstream_session(route.cfg)
        upstream = Upstream(_as_user(route.cfg, user, secret), Stats(), session=session)
        self.questions += 1
        self._open[label] = self._open.get(label, 0) + 1
        try:
            async with asyncio.timeout(self.timeout):
                answer = await upstream.fetch_small("GET", request, {})
        except AuthError as e:
            return _token_refusal(e)
        except TimeoutError:
            return Verdict(False, f"Artifactory did not answer within {self.timeout:g} s", reachable=False)
        except UpstreamError as e:
            return Verdict(False, f"Artifactory could not be asked: {e}", reachable=False)
        finally:
            self._open[label] -= 1
        return _verdict(answer)


def _verdict(answer: SmallResponse) -> Verdict:
    if answer.status == 200:
        return Verdict(True, "")
    if answer.status == 401:  # to Basic: the credential; to a token it granted: the repository is not readable
        return Verdict(False, BAD_CREDENTIAL, bad_credential=True) if answer.authorized != "Bearer" \
            else Verdict(False, DENIED)
    if answer.status == 403:
        return Verdict(False, DENIED)
    if answer.status == 404:  # maybe pushed in a moment: asked again next time
        return Verdict(False, NOT_FOUND, lasting=False)
    if answer.status >= 500 or answer.status == 429:
        return Verdict(False, f"Artifactory answered {answer.status}", reachable=False)
    return Verdict(False, f"Artifactory answered {answer.status}", lasting=False)


def _token_refusal(e: AuthError) -> Verdict:
    """The token service's part: unreachable, the credential refused (401), or something else refused."""
    if e.upstream_failure:
        return Verdict(False, f"Artifactory's token service failed: {e}", reachable=False)
    if e.status == 401:
        return Verdict(False, BAD_CREDENTIAL, bad_credential=True)
    return Verdict(False, f"Artifactory's token service refused: {e}", lasting=False)


def _as_user(cfg: UpstreamConfig, user: str, secret: str) -> UpstreamConfig:
    """The route as the client's user: its credential only, no retries (the client waits), a short timeout."""
    return replace(cfg, username=user, password=Secret(secret), token=None, anonymous=False, retries=0,
                   request_timeout=min(cfg.request_timeout, CHECK_TIMEOUT))
