"""Environment keys through the real gateway: Synth's sealed-box form (PyNaCl as the client,
as the SDK does it), the plain form, the field errors, and what reaches the disk and logs."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import stat
from pathlib import Path

import httpx
import nacl.public
import pytest

from mipro import cli

from .conftest import RunningStack
from .test_end_to_end import (
    JOBS,
    _client,
    _field_violations,
    _poll_until_done,
    documented_job,
)

ENV_KEYS = "/api/v1/env-keys"
NAME = "ENVIRONMENT_API_KEY"


async def _seal(client: httpx.AsyncClient, value: str) -> str:
    response = await client.get("/api/v1/crypto/public-key")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["alg"] == "libsodium.sealedbox.v1"
    public_key = nacl.public.PublicKey(base64.b64decode(body["public_key"]))
    sealed = nacl.public.SealedBox(public_key).encrypt(value.encode())
    return base64.b64encode(sealed).decode()


def _data_dir(stack: RunningStack) -> Path:
    return stack.stack.settings.data_dir.resolve()


async def test_a_sealed_key_reaches_the_task_app_of_a_job(running_stack: RunningStack) -> None:
    async with _client(running_stack) as client:
        sealed = await _seal(client, running_stack.environment_key)
        response = await client.post(ENV_KEYS, json={"name": NAME, "ciphertext_b64": sealed})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["name"] == NAME and body["id"].startswith("ek_") and body["updated_at"]
        assert running_stack.environment_key not in response.text
        response = await client.post(JOBS, json=documented_job(running_stack.task_app_url))
        assert response.status_code == 200, response.text
        job = await _poll_until_done(client, response.json()["job_id"])
    assert job["status"] == "succeeded", job.get("error")
    rollouts = [json.loads(line) for line in running_stack.task_app_record.read_text()
                .splitlines() if job["job_id"] in (json.loads(line)["run_id"] or "")]
    assert rollouts and all(r["status"] == 200 for r in rollouts)
    assert all(all(r["auth_headers"].values()) for r in rollouts), rollouts[0]["auth_headers"]


async def test_public_key_needs_an_api_key(running_stack: RunningStack) -> None:
    async with httpx.AsyncClient(base_url=running_stack.gateway_url) as client:
        response = await client.get("/api/v1/crypto/public-key")
    assert response.status_code == 401, response.text


async def test_the_plain_form_still_works_and_the_fingerprint_is_keyed(
        running_stack: RunningStack) -> None:
    value = "plain-form-key-abc"
    async with _client(running_stack, key="mk_other_owner_key") as client:
        first = await client.post(ENV_KEYS, json={"name": "PLAIN_FORM_KEY", "value": value})
        again = await client.post(ENV_KEYS, json={"name": "PLAIN_FORM_KEY", "value": value})
    assert first.status_code == 200, first.text
    fingerprint = first.json()["fingerprint"]
    assert fingerprint == again.json()["fingerprint"] and len(fingerprint) == 16
    # the old fingerprint, a prefix of the value's plain SHA-256, helped guess a short key
    assert not hashlib.sha256(value.encode()).hexdigest().startswith(fingerprint[:8])


async def test_both_or_neither_form_is_a_400_naming_the_field(
        running_stack: RunningStack) -> None:
    async with _client(running_stack, key="mk_other_owner_key") as client:
        sealed = await _seal(client, "whatever")
        both = await client.post(ENV_KEYS, json={"name": "X_KEY", "value": "v",
                                                 "ciphertext_b64": sealed})
        neither = await client.post(ENV_KEYS, json={"name": "X_KEY"})
        garbage = await client.post(ENV_KEYS, json={"name": "X_KEY",
                                                    "ciphertext_b64": "bm90IHNlYWxlZA=="})
    for response, field in ((both, "ciphertext_b64"), (neither, "value"),
                            (garbage, "ciphertext_b64")):
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["message"].startswith(f"{field}: ") and _field_violations(body) == [field]


async def test_keys_never_reach_the_disk_or_the_logs_in_plain_text(
        running_stack: RunningStack) -> None:
    sealed_secret, plain_secret = "sk-sealed-scan-" + "Zq9" * 6, "sk-plain-scan-" + "Wx4" * 6
    async with _client(running_stack, key="mk_other_owner_key") as client:
        sealed = await _seal(client, sealed_secret)
        for body in ({"name": "SCANNED_KEY", "ciphertext_b64": sealed},
                     {"name": "PLAIN_SCANNED_KEY", "value": plain_secret}):
            response = await client.post(ENV_KEYS, json=body)
            assert response.status_code == 200, response.text
    data = _data_dir(running_stack)
    for path in [*data.rglob("*"), *running_stack.log_dir.rglob("*")]:
        if path.is_file():
            content = path.read_bytes()
            for secret in (sealed_secret, plain_secret):
                assert secret[:12].encode() not in content, path
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for name in ("mipro.db", "mipro.db-wal", "secrets.key"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name


async def test_a_job_sends_the_key_it_names(running_stack: RunningStack) -> None:
    job_body = documented_job(running_stack.task_app_url)
    job_body["policy_optimization"]["env_key_name"] = "SUPPORT_APP_KEY"
    async with _client(running_stack, key="mk_other_owner_key") as client:
        missing = await client.post(JOBS, json=job_body)
        assert missing.status_code == 400 and "SUPPORT_APP_KEY" in missing.text, missing.text
        await client.post(ENV_KEYS, json={"name": NAME, "value": "not-the-task-apps-key"})
        sealed = await _seal(client, running_stack.environment_key)
        response = await client.post(ENV_KEYS, json={"name": "SUPPORT_APP_KEY",
                                                     "ciphertext_b64": sealed})
        assert response.status_code == 200, response.text
        response = await client.post(JOBS, json=job_body)
        assert response.status_code == 200, response.text
        job = await _poll_until_done(client, response.json()["job_id"])
        bad_name = dict(job_body, policy_optimization={**job_body["policy_optimization"],
                                                       "env_key_name": "no spaces"})
        refused = await client.post(JOBS, json=bad_name)
    assert job["status"] == "succeeded", job.get("error")
    assert job["policy_optimization"]["env_key_name"] == "SUPPORT_APP_KEY"
    assert running_stack.environment_key not in json.dumps(job)
    assert refused.status_code == 400
    assert _field_violations(refused.json()) == ["policy_optimization.env_key_name"]


async def test_the_cli_registers_a_sealed_key(running_stack: RunningStack,
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIPRO_GATEWAY_URL", running_stack.gateway_url)
    monkeypatch.setenv("MIPRO_API_KEY", "mk_other_owner_key")
    monkeypatch.setenv("CLI_APP_KEY", running_stack.environment_key)
    code = await asyncio.to_thread(cli.main, ["env-keys", "register", "--name", "CLI_APP_KEY"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert json.loads(printed)["name"] == "CLI_APP_KEY"
    assert running_stack.environment_key not in printed
    job_body = documented_job(running_stack.task_app_url)
    job_body["policy_optimization"]["env_key_name"] = "CLI_APP_KEY"
    async with _client(running_stack, key="mk_other_owner_key") as client:
        response = await client.post(JOBS, json=job_body)
        assert response.status_code == 200, response.text
        job = await _poll_until_done(client, response.json()["job_id"])
    assert job["status"] == "succeeded", job.get("error")
