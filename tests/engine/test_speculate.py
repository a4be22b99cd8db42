"""Speculative sampling keeps a sampled request's distribution: chi-square tests over many seeded draws.

The acceptance rule (``accept_draft``) on fixed small distributions, and the distribution a sampled draft is
verified against (``Shaper``) against the native sampler chain's own draws. Each test also checks that
its statistic rejects a slightly wrong distribution, so that it cannot pass for lack of power.
"""

from __future__ import annotations

import ctypes

import llama_cpp as L
import numpy as np
import pytest

from nbllm.engine.base import SamplingParams
from nbllm.engine.llama.sampling import _TOKEN_DATA, Shaper, make_sampler, shapes_without_history
from nbllm.engine.llama.speculate import SampledVerifier, accept_draft

CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46, 7: 24.32}
"""The chi-square distribution's 99.9th percentile by degrees of freedom (a fair test fails 1 time in 1000)."""

IDS = np.arange(6)
P = [  # the target distribution at draft positions 0, 1 and after the draft (2)
    np.array([0.30, 0.25, 0.20, 0.15, 0.07, 0.03]),
    np.array([0.05, 0.10, 0.40, 0.05, 0.30, 0.10]),
    np.array([0.50, 0.10, 0.10, 0.10, 0.10, 0.10]),
]


def chi2(counts: np.ndarray, probs: np.ndarray) -> tuple[float, int]:
    """(Pearson's statistic, degrees of freedom) of observed counts against expected probabilities."""
    expected = probs * counts.sum()
    keep = expected > 0
    assert counts[~keep].sum() == 0, "a token that cannot occur occurred"
    return float((((counts - expected) ** 2)[keep] / expected[keep]).sum()), int(keep.sum()) - 1


def assert_distributed_as(counts: np.ndarray, probs: np.ndarray, *, off_by: float = 0.02) -> None:
    """counts fit probs, and would not fit probs with ``off_by`` of mass moved between the two likeliest tokens."""
    stat, df = chi2(counts, probs)
    assert stat < CHI2_999[df], (stat, counts, probs)
    wrong = probs.copy()
    a, b = np.argsort(probs)[-2:]
    wrong[a] += off_by
    wrong[b] -= off_by
    assert chi2(counts, wrong)[0] > CHI2_999[df], "the test has too little power to tell"


@pytest.mark.parametrize("draft", [[1, 3], [0, 2], [5, 4]])
def test_each_emitted_token_has_the_target_distribution_whatever_the_draft(draft: list[int]) -> None:
    rng = np.random.default_rng(1234)
    first = np.zeros(6)
    second = np.zeros(6)  # given the first draft token accepted
    third = np.zeros(6)  # given both accepted
    for _ in range(40_000):
        out = accept_draft(draft, lambda j: (IDS, P[j]), rng)
        assert 1 <= len(out) <= len(draft) + 1 and out[: len(out) - 1] == draft[: len(out) - 1]
        first[out[0]] += 1
        if out[0] == draft[0]:
            second[out[1]] += 1
            if out[1] == draft[1]:
                third[out[2]] += 1
    assert_distributed_as(first, P[0])
    assert_distributed_as(second, P[1], off_by=0.05)
    assert_distributed_as(third, P[2], off_by=0.08)  # (fewer samples reach the third position)


def test_a_draft_token_the_target_excludes_is_never_accepted_and_a_certain_one_always() -> None:
    rng = np.random.default_rng(5)
    never = (np.array([3, 4]), np.array([0.6, 0.4]))  # token 9 is not among the kept tokens
    certain = (np.array([9]), np.array([1.0]))
    for _ in range(200):
        assert accept_draft([9], lambda j: never, rng)[0] in (3, 4)
        assert accept_draft([9, 9], lambda j: certain, rng) == [9, 9, 9]


def test_the_same_seed_gives_the_same_tokens() -> None:
    def run(seed: int) -> list[list[int]]:
        rng = np.random.default_rng(seed)
        return [accept_draft([0, 2], lambda j: (IDS, P[j]), rng) for _ in range(50)]

    assert run(7) == run(7)
    assert run(7) != run(8)


PARAMS = [
    SamplingParams(temperature=0.7, top_k=5, top_p=0.9, seed=1),
    SamplingParams(temperature=1.3, top_k=0, top_p=1.0, min_p=0.05, seed=2),
    SamplingParams(temperature=0.9, top_k=6, typical_p=0.8, seed=3),
]
LOGITS = np.array([2.0, 1.5, 1.0, 0.5, 0.2, 0.1, -1.0, 2.6], dtype=np.float32)


@pytest.mark.parametrize("params", PARAMS)
def test_the_shaped_distribution_is_what_the_native_chain_draws_from(params: SamplingParams) -> None:
    ids, probs = Shaper(params, len(LOGITS)).distribution(LOGITS)
    assert abs(probs.sum() - 1) < 1e-9 and len(set(ids.tolist())) == len(ids)
    full = np.zeros(len(LOGITS))
    full[ids] = probs
    chain = make_sampler(None, params, [])  # the request's own chain (no grammar or penalties: no vocab used)
    counts = np.zeros(len(LOGITS))
    data = np.empty(len(LOGITS), _TOKEN_DATA)
    for _ in range(20_000):
        data["id"], data["logit"], data["p"] = np.arange(len(LOGITS)), LOGITS, 0
        cur = L.llama_token_data_array(
            data=ctypes.cast(data.ctypes.data, L.llama_token_data_p), size=len(data), selected=-1, sorted=False
        )
        L.llama_sampler_apply(chain, ctypes.byref(cur))
        counts[cur.data[cur.selected].id] += 1
    L.llama_sampler_free(chain)
    assert_distributed_as(counts, full)


def test_the_verifier_uses_the_rows_in_order_and_is_reproducible_per_seed() -> None:
    rows = np.stack([LOGITS, np.roll(LOGITS, 3), np.roll(LOGITS, 5)])
    params = SamplingParams(temperature=0.8, top_k=4, seed=11)
    runs = []
    for _ in range(2):
        verifier = SampledVerifier(params, len(LOGITS))
        runs.append([verifier.verify(rows, [7, 2]) for _ in range(30)])
        verifier.close()
    assert runs[0] == runs[1]
    kept = [set(Shaper(params, len(LOGITS)).distribution(row)[0].tolist()) for row in rows]
    for out in runs[0]:
        assert all(token in kept[j] for j, token in enumerate(out))


def test_which_requests_can_speculate_when_sampled() -> None:
    assert shapes_without_history(SamplingParams(temperature=0.8))
    assert not shapes_without_history(SamplingParams(temperature=0))  # greedy: verified by the argmax
    assert not shapes_without_history(SamplingParams(temperature=0.8, grammar='root ::= "a"'))
    assert not shapes_without_history(SamplingParams(temperature=0.8, repeat_penalty=1.1))
    assert shapes_without_history(SamplingParams(temperature=0.8, repeat_penalty=1.1, repeat_last_n=0))
