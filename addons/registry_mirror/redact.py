"""Text for logs, the stats page and error answers, with the secrets a URL can carry taken out.

Signed storage URLs (Artifactory's redirects to S3 or GCS) carry their credential in the query string, a
replica's blob endpoint its key, and a URL may carry `user:password@`. Exception texts from the HTTP client
embed whole URLs, so every message built from one passes through `error_text`."""
from __future__ import annotations

import re

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def url_for_logs(url: str) -> str:
    """`url` without its query, fragment and userinfo; never raises, whatever the URL."""
    url = re.split(r"[?#]", url, maxsplit=1)[0]
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"


def error_text(e: BaseException) -> str:
    """`Type: message` of an exception, every URL in it as `url_for_logs` shows it."""
    if isinstance(e, TimeoutError):
        return "timed out"
    message = _URL.sub(lambda m: url_for_logs(m.group(0)), str(e))
    return f"{type(e).__name__}: {message}" if message else type(e).__name__
