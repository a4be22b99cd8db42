"""Speculative decoding by prompt lookup, over HTTP on the real models: the same greedy tokens with it on
and off (/api/generate and /api/chat, SmolLM2 and Gemma 3, one and four requests at once), and its
acceptance stats in the answer and in /metrics.

Each comparison starts from the same KV cache state (the prompt cached but for its last token): llama.cpp's
results for a token depend slightly on how many tokens its batch held, so an answer evaluated from an empty
cache may settle a near tie differently than the same answer over a cached prompt, speculation or not.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.speculative import GROUNDED
from nbllm import service
from nbllm.config import Settings
from nbllm.engine.llama.lookup import DraftPolicy
from nbllm.runtime import Runtime
from nbllm.schema import PullRequest
from nbllm.server import BackgroundServer
from tests.support.index_server import IndexServer
from tests.support.metrics import scrape, value

pytestmark = pytest.mark.model

SMOL, GEMMA = "smollm2:135m", "gemma3:270m"
CODE = '''def parse_config(path):
    """Read key = value lines into a dict."""
    result = {}
    with open(path) as handle:
        for line in handle:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, value = line.split("=", 1)
            result[key.strip()] = value.strip()
    return result
'''
REPEAT = "Repeat this code exactly, but rename the function to load_config:\n\n" + CODE
PROMPTS = [REPEAT, "Why is the sky blue?", "List the days of the week, one per line."]
OPTIONS = {"temperature": 0, "num_predict": 56, "num_ctx": 1024}


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory, package_index: IndexServer) -> Iterator[httpx.Client]:
    root: Path = tmp_path_factory.mktemp("speculative")
    settings = Settings(home=root / "home", models=root / "models", package_index=(package_index.url,), num_parallel=4)
    runtime = Runtime.from_settings(settings)
    for name in (SMOL, GEMMA):
        for _ in service.pull(runtime, PullRequest(model=name)):
            pass
    server = BackgroundServer(runtime, port=0).start()
    with httpx.Client(base_url=server.url, timeout=300) as client:
        yield client
    server.stop()
    runtime.close()


def ask(http: httpx.Client, model: str, prompt: str, draft: int, *, chat: bool = False, n: int = 0) -> dict[str, Any]:
    options = {**OPTIONS, "draft_num_predict": draft, **({"num_predict": n} if n else {})}
    if chat:
        body: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}]}
    else:
        body = {"prompt": prompt}
    resp = http.post(
        "/api/chat" if chat else "/api/generate", json={"model": model, "stream": False, "options": options, **body}
    )
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


def answer(data: dict[str, Any]) -> tuple[str, int, Any]:
    """What must not change: the text, the token count and (generate) the tokens themselves."""
    text = data["message"]["content"] if "message" in data else data["response"]
    return text, data["eval_count"], data.get("context")


@pytest.mark.parametrize(("model", "chat"), [(SMOL, False), (SMOL, True), (GEMMA, False)])
def test_greedy_answers_are_the_same_with_and_without_speculation(
    http: httpx.Client, model: str, *, chat: bool
) -> None:
    for prompt in PROMPTS if model == SMOL else [REPEAT]:
        ask(http, model, prompt, 0, chat=chat, n=1)  # the prompt in the cache: both runs start alike
        off = ask(http, model, prompt, 0, chat=chat)
        assert "draft_count" not in off
        for draft in (-1, 5):
            on = ask(http, model, prompt, draft, chat=chat)
            assert answer(on) == answer(off), (model, prompt, draft)
            assert 0 <= on.get("draft_accepted_count", 0) <= on.get("draft_count", 0)


def test_a_long_copy_streaks_to_64_token_steps_and_gives_the_same_greedy_answer(
    http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer that copies ~300 tokens of its input: drafts accepted whole double up to 63 tokens (a step of
    64, where llama.cpp's CPU path changes: ``lookup._STREAK_MAX``), and the tokens are still the ones the
    model gives one at a time."""
    wanted: list[int] = []
    want = DraftPolicy.want

    def recorded(self: DraftPolicy, generating: int) -> int:
        k = want(self, generating)
        wanted.append(k)
        return k

    monkeypatch.setattr(DraftPolicy, "want", recorded)
    options = {"temperature": 0, "num_predict": 256, "num_ctx": 2048}

    def run(draft: int, n: int = 0) -> dict[str, Any]:
        body = {"model": SMOL, "prompt": GROUNDED, "raw": True, "stream": False}
        resp = http.post(
            "/api/generate",
            json={**body, "options": {**options, "draft_num_predict": draft, **({"num_predict": n} if n else {})}},
        )
        assert resp.status_code == 200, resp.text
        data: dict[str, Any] = resp.json()
        return data

    run(0, 1)  # (the prompt in the cache: both runs start alike)
    off = run(0)
    on = run(-1)
    assert answer(on) == answer(off) and off["eval_count"] == 256
    assert 63 in wanted and on["draft_accepted_count"] >= 128


def test_a_repeated_input_is_drafted_and_mostly_accepted_and_metrics_count_it(http: httpx.Client) -> None:
    before = scrape(str(http.base_url).rstrip("/"))
    data = ask(http, SMOL, REPEAT, -1, chat=True)
    assert data["draft_count"] > 0 and 0 < data["draft_accepted_count"] <= data["draft_count"]
    assert data["draft_accepted_count"] >= data["eval_count"] // 4  # a quarter of the tokens came free at least
    after = scrape(str(http.base_url).rstrip("/"))
    drafted = value(after, "nbllm_draft_tokens_total", model=SMOL) - value(
        before, "nbllm_draft_tokens_total", model=SMOL
    )
    accepted = value(after, "nbllm_draft_accepted_tokens_total", model=SMOL) - value(
        before, "nbllm_draft_accepted_tokens_total", model=SMOL
    )
    assert (drafted, accepted) == (data["draft_count"], data["draft_accepted_count"])


