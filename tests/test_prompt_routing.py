"""Prompt-aware routing (``routing.PrefixCacheAware``): prompts sharing a prefix go to
the instance that has it cached, unless loads are out of balance."""

from __future__ import annotations

import cloudpickle
import pytest

from alto_langgraph.process.routing import (
    BLOCK_HASH,
    PrefixCacheAware,
    make_policy,
    prompt_key,
)

INSTANCES = [b"lm#0", b"lm#1", b"lm#2"]
TEMPLATES = [
    "You extract claims from an answer, one per line, short and factual.\nAnswer: ",
    "You write web search queries for a claim, three of them, one per line.\nClaim: ",
    "You judge whether evidence supports a claim: answer yes or no, then why.\nEvidence: ",
]


def test_prompt_keys_share_exactly_the_blocks_of_a_common_prefix() -> None:
    a = prompt_key("x" * 64 + "first question", block_chars=32)
    b = prompt_key("x" * 64 + "second question, longer", block_chars=32)
    c = prompt_key("y" + "x" * 63 + "first question", block_chars=32)
    assert len(a) == 2 * BLOCK_HASH and len(b) == 2 * BLOCK_HASH  # whole blocks only
    assert a[:BLOCK_HASH] == b[:BLOCK_HASH] and a == b[: len(a)]
    assert a[:BLOCK_HASH] != c[:BLOCK_HASH] and a[BLOCK_HASH:] != c[BLOCK_HASH:]
    assert prompt_key("short") == b""


def test_prompts_of_one_template_stay_on_one_instance_and_templates_spread() -> None:
    policy = PrefixCacheAware()
    idle = dict.fromkeys(INSTANCES, 0)
    chosen: dict[int, set[bytes]] = {}
    for i in range(30):
        t = i % 3
        key = prompt_key(TEMPLATES[t] + f"item number {i}")
        chosen.setdefault(t, set()).add(policy.pick(key, INSTANCES, idle))
    assert all(len(insts) == 1 for insts in chosen.values()), chosen
    assert len(set().union(*chosen.values())) == 3  # each template its own instance


def test_out_of_balance_loads_go_to_the_least_loaded_instance() -> None:
    policy = PrefixCacheAware(balance_abs=2, balance_rel=1.5)
    key = prompt_key(TEMPLATES[0] + "first")
    home = policy.pick(key, INSTANCES, dict.fromkeys(INSTANCES, 0))
    busy = {inst: (10 if inst == home else 1) for inst in INSTANCES}
    second = policy.pick(prompt_key(TEMPLATES[0] + "second"), INSTANCES, busy)
    assert second != home and busy[second] == 1
    # both now hold the template; within the thresholds the cache wins over a small
    # imbalance (the idle third instance holds nothing), the less loaded holder first
    mild = {home: 2, second: 3}
    mild.update({inst: 1 for inst in INSTANCES if inst not in mild})
    assert policy.pick(prompt_key(TEMPLATES[0] + "third"), INSTANCES, mild) == home


def test_it_forgets_the_least_recently_used_blocks_beyond_its_bound() -> None:
    policy = PrefixCacheAware(max_blocks=4)
    idle = dict.fromkeys(INSTANCES[:1], 0)
    policy.pick(prompt_key("a" * 32 * 6), INSTANCES[:1], idle)
    assert len(policy._held[INSTANCES[0]]) == 4


def test_it_is_a_named_policy_and_travels_to_the_router() -> None:
    policy = make_policy("prefix_cache_aware", stateful=False)
    assert isinstance(policy, PrefixCacheAware)
    key = prompt_key(TEMPLATES[1] + "x")
    first = policy.pick(key, INSTANCES, dict.fromkeys(INSTANCES, 0))
    shipped = cloudpickle.loads(cloudpickle.dumps(policy))  # as the router gets it
    assert shipped.pick(key, INSTANCES, dict.fromkeys(INSTANCES, 0)) == first
    with pytest.raises(ValueError, match="prefix_cache_aware"):
        make_policy("prefix_aware", stateful=False)


def test_a_prompt_without_a_whole_block_is_balanced_by_load() -> None:
    policy = PrefixCacheAware()
    loads = {b"lm#0": 3, b"lm#1": 0, b"lm#2": 5}
    assert policy.pick(prompt_key("hi"), INSTANCES, loads) == b"lm#1"
