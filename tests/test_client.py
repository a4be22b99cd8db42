"""nbllm.client maps every HTTP status back onto nbllm's errors and keeps the status on the exception."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from nbllm.client import Client, error_for_status, stream_error
from nbllm.engine.fake import FakeEngine
from nbllm.errors import (
    Cancelled,
    ContextLengthExceeded,
    EngineError,
    InvalidRequest,
    NbllmError,
    NotFound,
    ServerBusy,
    ServerUnreachable,
)
from nbllm.schema import GenerateRequest
from nbllm.server.errors import STATUS, status_for


def test_every_status_of_the_servers_table_maps_back_and_is_kept() -> None:
    for status in set(STATUS.values()):
        exc = error_for_status(status, "m")
        assert exc.status_code == status and status_for(exc) == status and exc.message == "m"


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, InvalidRequest),
        (401, InvalidRequest),
        (404, NotFound),
        (405, InvalidRequest),
        (413, InvalidRequest),
        (429, ServerBusy),
        (499, Cancelled),
        (500, NbllmError),
        (502, ServerUnreachable),
        (503, ServerBusy),
        (504, NbllmError),
    ],
)
def test_any_status_maps_to_a_class_and_is_kept(status: int, cls: type[NbllmError]) -> None:
    exc = error_for_status(status, "m")
    assert type(exc) is cls and exc.status_code == status


def test_a_stream_error_line_keeps_its_status_and_defaults_to_500() -> None:
    assert isinstance(stream_error({"error": "busy", "status": 503}), ServerBusy)
    assert stream_error({"error": "busy", "status": 503}).status_code == 503
    plain = stream_error({"error": "pull model manifest: file does not exist"})  # Ollama's pull errors carry none
    assert type(plain) is NbllmError and plain.status_code == 500
    assert stream_error({"error": "x", "status": "success"}).status_code == 500  # not a status: ignored


@pytest.fixture
def client(app_client: TestClient) -> Iterator[Client]:
    """nbllm's HTTP client over the ASGI app (TestClient is an httpx.Client)."""
    client = Client("http://testserver")
    client._http.close()
    client._http = app_client
    yield client


def test_error_answers_keep_their_status(client: Client) -> None:
    with pytest.raises(NotFound) as missing:
        client.show("nothing")
    assert missing.value.status_code == 404 and missing.value.message == "model 'nothing' not found"
    with pytest.raises(InvalidRequest) as bad:
        client.show("../etc/passwd")
    assert bad.value.status_code == 400 and "invalid model name" in bad.value.message
    with pytest.raises(NotFound) as streamed:  # refused before the first byte of a stream
        list(client.generate(GenerateRequest(model="nothing", prompt="hi")))
    assert streamed.value.status_code == 404


@pytest.mark.parametrize(
    ("raised", "cls", "status"),
    [(EngineError("the decoder fell over"), NbllmError, 500), (ContextLengthExceeded(9, 4), InvalidRequest, 400)],
)
def test_a_failure_mid_stream_keeps_its_status(
    client: Client, monkeypatch: pytest.MonkeyPatch, raised: NbllmError, cls: type[NbllmError], status: int
) -> None:
    original = FakeEngine._emit

    def broken(self, *args, **kwargs) -> Iterator:  # type: ignore[no-untyped-def]
        for i, event in enumerate(original(self, *args, **kwargs)):
            if i == 1:
                raise raised
            yield event

    monkeypatch.setattr(FakeEngine, "_emit", broken)
    chunks = 0
    with pytest.raises(NbllmError) as failed:
        for _ in client.generate(GenerateRequest(model="tiny", prompt="a longer prompt")):
            chunks += 1
    assert chunks >= 1  # the answer had started: the status came on the error line, not the response
    assert type(failed.value) is cls and failed.value.status_code == status and failed.value.message == raised.message
