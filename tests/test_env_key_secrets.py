"""Environment keys at rest: sealed in the SQLite file, private file modes, rotation, and the
upgrade of rows written in plain text before encryption."""

from __future__ import annotations

import base64
import os
import sqlite3
import stat
from pathlib import Path

import nacl.public
import pytest

from mipro._dev_secrets import dev_secrets_env
from mipro._settings import Settings, SettingsError
from orchestrator import SqliteJobStore
from orchestrator._migrations import migrations
from orchestrator._secrets import EnvKeyVault, SecretsError

NAME = "ENVIRONMENT_API_KEY"
SECRET = "sk-env-Very-Distinct-0123456789"


def _bytes_on_disk(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file())


async def test_the_database_never_holds_the_plaintext_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = SqliteJobStore(data / "mipro.db", vault=EnvKeyVault(os.urandom(32)))
    await store.open()
    await store.put_env_key("own_a", NAME, SECRET)
    assert await store.get_env_key("own_a", NAME) == SECRET
    on_disk = _bytes_on_disk(data)  # the database, its WAL and shared-memory files
    await store.close()
    on_disk += _bytes_on_disk(data)
    assert SECRET.encode() not in on_disk
    assert SECRET[:15].encode() not in on_disk


async def test_data_dir_is_0700_and_database_files_0600(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    (data / "mipro.db").touch(mode=0o644)
    store = SqliteJobStore(data / "mipro.db", vault=EnvKeyVault(os.urandom(32)))
    await store.open()
    await store.put_env_key("own_a", NAME, SECRET)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    files = [p for p in data.iterdir() if p.name.startswith("mipro.db")]
    assert {p.name for p in files} >= {"mipro.db", "mipro.db-wal"}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    await store.close()


async def test_plaintext_rows_of_an_older_database_are_sealed_in_place(tmp_path: Path) -> None:
    path = tmp_path / "mipro.db"
    with sqlite3.connect(path) as old:  # a file as the release before encryption left it
        for migration in migrations("sqlite")[:3]:
            old.executescript(migration.sql)
        old.execute("INSERT INTO env_keys VALUES ('own_a', ?, ?, '2026-01-01T00:00:00+00:00')",
                    (NAME, SECRET))
    vault = EnvKeyVault(os.urandom(32))
    for _ in range(2):  # the upgrade is idempotent: a second open changes nothing
        store = SqliteJobStore(path, vault=vault)
        await store.open()
        assert await store.get_env_key("own_a", NAME) == SECRET
        await store.close()
    with sqlite3.connect(path) as db:
        (value, key_id), = db.execute("SELECT value, key_id FROM env_keys").fetchall()
    assert SECRET not in value and key_id == vault.current_key_id
    assert SECRET.encode() not in _bytes_on_disk(tmp_path)


async def test_rotation_keeps_stored_keys_readable_and_reseals_them(tmp_path: Path) -> None:
    path = tmp_path / "mipro.db"
    old_key, new_key = os.urandom(32), os.urandom(32)
    store = SqliteJobStore(path, vault=EnvKeyVault(old_key))
    await store.open()
    await store.put_env_key("own_a", NAME, SECRET)
    await store.close()

    rotated = EnvKeyVault(new_key, previous=[old_key])
    store = SqliteJobStore(path, vault=rotated)
    await store.open()
    assert await store.get_env_key("own_a", NAME) == SECRET
    await store.close()
    with sqlite3.connect(path) as db:
        (key_id,), = db.execute("SELECT key_id FROM env_keys").fetchall()
    assert key_id == rotated.current_key_id

    store = SqliteJobStore(path, vault=EnvKeyVault(new_key))  # the old key is retired
    await store.open()
    assert await store.get_env_key("own_a", NAME) == SECRET
    await store.close()


async def test_a_key_sealed_by_an_unconfigured_server_key_reads_as_unregistered(
        tmp_path: Path) -> None:
    path = tmp_path / "mipro.db"
    store = SqliteJobStore(path, vault=EnvKeyVault(os.urandom(32)))
    await store.open()
    await store.put_env_key("own_a", NAME, SECRET)
    await store.close()
    store = SqliteJobStore(path, vault=EnvKeyVault(os.urandom(32)))  # the old key is lost
    await store.open()
    assert await store.get_env_key("own_a", NAME) is None
    await store.put_env_key("own_a", NAME, "registered again")
    assert await store.get_env_key("own_a", NAME) == "registered again"
    await store.close()


def test_a_ciphertext_is_bound_to_its_name() -> None:
    vault = EnvKeyVault(os.urandom(32))
    key_id, sealed = vault.seal(NAME, SECRET)
    assert vault.open(NAME, key_id, sealed) == SECRET
    with pytest.raises(SecretsError, match="tampered"):
        vault.open("OTHER_KEY", key_id, sealed)


def test_sealed_box_opens_with_the_current_or_a_previous_server_key() -> None:
    old_key, new_key = os.urandom(32), os.urandom(32)
    old_public = EnvKeyVault(old_key).public_key_b64
    rotated = EnvKeyVault(new_key, previous=[old_key])
    for public in (rotated.public_key_b64, old_public):
        box = nacl.public.SealedBox(nacl.public.PublicKey(base64.b64decode(public)))
        assert rotated.open_sealed(base64.b64encode(box.encrypt(SECRET.encode())).decode()) \
            == SECRET
    stranger = nacl.public.SealedBox(nacl.public.PrivateKey.generate().public_key)
    with pytest.raises(SecretsError, match="public-key"):
        rotated.open_sealed(base64.b64encode(stranger.encrypt(b"x")).decode())
    with pytest.raises(SecretsError, match="base64"):
        rotated.open_sealed("not base64!")


def test_fingerprint_needs_the_server_key() -> None:
    one, two = EnvKeyVault(os.urandom(32)), EnvKeyVault(os.urandom(32))
    assert one.fingerprint("own_a", NAME, "abc") == one.fingerprint("own_a", NAME, "abc")
    assert one.fingerprint("own_a", NAME, "abc") != two.fingerprint("own_a", NAME, "abc")
    assert one.fingerprint("own_a", NAME, "abc") != one.fingerprint("own_b", NAME, "abc")


def test_a_malformed_server_key_is_named_but_never_quoted() -> None:
    short = base64.b64encode(b"sixteen byte key").decode()
    for variable in ("MIPRO_SECRETS_KEY", "MIPRO_SECRETS_KEY_PREVIOUS"):
        with pytest.raises(SettingsError) as caught:
            Settings.from_env({variable: short})
        assert str(caught.value).startswith(variable) and short not in str(caught.value)
    good = [base64.b64encode(os.urandom(32)).decode() for _ in range(2)]
    settings = Settings.from_env({"MIPRO_SECRETS_KEY": good[0],
                                  "MIPRO_SECRETS_KEY_PREVIOUS": f" {good[1]} ,"})
    assert settings.secrets_keys == tuple(base64.b64decode(k) for k in good)
    assert good[0] not in repr(settings)


def test_the_dev_profile_makes_one_private_key_and_reuses_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    made = dev_secrets_env({}, data)
    assert set(made) == {"MIPRO_SECRETS_KEY"}
    assert len(base64.b64decode(made["MIPRO_SECRETS_KEY"])) == 32
    assert stat.S_IMODE((data / "secrets.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert dev_secrets_env({}, data) == made
    assert dev_secrets_env({"MIPRO_SECRETS_KEY": "set"}, tmp_path / "other") == {}
    assert not (tmp_path / "other").exists()
