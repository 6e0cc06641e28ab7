"""Tenants and API keys without a server: hashing, the pepper, the authenticator, the store."""

from __future__ import annotations

import dataclasses
import hmac
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from mipro._settings import Settings
from orchestrator._auth import Authenticator
from orchestrator._errors import Unauthenticated
from orchestrator._models import (
    JobRecord,
    JobSpec,
    JobStatus,
    PolicySpec,
    ProposerSpec,
    TenantStatus,
)
from orchestrator._store import JobStore
from orchestrator._tenants import (
    PEPPER_FILE,
    TenantError,
    TenantWatch,
    bootstrap_tenant_id,
    create_key,
    ensure_bootstrap_tenants,
    hash_secret,
    load_pepper,
    revoke_key,
    secret_matches,
    set_tenant_status,
)

from ._stores import store_at

PEPPER = b"pepper-for-the-unit-tests"
SPEC = JobSpec(task_app_url="http://127.0.0.1:1", policy=PolicySpec("m", "openai", 0.0, 64),
               proposer=ProposerSpec("m", "openai"), bootstrap_train_seeds=(0, 1),
               val_seeds=(5, 6))


@pytest_asyncio.fixture
async def store(store_url: str) -> AsyncIterator[JobStore]:
    opened = store_at(store_url)  # on SQLite and on Postgres
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _bearer(key: str) -> list[tuple[str, str | bytes]]:
    return [("authorization", f"Bearer {key}")]


# -- hashing and the pepper -----------------------------------------------------------------

def test_a_stored_hash_is_a_peppered_hmac_not_the_key() -> None:
    digest = hash_secret("mk_secret", PEPPER)
    assert digest == hmac.new(PEPPER, b"mk_secret", "sha256").hexdigest()
    assert "mk_secret" not in digest and len(digest) == 64
    assert hash_secret("mk_secret", b"another-pepper-value") != digest
    assert secret_matches("mk_secret", digest, PEPPER)
    assert not secret_matches("mk_secreT", digest, PEPPER)
    assert not secret_matches("mk_secret", digest, b"another-pepper-value")


def test_the_pepper_setting_wins_over_the_file(tmp_path: Path) -> None:
    settings = Settings.from_env({"MIPRO_DATA_DIR": str(tmp_path),
                                  "MIPRO_API_KEY_PEPPER": "p" * 20})
    assert load_pepper(settings) == (b"p" * 20, None)
    assert not (tmp_path / PEPPER_FILE).exists()


def test_without_the_setting_a_pepper_file_is_made_once_mode_0600(tmp_path: Path) -> None:
    settings = Settings.from_env({"MIPRO_DATA_DIR": str(tmp_path / "data")})
    pepper, made = load_pepper(settings)
    assert made == tmp_path / "data" / PEPPER_FILE
    assert made.stat().st_mode & 0o777 == 0o600
    assert len(pepper) >= 32
    assert load_pepper(settings) == (pepper, None)  # read back, not made again


def test_a_short_pepper_setting_is_refused_by_name() -> None:
    from mipro._settings import SettingsError

    with pytest.raises(SettingsError, match="MIPRO_API_KEY_PEPPER must be at least 16"):
        Settings.from_env({"MIPRO_API_KEY_PEPPER": "short"})


# -- the authenticator ----------------------------------------------------------------------

async def test_a_bootstrap_key_is_its_own_tenant_with_the_old_owner_id() -> None:
    auth = Authenticator(["mk_a", "mk_b"])
    assert await auth.tenant_from_metadata(_bearer("mk_a")) == bootstrap_tenant_id("mk_a")
    assert await auth.tenant_from_metadata([("x-api-key", "mk_b")]) == bootstrap_tenant_id("mk_b")
    # the owner jobs had before tenants existed: sha256 of the key, 16 hex digits
    assert bootstrap_tenant_id("mk_a") == "own_" + __import__("hashlib").sha256(
        b"mk_a").hexdigest()[:16]
    with pytest.raises(Unauthenticated, match="unknown API key"):
        await auth.tenant_from_metadata(_bearer("mk_c"))


@pytest.mark.parametrize(("metadata", "words"), [
    ([], "missing API key"),
    ([("authorization", "Bearer ")], "missing API key"),
    ([("authorization", "Bearer ключ")], "malformed API key: it must be printable ASCII"),
    ([("x-api-key", "mk_\u00e9t\u00e9")], "malformed API key: it must be printable ASCII"),
    ([("x-api-key", "mk_a b")], "malformed API key"),
    ([("x-api-key", "mk_\x01")], "malformed API key"),
    ([("x-api-key", "k" * 513)], "longer than 512"),
    ([("authorization", "Basic bWs6YQ==")], "malformed authorization header"),
    ([("x-api-key", "ключ".encode())], "not ASCII"),
])
async def test_missing_and_malformed_keys_are_unauthenticated(
        metadata: list[tuple[str, str | bytes]], words: str) -> None:
    with pytest.raises(Unauthenticated, match=words):
        await Authenticator(["mk_a"]).tenant_from_metadata(metadata)


