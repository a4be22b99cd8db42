"""KV snapshots and the RAM prompt cache through real ``nbllm serve`` processes on loopback (SmolLM2, one slot).

- A chat of a few turns with ``NBLLM_KV_SNAPSHOTS=1``, the server stopped and a new one started on the same
  store: the next turn gives the same greedy answer as a server that never stopped, and its stats show that
  the history came from the snapshot (``prompt_cached_count``; ``/api/ps``; ``/metrics``).
- With the RAM cache (on by default), a chat whose only slot went to another conversation gets its history
  back from RAM: the same answer as if its slot had been kept, the history not evaluated again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nbllm.runtime import Runtime
from nbllm.store import ModelStore
from tests.cli.support import ServeProcess, free_port
from tests.support.metrics import scrape, value
from tests.support.models import install_model

pytestmark = pytest.mark.model

MODEL = "smollm2:135m"
OPTIONS = {"temperature": 0, "num_predict": 32, "num_ctx": 2048, "draft_num_predict": 0}
SYSTEM = "You are a concise assistant who answers in one or two sentences. " * 6
QUESTIONS = ["What is the capital of France?", "And of Italy?", "Which of the two is older?"]


@pytest.fixture(scope="module")
def store_root(real_runtime: Runtime, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kvsnap-serve")
    source = real_runtime.store.get(MODEL)
    assert source.model_path is not None
    install_model(ModelStore(root / "models"), MODEL, source.model_path, template=source.template, params=source.params)
    return root


def serve(root: Path, name: str, **env: str) -> ServeProcess:
    base = {
        "OLLAMA_HOST": f"127.0.0.1:{free_port()}",
        "OLLAMA_MODELS": str(root / "models"),
        "NBLLM_HOME": str(root / name),
        "OLLAMA_NUM_PARALLEL": "1",
    }
    return ServeProcess({**base, **env}, root / f"{name}.log").wait_ready()


def ask(url: str, messages: list[dict[str, str]]) -> dict[str, Any]:
    body = {"model": MODEL, "messages": messages, "stream": False, "options": OPTIONS}
    resp = httpx.post(url + "/api/chat", json=body, timeout=300)
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


def converse(url: str, turns: int) -> tuple[list[dict[str, str]], list[str]]:
    """The first ``turns`` questions, each answer kept in the history; the history and the answers."""
    messages = [{"role": "system", "content": SYSTEM}]
    answers = []
    for question in QUESTIONS[:turns]:
        messages.append({"role": "user", "content": question})
        answer = ask(url, messages)["message"]["content"]
        answers.append(answer)
        messages.append({"role": "assistant", "content": answer})
    return messages, answers


@pytest.fixture(scope="module")
def reference(store_root: Path) -> Iterator[dict[str, Any]]:
    """A server that never stops, snapshots off (the RAM cache on, as by default)."""
    server = serve(store_root, "reference")
    try:
        history, answers = converse(server.url, 2)
        last = ask(server.url, [*history, {"role": "user", "content": QUESTIONS[2]}])
        again = ask(server.url, [*history, {"role": "user", "content": QUESTIONS[2]}])  # its slot kept
        ask(server.url, [{"role": "user", "content": "Say hello in German."}])  # another chat takes the slot
        back = ask(server.url, [*history, {"role": "user", "content": QUESTIONS[2]}])
        ps = httpx.get(server.url + "/api/ps", timeout=30).json()
        metrics = scrape(server.url)
        yield {"answers": answers, "last": last, "again": again, "back": back, "ps": ps, "metrics": metrics}
    finally:
        server.stop()
        server.kill()


def test_a_conversation_resumes_from_its_snapshot_after_a_restart(store_root: Path, reference: dict[str, Any]) -> None:
    first = serve(store_root, "first", NBLLM_KV_SNAPSHOTS="1")
    try:
        history, answers = converse(first.url, 2)
    finally:
        assert first.stop() == 0
        first.kill()
    assert answers == reference["answers"]
    assert list((store_root / "models" / "kvstate").glob("*/*.kv")), "no snapshot was written"

    second = serve(store_root, "second", NBLLM_KV_SNAPSHOTS="1")
    try:
        got = ask(second.url, [*history, {"role": "user", "content": QUESTIONS[2]}])
        ps = httpx.get(second.url + "/api/ps", timeout=30).json()
        metrics = scrape(second.url)
    finally:
        second.stop()
        second.kill()
    expected = reference["last"]
    assert got["message"]["content"] == expected["message"]["content"]
    assert got["eval_count"] == expected["eval_count"]
    # the history came from the snapshot: as many prompt tokens reused as the server that never stopped had
    assert got["prompt_eval_count"] == expected["prompt_eval_count"]
    assert got["prompt_cached_count"] == expected["prompt_cached_count"] >= got["prompt_eval_count"] - 32
    assert ps["models"][0]["prompt_cache"]["snapshot_hits"] == 1
    assert value(metrics, "nbllm_prompt_cache_snapshot_hits", model=MODEL) == 1


def test_a_chat_whose_slot_was_reused_gets_its_history_back_from_ram(reference: dict[str, Any]) -> None:
    again, back = reference["again"], reference["back"]
    assert back["message"]["content"] == again["message"]["content"]  # as if its slot had been kept
    assert back["prompt_cached_count"] == again["prompt_cached_count"] == back["prompt_eval_count"] - 1
    cache = reference["ps"]["models"][0]["prompt_cache"]
    assert cache["hits"] == 1 and cache["entries"] >= 1 and cache["bytes"] > 0
    assert value(reference["metrics"], "nbllm_prompt_cache_hits", model=MODEL) == 1
