"""An Artifactory-compatible front for a plain registry, for the demo and the tests (never the mirror).

It serves `/artifactory/api/docker/<repository>/v2/...` (and `/v2/...` when `front_root_v2` is set, for
direct pulls), demands credentials like Artifactory (Basic, a static Bearer access token, or the Docker
token flow with expiring tokens), and counts what it sends: `GET /_front/stats` answers JSON.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import threading
import time
import urllib.parse
from pathlib import Path

import yaml
from mitmproxy import ctx, exceptions, http

from .faults import Fault

log = logging.getLogger(__name__)

SERVICE = "artifactory-front"
MAX_RECORDS = 20000


class ArtifactoryFront:
    def __init__(self) -> None:
        self.username = self.password = self.static_token = ""
        # other users, each reading only names under its prefixes (front_secrets' `users`; /_front/permissions)
        self.users: dict[str, tuple[str, tuple[str, ...]]] = {}  # user -> (password, prefixes it may read)
        self.tokens: dict[str, tuple[str, float, str]] = {}  # token -> (repository name it grants, expiry, user)
        self.token_uses: dict[str, int] = {}
        self.issued: list[str] = []  # for the tests' leak checks; this front is a test tool
        self.fault = Fault()
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.records: list[dict] = []  # the last MAX_RECORDS requests...
        self.request_count = 0  # ...of this many
        self.open = 0  # requests being answered: a test waits for 0 before it counts
        self.body_bytes = 0
        self.tokens_issued = 0

    def load(self, loader) -> None:
        loader.add_option("front_repository", str, "docker-local", "Repository key served under the prefix.")
        loader.add_option("front_auth", str, "token", "Upstream auth: token, basic, bearer or none.")
        loader.add_option("front_secrets", str, "", "YAML file with username, password, static_token.")
        loader.add_option("front_token_ttl", int, 300, "expires_in of issued tokens, in seconds.")
        loader.add_option("front_realm", str, "", "Advertise this token realm instead of our own.")
        loader.add_option("front_token_uses", int, 0, "A token expires after this many requests (0: never).")
        loader.add_option("front_root_v2", bool, False, "Also serve /v2/ at the root (direct pulls).")

    def configure(self, updated: set[str]) -> None:
        if ctx.options.front_auth not in ("token", "basic", "bearer", "none"):
            raise exceptions.OptionsError(f"front_auth {ctx.options.front_auth!r}: expected token, basic, "
                                          f"bearer or none")
        if "front_secrets" in updated and ctx.options.front_secrets:
            data = yaml.safe_load(Path(ctx.options.front_secrets).read_text()) or {}
            self.username = str(data.get("username", ""))
            self.password = str(data.get("password", ""))
            self.static_token = str(data.get("static_token", ""))
            self.users = {str(u["username"]): (str(u["password"]), tuple(u.get("read", ())))
                          for u in data.get("users", ())}

    @property
    def prefix(self) -> str:
        return f"/artifactory/api/docker/{ctx.options.front_repository}"

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        path = flow.request.path
        flow.metadata["front.credential"] = _credential_kind(flow.request.headers.get("Authorization", ""))
        if not path.startswith("/_front/"):
            with self.lock:
                self.open += 1
            flow.metadata["front.open"] = True
            if self.fault.take(path, ("hang",)):
                await asyncio.sleep(3600)  # accepts the request, never answers
                return
            if self.fault.take(path, ("status",)):
                flow.response = _json(self.fault.code, {"errors": [{"code": "UNKNOWN", "message": "injected"}]})
        if flow.response is None:
            self._route(flow)
        if flow.response is not None:
            flow.metadata["front.record"] = {"method": flow.request.method, "path": flow.request.path,
                                             "status": flow.response.status_code,
                                             "bytes": len(flow.response.raw_content or b""),
                                             "credential": flow.metadata.get("front.credential", "")}
            if flow.request.method == "HEAD":
                flow.response.raw_content = b""  # a HEAD answer carries no body; Content-Length stays

    def _route(self, flow: http.HTTPFlow) -> None:
        path = flow.request.path
        flow.metadata["front.path"] = path
        if path.startswith("/_front/"):
            flow.response = self._control(flow.request.method, path)
            return
        if path.startswith(self.prefix + "/v2/token"):
            flow.response = self._issue_token(flow)
            return
        if path.startswith(self.prefix + "/v2"):
            v2_path = path[len(self.prefix):]
        elif ctx.options.front_root_v2 and path.startswith("/v2"):
            v2_path = path
        else:
            flow.response = _json(404, {"errors": [{"code": "NOT_FOUND", "message": "no such repository path"}]})
            return
        name = _repository_of(v2_path)
        denial = self._check_auth(flow, name)
        if denial:
            flow.response = denial
            return
        flow.request.headers.pop("Authorization", None)
        flow.request.path = v2_path

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        record = {"method": flow.request.method, "path": flow.metadata.get("front.path", flow.request.path),
                  "status": flow.response.status_code, "bytes": 0, "range": flow.request.headers.get("Range", ""),
                  "credential": flow.metadata.get("front.credential", "")}
        flow.metadata["front.record"] = record

        is_blob = "/blobs/" in record["path"] and flow.request.method == "GET"
        reset_after = self.fault.after if is_blob and self.fault.take(record["path"], ("reset",)) else None
        corrupt = is_blob and self.fault.take(record["path"], ("corrupt",))

        def count(chunk: bytes) -> bytes:
            nonlocal corrupt
            if reset_after is not None and record["bytes"] + len(chunk) > reset_after:
                flow.kill()  # the connection drops in the middle of the body
                chunk = chunk[:max(0, reset_after - record["bytes"])]
            if corrupt and chunk:
                chunk, corrupt = bytes([chunk[0] ^ 0xFF]) + chunk[1:], False
            record["bytes"] += len(chunk)
            with self.lock:
                self.body_bytes += len(chunk)
            return chunk
        flow.response.stream = count

    def response(self, flow: http.HTTPFlow) -> None:
        self._record(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._record(flow)

    def _record(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.pop("front.open", False):
            with self.lock:
                self.open -= 1
        record = flow.metadata.pop("front.record", None)
        if record is not None and not record["path"].startswith("/_front/"):
            with self.lock:
                self.records.append(record)
                del self.records[:-MAX_RECORDS]
                self.request_count += 1

    def _control(self, method: str, path: str) -> http.Response:
        if path == "/_front/ready":  # answered only once this script is loaded: the harness waits for it
            return _json(200, {"ready": True})
        if path == "/_front/stats":
            with self.lock:
                return _json(200, {"body_bytes": self.body_bytes, "tokens_issued": self.tokens_issued,
                                   "issued_tokens": list(self.issued),
                                   "requests": list(self.records), "request_count": self.request_count,
                                   "open": self.open})
        if path == "/_front/reset" and method == "POST":
            with self.lock:
                self.reset()
            return _json(200, {"reset": True})
        if path.startswith("/_front/fault") and method == "POST":
            try:
                self.fault = Fault.from_query(dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(path).query)))
            except ValueError as e:
                return _json(400, {"error": str(e)})
            return _json(200, {"fault": self.fault.mode})
        if path.startswith("/_front/permissions") and method == "POST":  # ?user=U&read=a/,b/ (empty: nothing)
            query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(path).query, keep_blank_values=True))
            if query.get("user") not in self.users:
                return _json(400, {"error": "unknown user"})
            password, _ = self.users[query["user"]]
            self.users[query["user"]] = (password, tuple(p for p in query.get("read", "").split(",") if p))
            return _json(200, {"user": query["user"], "read": list(self.users[query["user"]][1])})
        if path == "/_front/revoke" and method == "POST":
            self.tokens.clear()
            return _json(200, {"revoked": True})
        return _json(404, {"error": "unknown control path"})

    def _check_auth(self, flow: http.HTTPFlow, name: str) -> http.Response | None:
        mode = ctx.options.front_auth
        given = flow.request.headers.get("Authorization", "")
        if mode == "none":
            return None
        if mode == "basic":
            user = self._basic_user(given)
            if user is None:
                return _unauthorized('Basic realm="Artifactory Realm"')
            return self._permission(user, name)
        if mode == "bearer":
            if self.static_token and secrets.compare_digest(given, f"Bearer {self.static_token}"):
                return None
            return _unauthorized('Bearer realm="Artifactory Realm"')
        token = given[len("Bearer "):] if given.startswith("Bearer ") else ""
        granted = self.tokens.get(token)
        if granted and granted[1] > time.time() and (not name or granted[0] == name):
            self.token_uses[token] = self.token_uses.get(token, 0) + 1
            if not ctx.options.front_token_uses or self.token_uses[token] <= ctx.options.front_token_uses:
                return self._permission(granted[2], name)
            self.tokens.pop(token, None)  # used up: expired in the middle of whatever it was serving
        host, port = flow.client_conn.sockname[:2]  # the Host header is already rewritten in reverse mode
        scheme = "https" if flow.client_conn.tls_established else "http"  # as Artifactory, on its own scheme
        realm = ctx.options.front_realm or f"{scheme}://{host}:{port}{self.prefix}/v2/token"
        scope = f',scope="repository:{name}:pull"' if name else ""
        return _unauthorized(f'Bearer realm="{realm}",service="{SERVICE}"{scope}')

    def _basic_user(self, authorization: str) -> str | None:
        """The user whose Basic credential this is, or None."""
        if authorization == _basic(self.username, self.password):
            return self.username
        return next((user for user, (password, _) in self.users.items()
                     if secrets.compare_digest(authorization, _basic(user, password))), None)

    def _permission(self, user: str, name: str) -> http.Response | None:
        """Artifactory's answer to a user without read permission on the repository path: 403."""
        if user not in self.users or not name:
            return None  # the front's own user reads everything
        if any(name == p.rstrip("/") or name.startswith(p.rstrip("/") + "/") for p in self.users[user][1]):
            return None
        return _json(403, {"errors": [{"code": "DENIED", "message": f"user {user} may not read {name}"}]})

    def _issue_token(self, flow: http.HTTPFlow) -> http.Response:
        user = self._basic_user(flow.request.headers.get("Authorization", ""))
        if user is None:
            return _json(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
        scope = flow.request.query.get("scope", "")
        parts = scope.split(":")
        name = parts[1] if len(parts) == 3 and parts[0] == "repository" else ""
        token = secrets.token_urlsafe(24)
        ttl = ctx.options.front_token_ttl
        self.tokens[token] = (name, time.time() + ttl, user)
        self.tokens_issued += 1
        self.issued.append(token)
        return _json(200, {"token": token, "access_token": token, "expires_in": ttl,
                           "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def _credential_kind(authorization: str) -> str:
    """What was presented, for the tests' "credentials never cross routes" checks: basic:<user>, bearer or ""."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "basic":
        try:
            return "basic:" + base64.b64decode(value).decode(errors="replace").partition(":")[0]
        except ValueError:
            return "basic:?"
    return scheme.lower()


def _repository_of(v2_path: str) -> str:
    rest = v2_path.partition("?")[0][len("/v2/"):]
    for marker in ("/manifests/", "/blobs/", "/tags/"):
        if marker in rest:
            return rest.rpartition(marker)[0] if marker != "/tags/" else rest.partition(marker)[0]
    return ""


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _unauthorized(challenge: str) -> http.Response:
    resp = _json(401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]})
    resp.headers["WWW-Authenticate"] = challenge
    resp.headers["Docker-Distribution-Api-Version"] = "registry/2.0"
    return resp


def _json(status: int, data: dict) -> http.Response:
    return http.Response.make(status, json.dumps(data).encode(), {"Content-Type": "application/json"})
