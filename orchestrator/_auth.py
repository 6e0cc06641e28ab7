"""API-key authentication of job API calls: which tenant is calling.

A caller presents a key as `authorization: Bearer <key>` or `x-api-key: <key>` (gRPC
metadata; the gateway passes REST headers through lower-cased). A key is accepted when it is
one of `MIPRO_API_KEYS` (the development bootstrap, each its own tenant) or a stored,
unrevoked key (`_tenants.py`), and its tenant is not disabled. Stored keys and tenants are
re-read from the store at most every `cache_seconds` (at most 1 s), so a key revoked or a
tenant disabled by `mipro keys` / `mipro tenants` in another process is refused within it.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog

from ._errors import Unauthenticated
from ._models import TenantStatus
from ._store import JobStore
from ._tenants import bootstrap_tenant_id, hash_secret

log = structlog.get_logger(__name__)

#: The least time between two re-reads of the keys that unknown keys ask for.
MISS_REREAD_SECONDS = 0.1

#: The longest key accepted; longer is malformed.
MAX_KEY_LENGTH = 512
_HOW_TO_SEND = "send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"


def owner_of(api_key: str) -> str:
    """The tenant of a bootstrap key (kept under its old name)."""
    return bootstrap_tenant_id(api_key)


def _check_shape(key: str) -> str:
    if not key:
        raise Unauthenticated(f"missing API key: {_HOW_TO_SEND}")
    if len(key) > MAX_KEY_LENGTH:
        raise Unauthenticated(f"malformed API key: longer than {MAX_KEY_LENGTH} characters")
    if not all("!" <= ch <= "~" for ch in key):
        raise Unauthenticated(
            "malformed API key: it must be printable ASCII without spaces (the key as "
            "`mipro keys create` printed it)")
    return key


def presented_key(metadata: Iterable[tuple[str, str | bytes]]) -> str:
    """The key the caller sent, or `Unauthenticated` when it is missing or malformed."""
    bearer: str | None = None
    header: str | None = None
    for name, value in metadata:
        if name not in ("authorization", "x-api-key"):
            continue
        if isinstance(value, bytes):
            try:
                value = value.decode("ascii")
            except UnicodeDecodeError:
                raise Unauthenticated(
                    f"malformed API key: the {name} header is not ASCII") from None
        if name == "authorization" and bearer is None:
            scheme, _, rest = value.strip().partition(" ")
            if scheme.lower() != "bearer":
                raise Unauthenticated(f"malformed authorization header: {_HOW_TO_SEND}")
            bearer = rest.strip()
        elif name == "x-api-key" and header is None:
            header = value.strip()
    return _check_shape(bearer if bearer is not None else header or "")


@dataclass(frozen=True)
class _KeyView:
    """What the store said about keys and tenants at one moment."""

    active: tuple[tuple[str, str], ...]  # (secret hash, tenant id) of unrevoked stored keys
    revoked: tuple[str, ...]  # secret hashes of revoked keys
    disabled: frozenset[str]  # tenant ids
    read_at: float


class Authenticator:
    """Maps a presented key to its tenant, comparing keys in constant time."""

    def __init__(self, bootstrap_keys: Iterable[str], *, store: JobStore | None = None,
                 pepper: bytes = b"", cache_seconds: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if store is not None and not pepper:
            raise ValueError("stored API keys need a pepper")
        self._bootstrap = tuple((k.encode(), bootstrap_tenant_id(k)) for k in bootstrap_keys)
        self._store = store
        self._pepper = pepper
        self._cache_seconds = min(cache_seconds, 1.0)
        self._clock = clock
        self._view: _KeyView | None = None
        self._lock = asyncio.Lock()
        self._miss_read_at = -MISS_REREAD_SECONDS

    async def _current(self) -> _KeyView:
        view = self._view
        if view is not None and self._clock() - view.read_at < self._cache_seconds:
            return view
        async with self._lock:
            view = self._view
            if view is None or self._clock() - view.read_at >= self._cache_seconds:
                view = await self._read()
                self._view = view
        return view

    async def _reread_after_miss(self) -> _KeyView | None:
        """The view read again for a key it does not know, which may have been made since
        (`mipro keys create` in another process) and is then accepted at once; None when a
        miss made a read less than `MISS_REREAD_SECONDS` ago, so that unknown keys cannot
        make every call read the store."""
        async with self._lock:
            if self._clock() - self._miss_read_at < MISS_REREAD_SECONDS:
                return None
            self._miss_read_at = self._clock()
            self._view = await self._read()
            return self._view

    async def keep_fresh(self) -> None:
        """Re-reads the view every half cache time, until cancelled, so that no call waits
        for the store (which may answer on the busy jobs' loop: `_api_loop.py`). A failed
        read is logged and tried again; calls then wait for a read of their own once the
        view is too old, as without this task."""
        if self._cache_seconds <= 0:
            return  # nothing is cached: every call reads
        while True:
            try:
                async with self._lock:
                    self._view = await self._read()
            except Exception as error:  # the store may be briefly away; calls report it
                log.warning("could not re-read API keys", error=f"{type(error).__name__}: "
                            f"{error}")
            await asyncio.sleep(self._cache_seconds / 2)

    async def _read(self) -> _KeyView:
        now = self._clock()
        if self._store is None:
            return _KeyView((), (), frozenset(), now)
        keys = await self._store.list_api_keys()
        tenants = await self._store.list_tenants()
        return _KeyView(
            active=tuple((k.secret_hash, k.tenant_id) for k in keys if k.revoked_at is None),
            revoked=tuple(k.secret_hash for k in keys if k.revoked_at is not None),
            disabled=frozenset(t.tenant_id for t in tenants
                               if t.status is TenantStatus.DISABLED),
            read_at=now)

    async def tenant_from_metadata(self, metadata: Iterable[tuple[str, str | bytes]]) -> str:
        """The caller's tenant id, or `Unauthenticated` (missing, malformed, unknown or
        revoked key; disabled tenant)."""
        key = presented_key(metadata)
        view = await self._current()
        tenant = self._match(key, view)
        if tenant is None and self._store is not None:
            fresh = await self._reread_after_miss()
            if fresh is not None and (fresh.active, fresh.revoked) != (view.active,
                                                                       view.revoked):
                view, tenant = fresh, self._match(key, fresh)
        if tenant is None:
            raise Unauthenticated("unknown API key")
        if tenant in view.disabled:
            raise Unauthenticated("this API key's tenant is disabled")
        return tenant

    def _match(self, key: str, view: _KeyView) -> str | None:
        """The tenant of `key`; every candidate is compared, so the time does not say which
        one matched."""
        found: str | None = None
        raw = key.encode()
        for known, tenant in self._bootstrap:
            if hmac.compare_digest(raw, known):
                found = tenant
        if view.active or view.revoked:
            digest = hash_secret(key, self._pepper)
            for stored, tenant in view.active:
                if hmac.compare_digest(digest, stored):
                    found = tenant
            for stored in view.revoked:
                if hmac.compare_digest(digest, stored):
                    raise Unauthenticated("this API key was revoked")
        return found
