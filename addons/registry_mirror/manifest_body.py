"""What a manifest body must be before it is cached: a JSON object with a schemaVersion of 1 or 2.

A digest header is not enough: an upstream may send none, and then the digest is computed over whatever
arrived. An answer that is not a manifest at all (a token reply or a proxy's page read from a desynchronized
keep-alive connection, an HTML login form) would be cached under the tag and served, and the stock registry
fails it as a schema1 manifest with no signature. Every manifest, index and schema1 alike, carries
`schemaVersion`.
"""
from __future__ import annotations

import json


def manifest_problem(body: bytes) -> str | None:
    """Why `body` cannot be a manifest, or None."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):  # a hostile nesting depth included
        return "not JSON"
    if not isinstance(data, dict):
        return "not a JSON object"
    version = data.get("schemaVersion")
    if version not in (1, 2) or isinstance(version, bool):
        return f"schemaVersion is {json.dumps(version)}, not 1 or 2"
    return None
