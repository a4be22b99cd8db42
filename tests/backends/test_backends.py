"""Both backends against a loopback server streaming on a fixed schedule: arrival stamps, counts, timings, keys."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from nbllm.backends import BackendError, GenRequest, StreamEnd, Token, open_backend, parse_backend_url
from nbllm.config import Settings
from tests.support.schedule_server import (
    SERVER_EVAL_NS,
    SERVER_PROMPT_NS,
    SERVER_TOTAL_NS,
    ScheduleServer,
    prompt_tokens,
)

TOLERANCE = 0.04  # seconds: loopback plus a busy 2-core machine's scheduling
STALL = 0.12  # seconds: at most one token this late (a systematic error, e.g. a gap off by one, moves them all)


@pytest.fixture(scope="module")
def sched() -> Iterator[ScheduleServer]:
    server = ScheduleServer().start()
    yield server
    server.stop()


def _collect(url: str, req: GenRequest, **kwargs: object) -> tuple[float, list[Token], StreamEnd]:
    async def go() -> tuple[float, list[Token], StreamEnd]:
        backend = open_backend(url, **kwargs)  # type: ignore[arg-type]
        try:
            import time

            sent = time.perf_counter()
            events = [e async for e in backend.stream(req)]
        finally:
            await backend.aclose()
        tokens = [e for e in events if isinstance(e, Token)]
        ends = [e for e in events if isinstance(e, StreamEnd)]
        assert len(ends) == 1 and events[-1] is ends[0]
        return sent, tokens, ends[0]

    return asyncio.run(go())


@pytest.mark.parametrize("kind", ["ollama", "openai"])
@pytest.mark.parametrize("endpoint", ["generate", "chat"])
def test_tokens_arrive_on_schedule(sched: ScheduleServer, kind: str, endpoint: str) -> None:
    chat = endpoint == "chat"
    url = sched.url if kind == "ollama" else f"openai+{sched.url}/v1"
    req = GenRequest(model="t200-g50-n5", prompt="one two three", system="be brief", chat=chat, max_tokens=5)
    sent, tokens, end = _collect(url, req)
    assert [t.text for t in tokens] == [f"tok{k} " for k in range(5)]  # the role-only chunk is no token
    errors = sorted(abs(t.arrival - sent - (0.2 + 0.05 * k)) for k, t in enumerate(tokens))
    # every token on its deadline; one scheduling stall of the busy machine is allowed (a CI run saw 41 ms)
    assert errors[-2] <= TOLERANCE and errors[-1] <= STALL, errors
    assert end.output_tokens == 5
    seen = sched.requests[-1]["body"]
    text = "be brief one two three" if chat else ("one two three" if kind == "ollama" else "be brief\n\none two three")
    assert end.input_tokens == prompt_tokens(text)
    if kind == "ollama":
        assert seen["options"]["num_predict"] == 5 and seen["stream"] is True
        assert end.server is not None and end.server.source == "ollama final chunk"
        assert end.server.ttft_s == pytest.approx((SERVER_TOTAL_NS - SERVER_EVAL_NS) / 1e9)
        assert end.server.prompt_eval_s == pytest.approx(SERVER_PROMPT_NS / 1e9)
        assert end.server.tpot_s == pytest.approx(SERVER_EVAL_NS / 1e9 / 4)
    else:
        assert seen["max_tokens"] == 5 and seen["stream_options"] == {"include_usage": True}
        assert end.server is None  # an OpenAI-compatible server reports no timings


def test_llama_server_timings_are_read(sched: ScheduleServer) -> None:
    _, _, end = _collect(f"openai+{sched.url}/v1", GenRequest(model="timed-t10-g10-n4", prompt="a"))
    assert end.server is not None and end.server.source == "llama-server timings"
    assert end.server.prompt_eval_s == pytest.approx(0.25) and end.server.decode_s == pytest.approx(0.6)
    assert end.server.tpot_s == pytest.approx(0.2)


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_errors_raise_backend_errors(sched: ScheduleServer, kind: str) -> None:
    url = sched.url if kind == "ollama" else f"openai+{sched.url}/v1"
    with pytest.raises(BackendError, match=r'HTTP 404: model "missing" not found'):
        _collect(url, GenRequest(model="missing", prompt="a"))
    with pytest.raises(BackendError, match="error in stream: stream broke"):
        _collect(url, GenRequest(model="cut-t10-g10-n5", prompt="a"))


def test_api_key_comes_from_the_named_variable_and_is_never_shown(
    sched: ScheduleServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-test-0123456789abcdef"
    monkeypatch.setenv("MY_BENCH_KEY", secret)
    backend = open_backend(f"openai+{sched.url}/v1", api_key_env="MY_BENCH_KEY")
    assert secret not in repr(backend) and secret not in str(vars(backend).get("url"))
    _collect(f"openai+{sched.url}/v1", GenRequest(model="t1-g1-n2", prompt="a"), api_key_env="MY_BENCH_KEY")
    assert sched.requests[-1]["headers"]["authorization"] == f"Bearer {secret}"
    with pytest.raises(BackendError) as info:
        _collect(f"openai+{sched.url}/v1", GenRequest(model="missing", prompt="a"), api_key_env="MY_BENCH_KEY")
    assert secret not in str(info.value)
    # unset: no header; an Ollama host gets nbllm's own key (NBLLM_API_KEY), as nbllm's client sends it
    _collect(f"openai+{sched.url}/v1", GenRequest(model="t1-g1-n2", prompt="a"), api_key_env="UNSET_VARIABLE_X")
    assert "authorization" not in sched.requests[-1]["headers"]
    settings = Settings(api_key="own-key")
    _collect(sched.url, GenRequest(model="t1-g1-n2", prompt="a"), settings=settings)
    assert sched.requests[-1]["headers"]["authorization"] == "Bearer own-key"


def test_count_tokens_uses_the_server(sched: ScheduleServer) -> None:
    async def go(url: str) -> int | None:
        backend = open_backend(url)
        try:
            return await backend.count_tokens("m", "three little words")
        finally:
            await backend.aclose()

    assert asyncio.run(go(sched.url)) == 7
    assert asyncio.run(go(f"openai+{sched.url}/v1")) == 7
    assert sched.requests[-2]["body"]["raw"] is True


def test_bad_url_is_a_clear_error() -> None:
    with pytest.raises(BackendError, match="invalid backend URL 'ftp://x'"):
        parse_backend_url("ftp://x")
