"""Query preparation: one function for trainer and service, its policy and its budget."""

from __future__ import annotations

import json

import pytest

from app.protocol import ChatCompletionRequest
from app.query import query_text
from router_models.contract import (
    META_QUERY_POLICY,
    ContractError,
    TensorSpec,
    check_router_signature,
    query_policy_of,
)
from router_models.features import prepare_prompts
from router_models.query_prep import (
    DEFAULT_QUERY_POLICY,
    NoQueryText,
    QueryPolicy,
    QueryPolicyError,
    prepare_prompt,
    prepare_query,
)

PROMPTS = ["  What is 2+2?\n", "x" * 5000, "Explain\tTCP slow start.", "é" * 10]


@pytest.mark.parametrize("policy", [DEFAULT_QUERY_POLICY, QueryPolicy(turns=2, max_chars=64)])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_trainer_and_service_prepare_a_one_turn_prompt_identically(
    prompt: str, policy: QueryPolicy
) -> None:
    request = ChatCompletionRequest(model="router", messages=[{"role": "user", "content": prompt}])
    served = query_text(request, policy)
    assert prepare_prompt(prompt, policy) == served
    assert prepare_prompts([prompt], policy) == [served]
    assert served == prompt.strip()[: policy.max_chars]


def test_default_policy_is_the_last_user_message_alone() -> None:
    turns = [("user", "first"), ("assistant", "answer"), ("user", " second "), ("tool", "out")]
    assert prepare_query(turns) == "second"


def test_context_comes_most_recent_first_and_skips_other_roles_and_blank_turns() -> None:
    turns = [
        ("user", "one"),
        ("user", "two"),
        ("assistant", "reply"),
        ("user", "   "),
        ("user", "three"),
    ]
    policy = QueryPolicy(turns=3, separator="|")
    assert prepare_query(turns, policy) == "three|two|one"
    assert prepare_query(turns, QueryPolicy(turns=2, separator="|")) == "three|two"


def test_the_query_keeps_the_budget_and_context_gets_what_is_left() -> None:
    turns = [("user", "abcdefghij"), ("user", "0123456789")]
    assert prepare_query(turns, QueryPolicy(turns=2, max_chars=14, separator="+")) == (
        "0123456789+abc"
    )
    assert prepare_query(turns, QueryPolicy(turns=2, max_chars=11, separator="+")) == ("0123456789")
    assert prepare_query(turns, QueryPolicy(turns=2, max_chars=4, separator="+")) == "0123"


@pytest.mark.parametrize(
    ("turns", "index", "code"),
    [
        ([("system", "s")], None, "no_user_message"),
        ([], None, "no_user_message"),
        ([("user", "earlier"), ("user", " ")], 1, "no_query_text"),
    ],
)
def test_no_query_text_names_the_message_and_code(
    turns: list[tuple[str, str]], index: int | None, code: str
) -> None:
    with pytest.raises(NoQueryText) as raised:
        prepare_query(turns, QueryPolicy(turns=2))
    assert (raised.value.index, raised.value.code) == (index, code)


def test_trainer_keeps_empty_prompts_empty() -> None:
    assert prepare_prompt(" \n") == ""


def test_policy_json_round_trips_and_fills_omitted_keys_from_defaults() -> None:
    policy = QueryPolicy(roles=("user", "assistant"), turns=3, max_chars=900, separator=" / ")
    assert QueryPolicy.from_json(policy.to_json()) == policy
    defaults = QueryPolicy(max_chars=123)
    assert QueryPolicy.from_json('{"turns": 2}', defaults=defaults) == QueryPolicy(
        turns=2, max_chars=123
    )


@pytest.mark.parametrize(
    "text",
    [
        "[1]",
        "not json",
        '{"turns": 0}',
        '{"turns": 2.5}',
        '{"turns": true}',
        '{"max_chars": 0}',
        '{"roles": ["assistant"]}',
        '{"roles": ["user", "user"]}',
        '{"roles": ["user", "robot"]}',
        '{"roles": 3}',
        '{"separator": 1}',
        '{"order": "oldest"}',
    ],
)
def test_malformed_policies_are_refused(text: str) -> None:
    with pytest.raises(QueryPolicyError):
        QueryPolicy.from_json(text)


def _metadata(**extra: str) -> dict[str, str]:
    return {
        "dars.embedding_model": "enc",
        "dars.embedding_dim": "4",
        "dars.label_scheme": "dars",
        "dars.models": json.dumps(["a", "b", "c"]),
        "dars.router": "knn_quality",
        **extra,
    }


def test_the_contract_validator_checks_the_optional_policy() -> None:
    inputs = [TensorSpec("embedding", "float", (None, 4))]
    outputs = [TensorSpec("quality", "float", (None, 3))]
    check_router_signature(inputs, outputs, _metadata())
    good = QueryPolicy(turns=2).to_json()
    check_router_signature(inputs, outputs, _metadata(**{META_QUERY_POLICY: good}))
    assert query_policy_of(_metadata(**{META_QUERY_POLICY: good})) == QueryPolicy(turns=2)
    assert query_policy_of(_metadata()) is None
    with pytest.raises(ContractError, match=META_QUERY_POLICY):
        check_router_signature(inputs, outputs, _metadata(**{META_QUERY_POLICY: '{"turns": -1}'}))
