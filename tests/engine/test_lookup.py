"""Prompt-lookup drafts and the draft policy, without a model."""

from __future__ import annotations

from nbllm.engine.llama.lookup import (
    AUTO_DRAFT,
    AUTO_NGRAMS,
    DRAFT_COST,
    FIXED_NGRAMS,
    DraftPolicy,
    PromptLookup,
    batch_rate,
    expected_gain,
)


def test_the_draft_continues_the_latest_earlier_occurrence_of_the_longest_suffix() -> None:
    # (5, 6) occurs twice before; the longer suffix (4, 5, 6) only once: its continuation wins.
    lookup = PromptLookup([4, 5, 6, 7, 8, 1, 5, 6, 9, 9, 4, 5, 6])
    assert lookup.draft(2) == [7, 8]
    lookup = PromptLookup([5, 6, 7, 1, 5, 6, 8, 2, 5, 6])
    assert lookup.draft(3) == [8, 2, 5]  # the latest of two equal-length matches


def test_a_draft_never_runs_past_the_known_tokens_and_follows_what_is_pushed() -> None:
    lookup = PromptLookup([1, 2, 3, 1, 2])
    assert lookup.draft(10) == [3, 1, 2]
    lookup.push(3)
    assert lookup.draft(2) == [1, 2]  # (1, 2, 3) last seen at the start
    lookup.push(42)
    assert lookup.draft(4) == []
    assert PromptLookup([]).draft(4) == [] and PromptLookup([7]).draft(4) == []


def test_the_request_option_picks_the_policy() -> None:
    assert DraftPolicy.for_request(0, auto_limit=8) is None
    assert DraftPolicy.for_request(AUTO_DRAFT, auto_limit=0) is None
    fixed = DraftPolicy.for_request(5, auto_limit=0)
    assert fixed is not None and not fixed.auto and fixed.want(16) == 5 and fixed.ngrams == FIXED_NGRAMS
    auto = DraftPolicy.for_request(AUTO_DRAFT, auto_limit=32)
    assert auto is not None and auto.auto and auto.ngrams == AUTO_NGRAMS
    assert 1 <= auto.want(1) <= 32  # before any evidence: a short draft


def test_the_lookup_matches_only_the_suffix_lengths_it_is_given() -> None:
    tokens = [1, 2, 3, 4, 5, 6, 9, 3, 4, 5, 6]
    assert PromptLookup(tokens, (4,)).draft(2) == [9, 3]
    assert PromptLookup([*tokens[:-1], 7], (4,)).draft(2) == []  # only a 3-token match left
    assert PromptLookup([*tokens[:-1], 7], (4, 3)).draft(2) == []
    assert PromptLookup([1, 2, 3, 8, 2, 3], (4, 2)).draft(1) == [8]


def test_the_expected_gain_prices_draft_tokens_at_the_measured_step_cost() -> None:
    assert expected_gain(0.0, 8) == 8 / (DRAFT_COST[0] + DRAFT_COST[1] * 8)
    assert expected_gain(0.5, 1) < 1 < expected_gain(0.05, 4)  # a coin flip never pays; 95% does
    assert expected_gain(0.05, 4) > expected_gain(0.05, 32)  # long drafts only for near-certain text
    assert batch_rate(1) == 1 and 1 < batch_rate(2) < batch_rate(4) < batch_rate(8) < 2


def test_auto_mode_lengthens_drafts_while_they_are_accepted() -> None:
    policy = DraftPolicy(limit=32, auto=True)
    first = policy.want(1)
    for _ in range(12):
        k = policy.want(1)
        policy.update(k, k)
    assert policy.want(1) > first * 2


def test_a_sequence_alone_doubles_its_draft_after_each_whole_acceptance_until_a_miss() -> None:
    policy = DraftPolicy(limit=63, auto=True)
    k = policy.want(1)
    for _ in range(6):
        policy.update(k, k)  # accepted whole: a copying run
        longer = policy.want(1)
        assert longer == min(63, 2 * k)  # (up to a step of 64 tokens: from 64 on a step costs half as much a token)
        k = longer
    assert k == 63
    policy.update(63, 3)  # the run ends: the estimate decides again, shorter
    assert 0 < policy.want(1) < 16
    certain = DraftPolicy(limit=63, auto=True, _verified=1e6, _missed=1e-6)  # (an estimate of no misses at all)
    assert certain.want(1) == 32  # the estimate alone never picks more than 32: streaks go further
    capped = DraftPolicy(limit=6, auto=True)
    for _ in range(4):
        k = capped.want(1)
        capped.update(k, k)
        assert k <= 6
    assert capped.want(1) == 6  # never past the model's limit


def test_a_streak_does_not_lengthen_drafts_in_a_busy_batch() -> None:
    alone, busy = DraftPolicy(limit=32, auto=True), DraftPolicy(limit=32, auto=True)
    for policy in (alone, busy):
        for _ in range(3):
            policy.update(8, 8)
    assert alone.want(1) == 16
    assert busy.want(4) < 16  # (among several sequences the estimate alone decides: drafts must beat the batch)


def test_a_sampled_request_s_drafts_do_not_streak() -> None:
    sampled = DraftPolicy.for_request(AUTO_DRAFT, auto_limit=32, greedy=False)
    greedy = DraftPolicy.for_request(AUTO_DRAFT, auto_limit=32)
    assert sampled is not None and greedy is not None
    for policy in (sampled, greedy):
        for _ in range(3):
            policy.update(8, 8)
    assert greedy.want(1) == 16
    assert sampled.want(1) < 16  # (its estimate alone decides)


def test_auto_mode_stands_down_in_a_busy_batch_unless_drafts_are_near_certain() -> None:
    policy = DraftPolicy(limit=32, auto=True)
    for _ in range(3):
        policy.update(8, 6)  # three of four drafts right: pays alone, not among eight sequences
    assert policy.want(1) > 0
    assert policy.want(8) == 0


def test_auto_mode_pauses_after_misses_longer_each_time_and_probes_with_two_tokens() -> None:
    policy = DraftPolicy(limit=32, auto=True)
    for _ in range(3):
        policy.update(policy.want(1), 0)
    assert policy.want(1) == 0
    pauses = []
    for _ in range(3):
        paused = 0
        while (k := policy.want(1)) == 0:
            paused += 1
        assert k == 2  # the probe
        policy.update(2, 0)
        pauses.append(paused)
    assert pauses[1] > pauses[0] and pauses[2] > pauses[1]
    for _ in range(4):  # the text turned repetitive: probes hit, drafting resumes
        while (k := policy.want(1)) == 0:
            pass
        policy.update(k, k)
    assert policy.want(1) >= 2


def test_a_fixed_length_never_adapts() -> None:
    fixed = DraftPolicy(limit=4, auto=False)
    fixed.update(4, 0)
    assert fixed.want(1) == 4 and fixed.want(8) == 4
