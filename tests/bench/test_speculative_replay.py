"""The offline replay of draft policies (bench.speculative_replay), on made-up token sequences."""

from __future__ import annotations

import pytest

from bench.speculative_replay import STEP_COST, oracle, replay, step_cost


def test_step_costs_are_the_measured_ones_and_linear_in_between() -> None:
    assert step_cost(1) == 1.0 and step_cost(9) == STEP_COST[9]
    assert step_cost(7) == pytest.approx((STEP_COST[5] + STEP_COST[9]) / 2)
    assert step_cost(98) == pytest.approx(2 * STEP_COST[49])


def test_no_drafts_is_one_token_per_step() -> None:
    prompt = list(range(100, 160))
    assert replay(prompt, prompt[:40], lambda: 0, lambda d, a: None) == 1.0


def test_a_copied_answer_pays_and_the_oracle_bounds_every_policy() -> None:
    prompt = list(range(100, 200))
    answer = [7 if i in (30, 47, 64) else t for i, t in enumerate(prompt[:80])]  # a copy with three changes
    seen: list[tuple[int, int]] = []
    fixed = replay(prompt, answer, lambda: 8, lambda d, a: seen.append((d, a)))
    assert fixed > 1.2
    assert any(a < d for d, a in seen) and any(a == d for d, a in seen)  # a change is a miss, the rest hits
    best = oracle(prompt, answer)
    assert best >= fixed and best >= replay(prompt, answer, lambda: 48, lambda d, a: None)


def test_an_answer_unlike_its_prompt_gains_nothing_from_drafts() -> None:
    prompt = list(range(100, 200))
    answer = list(range(500, 560))
    assert replay(prompt, answer, lambda: 8, lambda d, a: None) == 1.0
    assert oracle(prompt, answer) == 1.0
