"""Tenants and API keys: who owns jobs, how keys are made, stored, revoked and checked.

A tenant (`Tenant`) owns jobs and environment keys: its id is the `owner` of its jobs, so a
tenant's keys can be rotated or revoked without losing a job. An API key is shown once, when
`create_key` makes it; the store keeps only `hash_secret(key, pepper)`, an HMAC-SHA256 under a
server pepper (`MIPRO_API_KEY_PEPPER`, else a file made in the data directory), and a
presented key is compared with `hmac.compare_digest`.

Keys in `MIPRO_API_KEYS` (the development bootstrap) are not stored: each maps to its own
bootstrap tenant `own_<sha256(key)[:16]>`, the owner id jobs had before tenants existed, so
those jobs stay reachable without a migration. `TenantWatch` cancels the queued and running
jobs of a disabled tenant, also when an admin command disabled it while the server runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

import structlog

from mipro._settings import Settings

from ._errors import OrchestratorError
from ._models import ApiKeyRecord, JobStatus, Tenant, TenantStatus
from ._store import JobStore

log = structlog.get_logger(__name__)

#: Every key `create_key` makes starts so; the rest is 32 random bytes, URL-safe base64.
KEY_PREFIX = "mk_"
#: How many leading characters of a key are stored and listed, to tell keys apart.
DISPLAY_PREFIX_LENGTH = 10
#: The file of the data directory that holds the pepper when the setting is unset.
PEPPER_FILE = "api_key_pepper"
BOOTSTRAP_TENANT_NAME = "bootstrap (MIPRO_API_KEYS)"
_TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class TenantError(ValueError):
    """An admin command cannot be done; the message says why."""


def hash_secret(secret: str, pepper: bytes) -> str:
    """The stored form of an API key: hex HMAC-SHA256 of its UTF-8 bytes under `pepper`."""
    return hmac.new(pepper, secret.encode(), hashlib.sha256).hexdigest()


def secret_matches(secret: str, stored_hash: str, pepper: bytes) -> bool:
    """Whether `secret` is the key of `stored_hash`, in time independent of where they differ."""
    return hmac.compare_digest(hash_secret(secret, pepper), stored_hash)


def bootstrap_tenant_id(api_key: str) -> str:
    """The tenant of a `MIPRO_API_KEYS` key: the owner id jobs had before tenants existed."""
    return "own_" + hashlib.sha256(api_key.encode()).hexdigest()[:16]


def validate_tenant_id(tenant_id: str) -> str:
    """`tenant_id`, or `TenantError` when it is not 1-64 letters, digits, `_`, `.` or `-`."""
    if not _TENANT_ID.fullmatch(tenant_id):
        raise TenantError(
            f"tenant id must be 1-64 letters, digits, '_', '.' or '-' starting with a letter or "
            f"digit, got {tenant_id!r}")
    return tenant_id


def load_pepper(settings: Settings) -> tuple[bytes, Path | None]:
    """The API-key pepper: `MIPRO_API_KEY_PEPPER`, else the data directory's pepper file,
    made (mode 0600) when missing. The path is returned when the file was made just now."""
    if settings.api_key_pepper:
        return settings.api_key_pepper.encode(), None
    path = settings.data_dir / PEPPER_FILE
    made: Path | None = None
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # another process made it first
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as file:
                file.write(secrets.token_urlsafe(32) + "\n")
            made = path
    pepper = path.read_text().strip()
    if not pepper:
        raise TenantError(f"the pepper file {path} is empty; delete it or set "
                          "MIPRO_API_KEY_PEPPER")
    return pepper.encode(), made


def _now() -> datetime:
    return datetime.now(UTC)


# -- admin operations (the `mipro keys` / `mipro tenants` commands) -------------------------

async def create_key(store: JobStore, pepper: bytes, tenant_id: str,
                     name: str = "") -> tuple[ApiKeyRecord, str]:
    """Makes a key for `tenant_id` (creating the tenant when new); returns its record and the
    key itself, which is stored nowhere."""
    tenant = await store.create_tenant(Tenant(
        tenant_id=validate_tenant_id(tenant_id), name=tenant_id, status=TenantStatus.ACTIVE,
        created_at=_now()))
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKeyRecord(key_id="key_" + secrets.token_hex(8), tenant_id=tenant.tenant_id,
                          name=name.strip(), prefix=secret[:DISPLAY_PREFIX_LENGTH],
                          secret_hash=hash_secret(secret, pepper), created_at=_now())
    await store.create_api_key(record)
    return record, secret


async def revoke_key(store: JobStore, key_id: str) -> ApiKeyRecord:
    """Revokes the key; its tenant's jobs keep running. `TenantError` when there is none."""
    record = await store.revoke_api_key(key_id, _now())
    if record is None:
        raise TenantError(f"no API key {key_id!r} (see `mipro keys list`)")
    return record


async def set_tenant_status(store: JobStore, tenant_id: str, status: TenantStatus) -> None:
    """Enables or disables the tenant. `TenantError` when there is none."""
    if not await store.set_tenant_status(tenant_id, status):
        raise TenantError(f"no tenant {tenant_id!r} (see `mipro tenants list`)")


async def ensure_bootstrap_tenants(store: JobStore, api_keys: Iterable[str]) -> None:
    """Stores the bootstrap tenant of each `MIPRO_API_KEYS` key, so it can be disabled."""
    for key in api_keys:
        await store.create_tenant(Tenant(
            tenant_id=bootstrap_tenant_id(key), name=BOOTSTRAP_TENANT_NAME,
            status=TenantStatus.ACTIVE, created_at=_now()))


# -- disabled tenants' jobs -----------------------------------------------------------------

#: `JobManager.cancel`: (owner, job id, reason).
CancelJob = Callable[[str, str, str], Awaitable[object]]


class TenantWatch:
    """Every `interval` seconds, cancels the queued and running jobs of disabled tenants."""

    def __init__(self, store: JobStore, cancel: CancelJob, *, interval: float) -> None:
        self._store = store
        self._cancel = cancel
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def check_once(self) -> list[str]:
        """Cancels what is due now; returns the ids of the jobs it cancelled."""
        disabled = {t.tenant_id for t in await self._store.list_tenants()
                    if t.status is TenantStatus.DISABLED}
        if not disabled:
            return []
        cancelled = []
        live = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED)
        for job in await self._store.jobs_with_status(live):
            if job.owner not in disabled:
                continue
            try:
                await self._cancel(job.owner, job.job_id, "tenant disabled")
            except OrchestratorError:  # it finished meanwhile
                continue
            log.info("job cancelled: tenant disabled", job_id=job.job_id, tenant=job.owner)
            cancelled.append(job.job_id)
        return cancelled

    async def _loop(self) -> None:
        while True:
            try:
                await self.check_once()
            except Exception:  # a locked or closing store: try again next round
                log.exception("tenant check failed")
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="tenant-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
