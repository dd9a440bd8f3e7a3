"""The webhook listener: Artifactory's "Docker tag pushed / promoted" events warm that image in the mirror.

A listener of its own on `webhooks.listen` (TLS as the mirror's, with its certificate), never the addon's
`rewriter.listen`, which answers with the upstream credentials and stays on loopback. Each request is read
under a 64 KiB cap, its `X-JFrog-Event-Auth` checked, then its JSON parsed (warming/events.py); a valid event
is answered 202 at once and its warm queued (warming/queue.py). A warm is a pull through the mirror's own stock
registry (warming/pull.py, in a thread: it is synchronous), so the registry stores the image as for any client; the
addon's cached tag is dropped first, so that the warm, and every pull after it, sees the new digest.
A renewed certificate is served to new connections within seconds (tls/served_cert.py), no restart.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from aiohttp import web

from registry_mirror.bodies import BodyCutShort, BodyTooLarge, read_body
from registry_mirror.config.load import Config
from registry_mirror.routes.routing import Router, mirror_names
from registry_mirror.tls.served_cert import POLL_SECONDS, ServedCert
from registry_mirror.warming import pull as warm
from registry_mirror.warming.events import (
    DELETED,
    EVENT_AUTH_HEADER,
    MAX_EVENT_BODY,
    EventError,
    TagEvent,
    authentic,
    kind_of,
    parse,
)
from registry_mirror.warming.queue import Warmer, WarmJob, WarmQueue

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/_mirror/webhooks/artifactory"
READ_SECONDS = 20.0  # for the whole body: a sender that trickles it is dropped


def answer(status: int, reason: str = "", **fields) -> web.Response:
    return web.json_response({"accepted": status == 202, "reason": reason, **fields}, status=status)


class WebhookListener:
    def __init__(self, cfg: Config, router: Router, queue: WarmQueue | None = None,
                 cert_poll: float = POLL_SECONDS, clock: Callable[[], float] = time.time,
                 drop_tag: Callable[[str, str, str], Awaitable[bool]] | None = None):
        """`drop_tag(name, tag, digest)`: removes a tag deleted upstream (Services.drop_tag)."""
        listen, secret = cfg.webhooks.listen, cfg.webhooks.secret
        if listen is None or secret is None:  # config/load.py asks for both with webhooks
            raise ValueError("a webhook listener needs webhooks.listen and webhooks.secret")
        self.cfg, self.router, self.drop_tag = cfg, router, drop_tag
        self.listen, self.secret = listen, secret
        self.warmer = Warmer(queue or WarmQueue(), self._warm)
        self.answers: Counter = Counter()  # status -> requests answered
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._cert_poll, self._clock = cert_poll, clock  # clock: an epoch, for the expiry warning
        self.served_cert: ServedCert | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", WEBHOOK_PATH, self.handle)
        # keepalive_timeout is armed when a connection opens: one that sends no request within it is closed,
        # so a sender trickling headers cannot hold connections (the addon's HeaderDeadline is mitmproxy's only)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, keepalive_timeout=READ_SECONDS)
        await self._runner.setup()
        listen, mirror = self.listen, self.cfg.mirror
        if mirror.tls:
            self.served_cert = ServedCert(mirror.tls_cert, mirror.tls_key, "webhook listener", self._cert_poll,
                                          self._clock)
        site = web.TCPSite(self._runner, listen.host, listen.port,
                           ssl_context=self.served_cert.context if self.served_cert else None)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.warmer.start()
        if self.served_cert:
            self.served_cert.start()
        log.info("webhook listener on %s://%s%s", "https" if self.cfg.mirror.tls else "http", listen, WEBHOOK_PATH)

    def reload_cert(self) -> bool:
        """The pair on disk, served to new connections (False: not started, not TLS, or it did not load)."""
        return self.served_cert.reload() if self.served_cert else False

    async def close(self) -> None:
        if self.served_cert:
            await self.served_cert.stop()
        await self.warmer.stop()
        if self._runner:
            await self._runner.cleanup()

    async def handle(self, request: web.Request) -> web.Response:
        response = await self._answer(request)
        self.answers[response.status] += 1
        return response

    async def _answer(self, request: web.Request) -> web.Response:
        if request.method != "POST":
            return answer(405, "webhook events are POSTed")
        try:
            body = await asyncio.wait_for(read_body(request.content, MAX_EVENT_BODY, request.content_length),
                                          READ_SECONDS)
        except BodyCutShort as e:
            return answer(400, str(e))
        except BodyTooLarge as e:
            return answer(413, f"an event is at most {MAX_EVENT_BODY} bytes: {e}")
        except TimeoutError:
            return answer(408, f"the body did not arrive within {READ_SECONDS:g} s")
        if not authentic(request.headers.get(EVENT_AUTH_HEADER, ""), self.secret, body):
            log.warning("refused a webhook event from %s: %s missing or wrong", request.remote, EVENT_AUTH_HEADER)
            return answer(401, f"{EVENT_AUTH_HEADER} is missing or wrong; give the webhook the secret of "
                               f"webhooks.secret (signed or not)")
        try:
            event = parse(body)
        except EventError as e:
            return answer(400, str(e))
        if event is None:  # another domain or event: nothing to do, but an operator may want to know
            log.info("webhook event acknowledged and ignored: %s", kind_of(body))
            return answer(202, "not a Docker pushed, promoted or deleted event: nothing to do", ignored=True)
        if event.event_type == DELETED:
            return await self._forget_deleted(event)
        return self._queue(event)

    async def _forget_deleted(self, event: TagEvent) -> web.Response:
        """A tag deleted upstream goes here too, while it names the deleted digest: no pull by it is served from
        the mirror's storage. Its image and other tags stay (`artifactory-mirror forget` removes an image)."""
        names = tuple(mirror_names(self.cfg, event.repo_key, event.image_name))
        if not names or self.drop_tag is None:
            return answer(202, "no route of this mirror serves it: nothing to forget", ignored=True)
        dropped = [name for name in names if await self.drop_tag(name, event.tag, event.digest)]
        log.info("webhook %s: tag removed from %s", event, ", ".join(dropped) or "nowhere (not stored, or pushed "
                 "again since)")
        return answer(202, "", forgotten=[f"{name}:{event.tag}" for name in dropped])

    def _queue(self, event: TagEvent) -> web.Response:
        names = tuple(mirror_names(self.cfg, event.repo_key, event.image_name))
        if not names:
            return answer(422, f"no route of this mirror serves {event.image_name} of repository "
                               f"{event.repo_key}; see `artifactory-mirror check` for the routes")
        self._forget_tag(names, event.tag)  # at once, coalesced or not: no deploy sees the old digest meanwhile
        outcome = self.warmer.submit(WarmJob(event.digest, names, event.tag))
        log.info("webhook %s: warm %s (%s)", event, ", ".join(names), outcome)
        if outcome == "full":
            return answer(503, "too many warms are waiting; Artifactory may send the event again")
        return answer(202, "", warm=outcome, names=list(names))

    def _forget_tag(self, names: tuple[str, ...], tag: str) -> None:
        for name in names if tag else ():
            self.router.for_name(name).manifests.forget_tag(name, tag)

    async def _warm(self, job: WarmJob) -> tuple[int, int]:
        """Drop the addon's cached tag again (a retry may come after the TTL refilled it), then pull through the
        registry in a thread."""
        self._forget_tag(job.names, job.tag)
        progress = await asyncio.to_thread(warm.warm_digest, self.cfg, job.names, job.digest, job.tag,
                                           self.cfg.webhooks.platforms)
        return progress.done_bytes, progress.blobs

    def snapshot(self) -> dict:
        answers = {str(status): n for status, n in sorted(self.answers.items())}
        return {"listen": str(self.cfg.webhooks.listen), "answers": answers, "warms": self.warmer.queue.snapshot()}
