"""The token endpoint (`access.listen`): the realm the stock registry sends clients to when `access.users` is
`artifactory`. A client presents its Artifactory user and password (or identity token) as Basic; for each
`repository:<name>:pull` scope the mirror asks Artifactory, with that credential, whether the user may read the
image (access/artifactory.py), reuses the answer for `decision_ttl` (access/decisions.py), and issues a token
granting only `pull` on what was allowed (access/tokens.py). Push, delete and catalog are never granted.

Answers: 200 with a token; 401 for no or a refused credential; 403 naming the repository and why; 429 after
`failed_logins` refused credentials from one address in a minute; 503 while Artifactory cannot be asked and no
recent "allowed" holds. containerd's OAuth2 POST is answered 404 (it then uses GET, as every containerd does).
Every decision is one audit line (user, repository, outcome, address); the secret is never logged or kept.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from cachetools import TTLCache
from cryptography import x509

from registry_mirror.access.artifactory import ArtifactoryCheck
from registry_mirror.access.decisions import Decision, Decisions, Key, Verdict
from registry_mirror.access.tokens import (
    PULL,
    Scope,
    ScopeError,
    Signer,
    mint,
    parse_scopes,
    signer_problem,
    token_answer,
)
from registry_mirror.config.load import Config
from registry_mirror.oci.registry_requests import valid_name
from registry_mirror.routes.routing import Router
from registry_mirror.tls.served_cert import ServedCert

log = logging.getLogger(__name__)
audit = logging.getLogger("registry_mirror.access.audit")

TOKEN_PATH = "/token"
FAILURE_WINDOW = 60.0  # seconds over which refused credentials from one address are counted
MAX_ADDRESSES = 10_000  # addresses whose refused credentials are counted at once
CHALLENGE = 'Basic realm="artifactory-mirror"'


def realm_url(url: str | None, cert_pem: bytes, port: int) -> str:
    """Where clients fetch tokens: `access.url`, else a name of the mirror's certificate that other machines can
    reach (no loopback name or address) with the token endpoint's port."""
    if url:
        return url.rstrip("/") + TOKEN_PATH
    try:
        names = x509.load_pem_x509_certificate(cert_pem).extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        names = None
    dns = [n for n in (names.get_values_for_type(x509.DNSName) if names else [])
           if n != "localhost" and not n.endswith(".localhost")]
    ips = [ip for ip in (names.get_values_for_type(x509.IPAddress) if names else []) if not ip.is_loopback]
    # a name other machines resolve: a dotted one first (an FQDN), then a bare one, then an address
    dns.sort(key=lambda n: "." not in n)
    host = dns[0] if dns else f"[{ips[0]}]" if ips and ips[0].version == 6 else str(ips[0]) if ips else ""
    if not host:
        raise ValueError("the mirror's certificate names no host for the token endpoint; set access.url, e.g. "
                         "https://mirror.dc1.example.com:5001")
    return f"https://{host}:{port}{TOKEN_PATH}"


def basic_credential(header: str) -> tuple[str, str] | None:
    """(user, secret) of a Basic Authorization header; None when there is none; ValueError when malformed."""
    scheme, _, value = header.partition(" ")
    if not header:
        return None
    if scheme.lower() != "basic":  # never said back: a bare secret may stand where the scheme should be
        raise ValueError("an authorization other than Basic; log in with your Artifactory user and password")
    try:
        user, colon, secret = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError) as e:
        raise ValueError("the Basic credential is not base64 of user:password") from e
    if not colon or not user:
        raise ValueError("the Basic credential names no user")
    return user, secret


def printable(text: str, limit: int = 128) -> str:
    """Client input as a log line or a message may hold it: no control characters (no forged lines), bounded."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit]) + ("..." if len(text) > limit else "")


def error(status: int, code: str, message: str, challenge: bool = False) -> web.Response:
    response = web.json_response({"errors": [{"code": code, "message": message}]}, status=status)
    if challenge:
        response.headers["WWW-Authenticate"] = CHALLENGE
    return response


def address_key(address: str) -> str:
    """What refused logins are counted by: the address, an IPv6 one by its /64 (one host holds all of it)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else address