async def test_every_known_key_is_compared_whichever_matches(
        monkeypatch: pytest.MonkeyPatch, store: JobStore) -> None:
    for tenant in ("t1", "t2", "t3"):
        await create_key(store, PEPPER, tenant)
    _record, secret = await create_key(store, PEPPER, "t4")
    auth = Authenticator(["mk_boot_1", "mk_boot_2"], store=store, pepper=PEPPER)
    calls: list[int] = []
    compare = hmac.compare_digest

    def counting(a: Any, b: Any) -> bool:
        calls.append(1)
        return compare(a, b)

    monkeypatch.setattr("orchestrator._auth.hmac.compare_digest", counting)
    for presented in ("mk_boot_1", secret, "mk_nobody"):
        calls.clear()
        try:
            await auth.tenant_from_metadata(_bearer(presented))
        except Unauthenticated:
            pass
        assert len(calls) == 6, presented  # 2 bootstrap + 4 stored, for a hit or a miss


async def test_a_stored_key_maps_to_its_tenant_until_revoked(store: JobStore) -> None:
    clock = Clock()
    auth = Authenticator([], store=store, pepper=PEPPER, cache_seconds=1.0, clock=clock)
    record, secret = await create_key(store, PEPPER, "acme", "ci")
    assert secret.startswith("mk_") and record.prefix == secret[:10]
    assert secret not in json.dumps(dataclasses.asdict(record), default=str)
    assert await auth.tenant_from_metadata(_bearer(secret)) == "acme"
    await revoke_key(store, record.key_id)
    clock.now += 0.5  # within the cache: what was read still holds
    assert await auth.tenant_from_metadata(_bearer(secret)) == "acme"
    clock.now += 0.6
    with pytest.raises(Unauthenticated, match="revoked"):
        await auth.tenant_from_metadata(_bearer(secret))


async def test_a_wrong_pepper_accepts_no_stored_key(store: JobStore) -> None:
    _record, secret = await create_key(store, PEPPER, "acme")
    auth = Authenticator([], store=store, pepper=b"a-different-pepper")
    with pytest.raises(Unauthenticated, match="unknown API key"):
        await auth.tenant_from_metadata(_bearer(secret))


async def test_a_disabled_tenant_is_refused_and_enabled_again(store: JobStore) -> None:
    auth = Authenticator(["mk_boot"], store=store, pepper=PEPPER, cache_seconds=0)
    _record, secret = await create_key(store, PEPPER, "acme")
    await ensure_bootstrap_tenants(store, ["mk_boot"])
    await set_tenant_status(store, "acme", TenantStatus.DISABLED)
    await set_tenant_status(store, bootstrap_tenant_id("mk_boot"), TenantStatus.DISABLED)
    for key in (secret, "mk_boot"):
        with pytest.raises(Unauthenticated, match="tenant is disabled"):
            await auth.tenant_from_metadata(_bearer(key))
    await set_tenant_status(store, "acme", TenantStatus.ACTIVE)
    assert await auth.tenant_from_metadata(_bearer(secret)) == "acme"


async def test_admin_errors_name_what_is_wrong(store: JobStore) -> None:
    with pytest.raises(TenantError, match="no API key 'key_x'"):
        await revoke_key(store, "key_x")
    with pytest.raises(TenantError, match="no tenant 'ghost'"):
        await set_tenant_status(store, "ghost", TenantStatus.DISABLED)
    with pytest.raises(TenantError, match="tenant id must be"):
        await create_key(store, PEPPER, "has space")


async def test_a_second_key_joins_the_tenant_and_revoke_keeps_the_first_time(
        store: JobStore) -> None:
    first, _ = await create_key(store, PEPPER, "acme", "old")
    second, _ = await create_key(store, PEPPER, "acme", "new")
    assert {t.tenant_id for t in await store.list_tenants()} == {"acme"}
    revoked = await revoke_key(store, first.key_id)
    again = await revoke_key(store, first.key_id)
    assert revoked.revoked_at is not None and again.revoked_at == revoked.revoked_at
    keys = {k.key_id: k for k in await store.list_api_keys()}
    assert keys[second.key_id].revoked_at is None and keys[first.key_id].name == "old"


# -- disabled tenants' jobs -----------------------------------------------------------------

async def test_the_watch_cancels_only_unfinished_jobs_of_disabled_tenants(
        store: JobStore) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for job_id, owner, status in (("pl_a", "acme", JobStatus.RUNNING),
                                  ("pl_b", "acme", JobStatus.QUEUED),
                                  ("pl_c", "acme", JobStatus.SUCCEEDED),
                                  ("pl_d", "other", JobStatus.RUNNING)):
        await store.create_job(JobRecord(job_id=job_id, owner=owner, spec=SPEC, status=status,
                                         created_at=now))
    for tenant in ("acme", "other"):
        await create_key(store, PEPPER, tenant)
    asked: list[tuple[str, str, str]] = []

    async def cancel(owner: str, job_id: str, reason: str) -> None:
        asked.append((owner, job_id, reason))

    watch = TenantWatch(store, cancel, interval=1.0)
    assert await watch.check_once() == []
    await set_tenant_status(store, "acme", TenantStatus.DISABLED)
    assert await watch.check_once() == ["pl_a", "pl_b"]
    assert asked == [("acme", "pl_a", "tenant disabled"), ("acme", "pl_b", "tenant disabled")]
