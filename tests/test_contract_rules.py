"""Pure rules of the task-app contract: where the reward is read, how the prompt is swapped."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator._interceptor import rewrite_messages
from orchestrator._task_app import extract_reward


@pytest.mark.parametrize(
    ("body", "reward"),
    [
        ({"metrics": {"outcome_reward": 0.25, "mean_return": 1.0}}, 0.25),
        ({"metrics": {"mean_return": 0.5, "outcome_score": 1.0}}, 0.5),
        ({"metrics": {"outcome_score": 0.75}}, 0.75),
        ({"metrics": {}, "reward_info": {"outcome_reward": 1}}, 1.0),
        ({"metrics": {"episode_returns": [1.0, 0.0, 0.5]}}, 0.5),
        ({"metrics": {"episode_rewards": [0, 1]}}, 0.5),
        ({"metrics": {"mean_return": 0}}, 0.0),  # a real zero is a reward
    ],
)
def test_reward_is_the_first_number_in_contract_order(body: dict[str, Any],
                                                      reward: float) -> None:
    assert extract_reward(body) == reward


@pytest.mark.parametrize(
    "body",
    [{}, {"metrics": {}}, {"metrics": {"mean_return": "1.0"}}, {"metrics": {"mean_return": True}},
     {"metrics": {"episode_returns": []}}, ["not", "an", "object"], None],
)
def test_no_reward_is_none_not_zero(body: Any) -> None:
    assert extract_reward(body) is None


def test_system_message_is_replaced_and_others_kept() -> None:
    messages = [{"role": "system", "content": "old"}, {"role": "user", "content": "hi"}]
    rewritten = rewrite_messages(messages, "new instruction")
    assert rewritten == [{"role": "system", "content": "new instruction"},
                         {"role": "user", "content": "hi"}]
    assert messages[0]["content"] == "old"  # the caller's list is not mutated


def test_system_message_is_prepended_when_missing() -> None:
    rewritten = rewrite_messages([{"role": "user", "content": "hi"}], "be precise")
    assert rewritten[0] == {"role": "system", "content": "be precise"}
    assert rewritten[1] == {"role": "user", "content": "hi"}