class FailedLogins:
    """What a guesser spends, per client address over the last FAILURE_WINDOW seconds: each distinct secret
    Artifactory refused (a pull secret gone stale, retried by every pod of a node, counts once), and the questions
    under way for credentials not known good (guesses sent at once)."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic):
        self.limit, self._clock = limit, clock
        self._refused: TTLCache[str, dict[bytes, float]] = TTLCache(MAX_ADDRESSES, ttl=FAILURE_WINDOW, timer=clock)
        self._asking: Counter = Counter()

    def blocked(self, address: str) -> bool:
        where = address_key(address)
        now = self._clock()
        recent = sum(1 for at in (self._refused.get(where) or {}).values() if now - at < FAILURE_WINDOW)
        return recent + self._asking[where] >= self.limit

    def failed(self, address: str, secret: bytes) -> None:
        where = address_key(address)
        refused = self._refused.get(where) or {}
        refused[secret] = self._clock()
        if len(refused) > self.limit:  # only the newest matter to the count
            del refused[min(refused, key=refused.__getitem__)]
        self._refused[where] = refused  # refreshes its expiry

    def asking(self, address: str) -> None:
        """A question for a credential not known good is under way (until `answered`)."""
        self._asking[address_key(address)] += 1

    def answered(self, address: str) -> None:
        where = address_key(address)
        self._asking[where] -= 1
        if not self._asking[where]:
            del self._asking[where]


@dataclass
class Asked:
    """One decision as it was made: from the cache, Artifactory, a stale "allowed", or refused for lack of one."""
    decision: Decision
    outcome: str  # allowed, refused, cached-allowed, cached-refused, stale-allowed, unreachable


class TokenServer:
    def __init__(self, cfg: Config, router: Router, check: ArtifactoryCheck | None = None,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic):
        access = cfg.access
        if access.signing_cert is None or access.signing_key is None:  # config/load.py sets both
            raise ValueError("the token endpoint needs access.signing_cert and access.signing_key")
        self.cfg, self.access = cfg, access
        self.signer = Signer.load(access.signing_cert, access.signing_key)
        self.decisions = Decisions(access.decision_ttl, access.stale_decisions, monotonic)
        self.check = check or ArtifactoryCheck(router)
        self.failures = FailedLogins(access.failed_logins, monotonic)
        self._asking: dict[Key, asyncio.Future[Verdict]] = {}  # questions to Artifactory under way
        self.outcomes: Counter = Counter()  # decisions by outcome
        self.answers: Counter = Counter()  # status -> token requests answered
        self.port = 0
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self.served_cert: ServedCert | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(TOKEN_PATH, self.handle)
        app.router.add_post(TOKEN_PATH, self._oauth_post)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, keepalive_timeout=20)
        await self._runner.setup()
        mirror = self.cfg.mirror
        # with machine certificates, only machines that reach the registry may try passwords here
        self.served_cert = ServedCert(mirror.tls_cert, mirror.tls_key, "token endpoint", client_ca=mirror.client_ca)
        listen = self.access.listen
        await web.TCPSite(self._runner, listen.host, listen.port, ssl_context=self.served_cert.context).start()
        self.port = self._runner.addresses[0][1]
        self.served_cert.start()
        log.info("token endpoint on https://%s%s: pulls need the client's Artifactory user", listen, TOKEN_PATH)
        if problem := signer_problem(self.signer, str(self.access.signing_cert), self._clock()):
            log.log(logging.ERROR if problem[0] == "error" else logging.WARNING, "%s", problem[1])

    async def close(self) -> None:
        if self.served_cert:
            await self.served_cert.stop()
        if self._runner:
            await self._runner.cleanup()
        await self.check.close()

    def snapshot(self) -> dict:
        return {"listen": str(self.access.listen), "decisions": dict(self.outcomes), "answers": dict(self.answers),
                "cached": len(self.decisions), "questions": self.check.questions,
                "signer_not_after": self.signer.not_after}

    async def _oauth_post(self, request: web.Request) -> web.Response:
        self.answers[404] += 1
        return error(404, "UNSUPPORTED", "tokens are fetched with GET and Basic credentials")

    async def handle(self, request: web.Request) -> web.Response:
        response = await self._answer(request, request.remote or "")
        self.answers[response.status] += 1
        return response

    async def _answer(self, request: web.Request, address: str) -> web.Response:
        try:
            scopes = parse_scopes(request.query.getall("scope", []))
            credential = basic_credential(request.headers.get("Authorization", ""))
        except (ScopeError, ValueError) as e:
            return error(400, "UNSUPPORTED", str(e))
        pulls = list(dict.fromkeys(s.name for s in scopes if s.type == "repository" and PULL in s.actions))
        if bad := next((name for name in pulls if not valid_name(name)), None):
            return error(400, "NAME_INVALID", f"scope names {printable(bad)!r}, not a repository name (lowercase "
                                              f"path components: letters, digits, . _ -)")
        if credential is None:
            return self._anonymous(pulls, address)
        user, secret = credential
        granted: list[Scope] = []
        for name in pulls or [""]:  # no pull scope: a login, the credential itself is checked
            if name and self._anonymous_name(name):
                granted.append(Scope("repository", name, (PULL,)))
                continue
            key = self.decisions.key(user, secret, name)
            if self.decisions.fresh(key) is None and not self.decisions.credential_good(key) \
                    and self.failures.blocked(address):  # a question with a credential not known good
                self.outcomes["rate-limited"] += 1
                return error(429, "TOOMANYREQUESTS", f"more than {self.access.failed_logins} refused logins from "
                                                     f"{address} within a minute; wait, then log in again")
            asked = await self._decide(key, user, secret, name, address)
            refused = self._refusal(asked, key, user, name, address)
            if refused is not None:
                return refused
            if name:
                granted.append(Scope("repository", name, (PULL,)))
        return self._token(user, granted)

    def _anonymous(self, pulls: list[str], address: str) -> web.Response:
        closed = [name for name in pulls if not self._anonymous_name(name)]
        if pulls and not closed:
            for name in pulls:
                audit.info("access: user=<anonymous> repository=%s outcome=anonymous from %s", name, address)
            self.outcomes["anonymous"] += len(pulls)
            return self._token("", [Scope("repository", name, (PULL,)) for name in pulls])
        what = f"pulling {closed[0]}" if closed else "this mirror"
        return error(401, "UNAUTHORIZED", f"{what} needs a login: log in to the mirror with your Artifactory user "
                                          f"and password or identity token", challenge=True)

    def _anonymous_name(self, name: str) -> bool:
        return any(name == prefix or name.startswith(prefix + "/") for prefix in self.access.anonymous)

    async def _decide(self, key: Key, user: str, secret: str, name: str, address: str) -> Asked:
        if (cached := self.decisions.fresh(key)) is not None:
            asked = Asked(cached, "cached-allowed" if cached.allowed else "cached-refused")
        else:
            verdict = await self._ask(key, user, secret, name, address)
            if verdict.reachable:
                decision = self.decisions.record(key, verdict)
                asked = Asked(decision, "allowed" if decision.allowed else "refused")
            elif (stale := self.decisions.stale_allowed(key)) is not None:
                asked = Asked(stale, "stale-allowed")
            else:
                asked = Asked(Decision(False, verdict.reason, 0.0), "unreachable")
        self.outcomes[asked.outcome] += 1
        audit.info("access: user=%s repository=%s outcome=%s%s from %s", printable(user), name or "<login>",
                   asked.outcome, f" ({asked.decision.reason})" if not asked.decision.allowed else "", address)
        return asked

    async def _ask(self, key: Key, user: str, secret: str, name: str, address: str) -> Verdict:
        """One question per (user, secret, repository) at a time: a deploy's hundred pulls with one pull secret
        ask Artifactory once. One for a credential not known good counts against `address` while asked."""
        pending = self._asking.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self.check.can_pull(user, secret, name) if name
                                            else self.check.login(user, secret))
            self._asking[key] = pending
            pending.add_done_callback(lambda _done: self._asking.pop(key, None))
            if not self.decisions.credential_good(key):  # counted from now: the next request sees it
                self.failures.asking(address)
                pending.add_done_callback(lambda _done: self.failures.answered(address))
        return await asyncio.shield(pending)  # a client that goes away leaves the question to the others

    def _refusal(self, asked: Asked, key: Key, user: str, name: str, address: str) -> web.Response | None:
        decision, user = asked.decision, printable(user)
        if decision.allowed:
            return None
        if asked.outcome == "unreachable":
            return error(503, "UNAVAILABLE", f"cannot check whether {user} may pull {name or 'from this mirror'}: "
                                             f"{decision.reason}; no recent decision to go by")
        if decision.bad_credential:
            if asked.outcome == "refused":  # Artifactory's own answer, not the cache's
                self.failures.failed(address, key[1])
            return error(401, "UNAUTHORIZED", f"{decision.reason} for user {user}; log in again with your "
                                              f"Artifactory user and password or identity token", challenge=True)
        return error(403, "DENIED", f"user {user} may not pull {name}: {decision.reason}")

    def _token(self, subject: str, granted: list[Scope]) -> web.Response:
        now = self._clock()
        token = mint(self.signer, subject, granted, now, self.access.token_ttl)
        return web.json_response(token_answer(token, self.access.token_ttl, now),
                                 headers={"Cache-Control": "no-store"})
