"""moaa.models.agent_calls: the helpers every stage's model call shares.

Run: .venv/bin/python -m pytest tests/test_agent_calls.py -x -q
"""

from __future__ import annotations

import pytest
from fakes import FakeClient

from moaa.config import AgentConfig, Sampling
from moaa.errors import ConfigError
from moaa.models.agent_calls import client_for, sampling_for, split_tokens


@pytest.mark.parametrize(
    "total, texts, expected",
    [
        (10, ["aaaa"], [10]),
        (10, ["aa", "aa", "aa"], [4, 3, 3]),  # the remainder goes to the earlier text on a tie
        (7, ["a", "aa", "aaaa"], [1, 2, 4]),
        (3, ["a", "a", ""], [2, 1, 0]),  # rounding each share would give 2 + 2 and leave -1
        (5, ["", ""], [3, 2]),  # all empty: shared evenly
        (0, ["abc", "de"], [0, 0]),
        (4, [], []),
    ],
)
def test_split_tokens_keeps_the_total_exact(total, texts, expected):
    assert split_tokens(total, texts) == expected
    assert sum(split_tokens(total, texts)) == (total if texts else 0)


def test_sampling_for_sets_the_seed_and_overrides():
    agent = AgentConfig(endpoint="a", temperature=0.7, max_tokens=64, seed=3)
    assert sampling_for(agent, 11) == Sampling(temperature=0.7, max_tokens=64, seed=11)
    judge = sampling_for(agent, 4, temperature=0.0, top_logprobs=5)
    assert (judge.temperature, judge.seed, judge.top_logprobs, judge.max_tokens) == (0.0, 4, 5, 64)


def test_client_for_names_the_missing_endpoint():
    clients = {"a": FakeClient("a")}
    assert client_for(AgentConfig(endpoint="a"), clients, "sft") is clients["a"]
    with pytest.raises(ConfigError, match=r"preference.policy: uses endpoint 'b' .*\(clients: a\)"):
        client_for(AgentConfig(endpoint="b"), clients, "preference.policy")
