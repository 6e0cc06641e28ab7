"""API-key authentication of job API calls.

Keys come from `MIPRO_API_KEYS`. A caller presents one as `authorization: Bearer <key>` or
`x-api-key: <key>` (gRPC metadata; the gateway passes REST headers through lower-cased). A job
belongs to the owner derived from the key, so one owner never sees another's jobs.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from ._errors import Unauthenticated


def owner_of(api_key: str) -> str:
    """A stable owner id for `api_key` that does not reveal it."""
    return "own_" + hashlib.sha256(api_key.encode()).hexdigest()[:16]


class Authenticator:
    """Checks presented keys against the configured ones in constant time."""

    def __init__(self, api_keys: Iterable[str]) -> None:
        self._keys = tuple(api_keys)

    def owner_from_metadata(self, metadata: Iterable[tuple[str, str | bytes]]) -> str:
        """The caller's owner id, or `Unauthenticated` when no configured key is presented."""
        presented = ""
        for key, value in metadata:
            text = value.decode() if isinstance(value, bytes) else value
            if key == "authorization" and text.lower().startswith("bearer "):
                presented = text[7:].strip()
                break
            if key == "x-api-key" and not presented:
                presented = text.strip()
        if not presented:
            raise Unauthenticated(
                "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        if not any(hmac.compare_digest(presented, k) for k in self._keys):
            raise Unauthenticated("unknown API key")
        return owner_of(presented)
