"""Answers the mirror builds itself: registry-style errors, the ping, and upstream answers passed on."""
from __future__ import annotations

import json
import re
from urllib.parse import parse_qsl, urlencode, urlsplit

from mitmproxy import http

from registry_mirror.outcomes import Outcome

API_VERSION = {"Docker-Distribution-Api-Version": "registry/2.0"}
CACHE_HEADER = "X-Mirror-Cache"
# upstream response headers the stock registry needs; everything else (cookies, Artifactory ids) stays behind
PASSED_RESPONSE_HEADERS = ("Content-Type", "Content-Length", "Content-Range", "Accept-Ranges",
                           "Docker-Content-Digest", "ETag", "Last-Modified", "Retry-After")


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message, "detail": None}]}).encode()


def error_response(status: int, code: str, message: str) -> http.Response:
    return http.Response.make(status, error_body(code, message),
                              {"Content-Type": "application/json", **API_VERSION, CACHE_HEADER: Outcome.REFUSED})


def ping_response() -> http.Response:
    # A Basic challenge (not 200) makes the stock registry record a challenge for its remote: with none it
    # re-pings /v2/ before every operation under one global lock. It has no Basic handler, so it sends no
    # credential; the mirror owns upstream authentication.
    return http.Response.make(401, b'{"errors":[]}', {
        "Content-Type": "application/json", **API_VERSION, CACHE_HEADER: Outcome.LOCAL,
        "WWW-Authenticate": 'Basic realm="artifactory-mirror (credentials are added by the mirror)"'})


def passed_headers(upstream_headers) -> dict[str, str]:
    return {k: v for k in PASSED_RESPONSE_HEADERS if (v := upstream_headers.get(k)) is not None}


def upstream_status_error(status: int, what: str) -> tuple[int, str, str] | None:
    """The error the mirror gives for an upstream status it must not pass on as is, else None.

    A 429 the upstream still answered after the mirror's own waits (upstream/retry.py) is passed on as is, with its
    Retry-After (a PASSED_RESPONSE_HEADERS entry), so that the registry and its client back off as asked."""
    if status == 401:
        return 401, "UNAUTHORIZED", (f"the upstream refused the mirror's credentials for {what}; check "
                                     f"upstream.username / password / token in the mirror's configuration")
    if status == 403:
        return 403, "DENIED", f"the upstream denied access to {what} for the mirror's user"
    if status >= 500:
        return 502, "UNAVAILABLE", f"the upstream answered {status} for {what}"
    return None


def small_response(status: int, headers: dict[str, str], body: bytes, is_head: bool) -> http.Response:
    resp = http.Response.make(status, b"" if is_head else body, {**headers, **API_VERSION})
    if is_head and "Content-Length" in headers:
        resp.headers["Content-Length"] = headers["Content-Length"]  # make() set it to 0 for the empty body
    return resp


def next_page_link(link: str | None, name: str) -> str | None:
    """The upstream's `Link: <...>; rel="next"` of a tag list, as a link on the mirror's own path for `name`.

    The upstream's link carries its repository prefix (and its name for the image), which the stock
    registry would follow back to the addon and be refused; only the page parameters are kept."""
    match = re.match(r'\s*<([^>]*)>\s*;\s*rel="?next"?', link or "")
    if not match:
        return None
    page = [(k, v) for k, v in parse_qsl(urlsplit(match.group(1)).query) if k in ("n", "last")]
    return f'</v2/{name}/tags/list?{urlencode(page)}>; rel="next"' if page else None
