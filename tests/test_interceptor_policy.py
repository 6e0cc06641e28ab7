"""The interceptor's policy in-process: tokens, the body cap and the rewrite of a call.
(`test_security.py` runs the same attacks from a real task app through the real stack.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from orchestrator._exchanges import ExchangeLedger, RolloutGrant
from orchestrator._interceptor import Interceptor, PolicyViolation, enforce_policy
from orchestrator._models import PolicySpec
from orchestrator._tokens import RolloutTokens, TokenRefused

KEY = "env-key-for-the-policy-tests"
POLICY = PolicySpec(model="forced-model", provider="openai")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_token_verifies_only_unaltered_under_its_key_and_before_it_expires() -> None:
    clock = Clock()
    tokens = RolloutTokens("k1", clock=clock)
    token, claims = tokens.mint(job_id="pl_1", candidate=2, rollout_id="pl_1_v02s5",
                                ttl_seconds=30)
    assert tokens.verify(token) == claims
    assert (claims.job_id, claims.candidate, claims.rollout_id) == ("pl_1", 2, "pl_1_v02s5")
    with pytest.raises(TokenRefused, match="invalid"):
        RolloutTokens("k2", clock=clock).verify(token)  # another deployment's key
    with pytest.raises(TokenRefused, match="malformed"):
        tokens.verify(token + ".x")
    clock.now += 31
    with pytest.raises(TokenRefused, match="expired"):
        tokens.verify(token)


def test_the_policy_forces_model_and_cap_and_drops_unlisted_fields() -> None:
    asked = {"model": "gpt-5-pro", "messages": [], "max_tokens": 100000, "n": 1,
             "service_tier": "priority", "store": True, "temperature": 0.3}
    body, dropped = enforce_policy(asked, POLICY, default_max_tokens=512)
    assert body == {"model": "forced-model", "messages": [], "max_tokens": 512,
                    "temperature": 0.3}
    assert dropped == ["service_tier", "store"]
    small, _ = enforce_policy({"messages": [], "max_completion_tokens": 20}, POLICY, 512)
    assert small["max_completion_tokens"] == 20  # a smaller ask stays under the server cap
    job_cap = PolicySpec(model="m", provider="openai", temperature=0.0,
                         max_completion_tokens=64)
    forced, _ = enforce_policy({"messages": [], "max_tokens": 5, "temperature": 1.5},
                               job_cap, 512)
    assert (forced["max_tokens"], forced["temperature"]) == (64, 0.0)  # the job decides
    with pytest.raises(PolicyViolation, match="n must be"):
        enforce_policy({"messages": [], "n": 8}, POLICY, 512)


@pytest_asyncio.fixture
async def served() -> AsyncIterator[tuple[httpx.AsyncClient, RolloutTokens, ExchangeLedger]]:
    ledger = ExchangeLedger(max_calls_per_rollout=3)
    tokens = RolloutTokens("k")
    interceptor = Interceptor(ledger, provider_timeout=5, provider_max_retries=0,
                              tokens=tokens, max_body_bytes=4096)
    transport = httpx.ASGITransport(app=interceptor.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://interceptor") as client:
        yield client, tokens, ledger
    await interceptor.close()


def _open(ledger: ExchangeLedger, tokens: RolloutTokens, rollout: str = "pl_1_b00s0") -> str:
    token, claims = tokens.mint(job_id="pl_1", candidate=0, rollout_id=rollout, ttl_seconds=60)
    ledger.open(RolloutGrant(job_id="pl_1", rollout_id=rollout, nonce=claims.nonce,
                             candidate_index=0, instruction=None, policy=POLICY,
                             environment_key=KEY, spent=lambda: "max_cost_usd"))
    return token


async def test_refusals_happen_before_anything_is_forwarded(
        served: tuple[httpx.AsyncClient, RolloutTokens, ExchangeLedger]) -> None:
    client, tokens, ledger = served
    token = _open(ledger, tokens)
    url = f"/v1/{token}/chat/completions"
    headers = {"X-API-Key": KEY}
    small = {"messages": [{"role": "user", "content": "hi"}]}
    huge = await client.post(url, content=json.dumps({**small, "pad": "x" * 5000}),
                             headers=headers)
    assert huge.status_code == 413
    # The budget is spent (`spent` says max_cost_usd): 429, and the provider never asked.
    spent = await client.post(url, json=small, headers=headers)
    assert spent.status_code == 429 and "max_cost_usd" in spent.text
    await client.post(url, json=small, headers=headers)  # the third call of three
    over = await client.post(url, json=small, headers=headers)
    assert over.status_code == 429 and "at most 3 model calls" in over.text
    ledger.close("pl_1_b00s0")
    assert (await client.post(url, json=small, headers=headers)).status_code == 404
    # A new opening of the same rollout gets a new nonce: the old token stays dead.
    _open(ledger, tokens)
    assert (await client.post(url, json=small, headers=headers)).status_code == 404
