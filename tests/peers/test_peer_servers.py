"""Each peer's OpenAI-compatible API answers a streamed chat from SmolLM2's GGUF, asked with the ``openai`` client.

Kept out of the default run (``NBLLM_PEERS=1`` runs them): llama-server is built from source on first use
(about 11 minutes of both cores; ``bench/.peers`` keeps it), and llama-cpp-python's server installs its
own environment. The LiteLLM proxy here fronts both of them under one model name: a mixed fleet.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from bench.servers import Server
from tests.support.peers import (
    LiteLLMProxy,
    llama_cpp_python_server,
    llama_server,
    require_enabled,
    router_config,
    start_litellm,
)

pytestmark = [pytest.mark.model, pytest.mark.slow, pytest.mark.peers]


@pytest.fixture(scope="module")
def llama_server_peer(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """llama.cpp's llama-server on SmolLM2, two slots."""
    require_enabled("llama-server is built from source on first use (~11 min)")
    server = llama_server(smollm2_gguf, tmp_path_factory.mktemp("llama-server"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def llama_cpp_python_peer(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """llama-cpp-python's server on SmolLM2 (model alias ``m``)."""
    require_enabled("llama-cpp-python's server installs its own environment")
    server = llama_cpp_python_server(smollm2_gguf, tmp_path_factory.mktemp("llama-cpp-python"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mixed_fleet(
    llama_server_peer: Server, llama_cpp_python_peer: Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiteLLMProxy]:
    """LiteLLM's proxy routing ``smollm2`` over llama-server and llama-cpp-python's server."""
    # llama-cpp-python's server knows its model by the alias it was started with (``m``)
    bases = [llama_server_peer.url + "/v1", llama_cpp_python_peer.url + "/v1"]
    config = router_config("smollm2", bases, backend_models=["smollm2", "m"])
    proxy = start_litellm(config, tmp_path_factory.mktemp("litellm-mixed"))
    yield proxy
    proxy.stop()


def streamed_chat(base_url: str, model: str, *, api_key: str = "unused") -> tuple[str, str | None, set[str | None]]:
    """Stream one chat: the text, the finish reason, and the backends the proxy header named (if any)."""
    text, finish, backends = "", None, set()
    with (
        openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120) as client,
        client.chat.completions.with_streaming_response.create(
            model=model,
            messages=[{"role": "user", "content": "Say hello in five words."}],
            max_tokens=16,
            temperature=0,
            stream=True,
        ) as response,
    ):
        backends.add(response.headers.get("x-litellm-model-api-base"))
        for chunk in response.parse():
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
    return text, finish, backends


def test_llama_server_streams_a_chat(llama_server_peer: Server) -> None:
    """llama.cpp's own server, through its /v1/chat/completions."""
    text, finish, _ = streamed_chat(llama_server_peer.url + "/v1", "smollm2")
    assert text.strip() and finish in ("stop", "length"), (text, finish)


def test_llama_cpp_python_server_streams_a_chat(llama_cpp_python_peer: Server) -> None:
    """llama-cpp-python's server, through its /v1/chat/completions."""
    text, finish, _ = streamed_chat(llama_cpp_python_peer.url + "/v1", "m")
    assert text.strip() and finish in ("stop", "length"), (text, finish)


def test_litellm_proxy_streams_chats_from_a_mixed_fleet(
    mixed_fleet: LiteLLMProxy, llama_server_peer: Server, llama_cpp_python_peer: Server
) -> None:
    """Through the proxy, answers come back from both peers (random choice: 12 requests, all on one: p = 2**-11)."""
    seen: set[str | None] = set()
    for _ in range(12):
        text, finish, backends = streamed_chat(mixed_fleet.url + "/v1", "smollm2", api_key=mixed_fleet.key)
        assert text.strip() and finish in ("stop", "length"), (text, finish)
        seen |= backends
    assert seen == {llama_server_peer.url + "/v1", llama_cpp_python_peer.url + "/v1"}
