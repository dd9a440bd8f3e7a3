"""A listener's TLS certificate (the mirror's own pair), reloaded when it is renewed on disk: new connections get
the new one within `poll` seconds, open ones keep theirs, and a pair that does not load (half-written, or not a
pair) leaves the previous one served. For the addon's own listeners; the stock registry reads its pair at start."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable

from registry_mirror.tls import certs
from registry_mirror.tls.cert_watch import CertWatch

log = logging.getLogger(__name__)

POLL_SECONDS = 5.0  # how long a renewed certificate waits to be served: two small files read each time


class ServedCert:
    def __init__(self, cert: str, key: str, label: str, poll: float = POLL_SECONDS,
                 clock: Callable[[], float] = time.time, client_ca: str | None = None):
        """`label` names the listener in the log; `clock`: an epoch, for the expiry warning; `client_ca`: clients
        must present a certificate it issued (read at start)."""
        self.cert, self.key, self.label = cert, key, label
        self._poll, self._clock = poll, clock
        self._watch = CertWatch(cert, key)  # before the load: no change lost
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        if client_ca:
            self.context.load_verify_locations(cafile=client_ca)
            self.context.verify_mode = ssl.CERT_REQUIRED
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._watch_loop())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _watch_loop(self) -> None:
        held = ""
        while True:
            await asyncio.sleep(self._poll)
            if self._watch.changed():
                self.reload()
            elif self._watch.problem and self._watch.problem != held:  # once per problem, not every poll
                log.warning("%s: the TLS pair on disk is not served yet: %s", self.label, self._watch.problem)
            held = self._watch.problem

    def reload(self) -> bool:
        """Load the pair on disk into the served context. It is tried on a scratch context first, for a load that
        fails half-way can leave a certificate without its key."""
        try:
            not_after = certs.certificate_expiry(self.cert)
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(self.cert, self.key)
            self.context.load_cert_chain(self.cert, self.key)
        except (OSError, certs.CertError) as e:  # ssl.SSLError is an OSError
            log.error("%s: cannot load the new TLS pair %s / %s (%s); still serving the previous certificate",
                      self.label, self.cert, self.key, e)
            return False
        log.info("%s: reloaded its TLS certificate %s, valid until %s", self.label, self.cert,
                 certs.date_text(not_after))
        problem = certs.expiry_problem(self.cert, not_after, self._clock())
        if problem:
            log.log(logging.ERROR if problem[0] == "error" else logging.WARNING, "%s: %s", self.label, problem[1])
        return True
