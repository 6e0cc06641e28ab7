"""The interceptor's stage route in-process: a stage id in the URL is checked before anything
is forwarded."""

from __future__ import annotations

import httpx

from orchestrator._exchanges import ExchangeLedger, RolloutGrant
from orchestrator._interceptor import Interceptor
from orchestrator._models import PolicySpec
from orchestrator._tokens import RolloutTokens

KEY = "env-key-for-the-stage-tests"


async def test_a_malformed_stage_id_is_refused_before_forwarding() -> None:
    ledger, tokens = ExchangeLedger(), RolloutTokens("k")
    interceptor = Interceptor(ledger, provider_timeout=5, provider_max_retries=0,
                              tokens=tokens)
    token, claims = tokens.mint(job_id="pl_1", candidate=1, rollout_id="pl_1_v01s0",
                                ttl_seconds=60)
    ledger.open(RolloutGrant(job_id="pl_1", rollout_id="pl_1_v01s0", nonce=claims.nonce,
                             candidate_index=1, instruction="x",
                             policy=PolicySpec("m", "no-such-provider"), environment_key=KEY))
    transport = httpx.ASGITransport(app=interceptor.app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://i") as client:
            body = {"messages": [{"role": "user", "content": "hi"}]}
            bad = await client.post(f"/v1/{token}/-router/chat/completions", json=body,
                                    headers={"X-API-Key": KEY})
            assert bad.status_code == 400 and "stage id" in bad.text
            # A well-formed stage id gets as far as the provider (unknown here: 502).
            good = await client.post(f"/v1/{token}/router/chat/completions", json=body,
                                     headers={"X-API-Key": KEY})
            assert good.status_code == 502 and "no-such-provider" in good.text
    finally:
        await interceptor.close()
    assert [e.error != "" for e in ledger.close("pl_1_v01s0")] == [True]  # only the second
