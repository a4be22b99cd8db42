"""``/v1/responses`` through the app over the fake engine: what the real model cannot be made to do."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nbllm.engine.fake import FakeEngine
from nbllm.errors import EngineError


def _events(text: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in text.strip().split("\n\n"):
        kind, data = block.split("\n", 1)
        assert kind.startswith("event: ") and data.startswith("data: "), block
        event = json.loads(data.removeprefix("data: "))
        assert event["type"] == kind.removeprefix("event: ")
        out.append((event["type"], event))
    return out


def test_a_failure_mid_stream_is_a_last_response_failed_event(
    app_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = FakeEngine._emit

    def broken(self, *args, **kwargs) -> Iterator:  # type: ignore[no-untyped-def]
        for i, event in enumerate(original(self, *args, **kwargs)):
            if i == 2:
                raise EngineError("the decoder fell over")
            yield event

    monkeypatch.setattr(FakeEngine, "_emit", broken)
    resp = app_client.post("/v1/responses", json={"model": "tiny", "input": "a longer prompt", "stream": True})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = _events(resp.text)
    kind, last = events[-1]
    assert kind == "response.failed" and last["response"]["status"] == "failed"
    assert last["response"]["error"] == {"code": "server_error", "message": "the decoder fell over"}
    assert [e["sequence_number"] for _, e in events] == list(range(len(events)))
    assert [k for k, _ in events][:2] == ["response.created", "response.in_progress"]


def test_an_error_before_the_first_event_has_its_status(app_client: TestClient) -> None:
    resp = app_client.post("/v1/responses", json={"model": "missing", "input": "hi", "stream": True})
    assert resp.status_code == 404 and resp.json()["error"]["type"] == "not_found_error"