def test_four_requests_at_once_get_the_answers_they_get_without_speculation(http: httpx.Client) -> None:
    # (Not REPEAT: four requests arriving at once share the slots' caches in an order that varies, and for
    # that prompt the cached state alone decides a near tie, with speculation off as much as on.)
    prompts = [
        "Repeat after me: the quick brown fox jumps over the lazy dog.",
        "Why is the sky blue?",
        "Copy this list: apples, pears, plums, cherries, grapes.",
        "Name a colour.",
    ]
    for prompt in prompts:
        ask(http, SMOL, prompt, 0, chat=True, n=1)
    results: dict[tuple[int, int], dict[str, Any]] = {}
    errors: list[BaseException] = []

    def run(i: int, draft: int) -> None:
        try:
            results[i, draft] = ask(http, SMOL, prompts[i], draft, chat=True)
        except BaseException as exc:  # reported below
            errors.append(exc)

    for draft in (0, 5):  # fixed drafts: the automatic mode stands down in a busy batch
        threads = [threading.Thread(target=run, args=(i, draft)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(240)
    assert not errors
    for i in range(len(prompts)):
        assert answer(results[i, 5]) == answer(results[i, 0]), prompts[i]
    # Which of the two copying prompts finds a long enough match depends on how the batch's near ties fall;
    # at least one of them must draft and have drafts accepted while four sequences share the batch.
    assert sum(results[i, 5].get("draft_accepted_count", 0) for i in (0, 2)) > 0


SAMPLED = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "num_predict": 40, "num_ctx": 1024}


def test_sampled_requests_speculate_reproducibly_per_seed_and_grammars_stay_off(http: httpx.Client) -> None:
    def chat(seed: int, draft: int, n: int = 40, **extra: Any) -> dict[str, Any]:
        options = {**SAMPLED, "seed": seed, "draft_num_predict": draft, "num_predict": n}
        body = {"model": SMOL, "stream": False, "options": options, "messages": [{"role": "user", "content": REPEAT}]}
        resp = http.post("/api/chat", json={**body, **extra})
        assert resp.status_code == 200, resp.text
        data: dict[str, Any] = resp.json()
        return data

    chat(7, 0, n=1)  # the prompt in the cache: both runs start from the same state (see the module's note)
    first, again = chat(7, 6), chat(7, 6)
    assert answer(first) == answer(again)  # the same seed: the same draws, the same tokens
    assert first["draft_count"] > 0 and 0 < first["draft_accepted_count"] <= first["draft_count"]
    assert answer(chat(8, 6)) != answer(first)
    auto = chat(7, -1)
    assert 0 <= auto.get("draft_accepted_count", 0) <= auto.get("draft_count", 0)
    constrained = chat(7, 6, format="json")  # a grammar's state would have to advance through the draft
    assert "draft_count" not in constrained


def _chi2_two_samples(a: list[int], b: list[int]) -> tuple[float, int, float]:
    """(statistic, degrees of freedom, 99.9th percentile) of a two-sample chi-square test on equal-sized samples;
    values seen fewer than 10 times in both together pooled into one category."""
    from collections import Counter

    ca, cb = Counter(a), Counter(b)
    common = [v for v in set(ca) | set(cb) if ca[v] + cb[v] >= 10]
    rest_a = len(a) - sum(ca[v] for v in common)
    rest_b = len(b) - sum(cb[v] for v in common)
    cells = [(ca[v], cb[v]) for v in common] + ([(rest_a, rest_b)] if rest_a + rest_b else [])
    stat = sum((x - y) ** 2 / (x + y) for x, y in cells)
    df = max(1, len(cells) - 1)
    z = 3.09  # the normal's 99.9th percentile; Wilson-Hilferty's chi-square quantile from it
    return stat, df, df * (1 - 2 / (9 * df) + z * (2 / (9 * df)) ** 0.5) ** 3


@pytest.mark.skipif(
    os.environ.get("NBLLM_SPEC_DISTRIBUTION") != "1", reason="about two minutes: NBLLM_SPEC_DISTRIBUTION=1 runs it"
)
def test_sampled_token_frequencies_are_the_same_with_and_without_speculation(http: httpx.Client) -> None:
    """Token i of 300 seeded samples with drafts of 6 against 300 without, for several positions i."""
    n, positions = 300, (3, 6, 9, 12, 15)
    samples: dict[int, list[list[int]]] = {0: [], 6: []}
    stats: dict[int, int] = {"drafted": 0, "accepted": 0}
    for seed in range(n):
        for draft in (0, 6):
            options = {
                **SAMPLED,
                "num_predict": max(positions) + 1,
                "seed": 1000 * draft + seed,
                "draft_num_predict": draft,
            }
            resp = http.post(
                "/api/generate", json={"model": SMOL, "prompt": REPEAT, "stream": False, "options": options}
            )
            data = resp.json()
            samples[draft].append(list(data["context"])[len(data["context"]) - data["eval_count"] :])
            stats["drafted"] += data.get("draft_count", 0)
            stats["accepted"] += data.get("draft_accepted_count", 0)
    assert stats["accepted"] > n  # the drafts were exercised (and accepted at the sampled rate)
    report = []
    for i in positions:
        off = [s[i] if len(s) > i else -1 for s in samples[0]]  # (-1: the answer had ended)
        on = [s[i] if len(s) > i else -1 for s in samples[6]]
        stat, df, limit = _chi2_two_samples(off, on)
        report.append((i, round(stat, 1), df, round(limit, 1)))
        assert stat < limit, report
    print("two-sample chi-square by position (i, statistic, df, 99.9% limit):", report, stats)
