"""Prompt-lookup drafts and the draft policy, without a model."""

from __future__ import annotations

from nbllm.engine.llama.lookup import AUTO_DRAFT, DraftPolicy, PromptLookup


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
    assert DraftPolicy.for_request(0, auto_limit=8, busy=1) is None
    assert DraftPolicy.for_request(AUTO_DRAFT, auto_limit=0, busy=1) is None
    fixed = DraftPolicy.for_request(5, auto_limit=0, busy=1)
    assert fixed is not None and not fixed.auto and fixed.want(16) == 5
    auto = DraftPolicy.for_request(AUTO_DRAFT, auto_limit=8, busy=1)
    assert auto is not None and auto.auto and auto.want(1) == 8


def test_auto_mode_stands_down_when_the_batch_is_busy() -> None:
    policy = DraftPolicy(limit=8, auto=True, busy=2)
    assert policy.want(2) == 8
    assert policy.want(3) == 0


def test_auto_mode_shrinks_on_misses_pauses_then_probes_again_and_grows_on_hits() -> None:
    policy = DraftPolicy(limit=8, auto=True)
    policy.update(8, 2)
    assert policy.want(1) == 3  # what was accepted, and one more
    policy.update(3, 0)
    assert policy.want(1) == 1  # halved
    policy.update(1, 0)  # a miss at length 1: pause
    paused = 0
    while policy.want(1) == 0:
        paused += 1
    assert paused == 2
    policy.update(1, 0)
    paused = 0
    while policy.want(1) == 0:
        paused += 1
    assert paused == 4  # longer each time
    policy.update(1, 1)
    policy.update(2, 2)
    assert policy.want(1) == 4
    fixed = DraftPolicy(limit=4, auto=False)
    fixed.update(4, 0)
    assert fixed.want(1) == 4
