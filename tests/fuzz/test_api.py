"""Property-based fuzzing of the whole API from its OpenAPI document, against real servers on loopback.

A fixed budget (``NBLLM_FUZZ_EXAMPLES`` cases per operation and mode, 12 by default; derandomized,
so CI sees the same cases every run) keeps the run to about a minute here. See ``support.py`` for
what is generated and what every answer must satisfy. The number of cases tried is printed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from schemathesis import GenerationMode

from nbllm.config import Settings
from nbllm.engine.fake import FakeEngineFactory
from nbllm.options import LOAD_TIME_OPTIONS
from nbllm.runtime import Runtime
from nbllm.server import BackgroundServer, create_app
from tests.conftest import CHATML
from tests.fuzz.support import FuzzRun, Steering, fuzz_operations, load_schema
from tests.support.models import install_model
from tests.support.tiny_gguf import write_tiny_gguf

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("NBLLM_FUZZ_EXAMPLES", "12"))
SMOL = "smollm2:135m"


def _report(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str], what: str, run: FuzzRun) -> None:
    with capsys.disabled():  # shown on a passing run too
        print(f"\nfuzz ({what}): {run.summary()}")
    request.node.user_properties.append(("fuzz_cases", run.total))


def _still_serving(url: str, model: str) -> None:
    assert httpx.get(url + "/", timeout=10).text == "Ollama is running"
    body = {"model": model, "prompt": "Hi", "stream": False, "options": {"num_predict": 2}}
    resp = httpx.post(url + "/api/generate", json=body, timeout=60)
    assert resp.status_code == 200 and resp.json()["done"] is True, resp.text


@pytest.fixture
def fake_server(tmp_path: Path) -> Iterator[BackgroundServer]:
    """A server over FakeEngines with one model; registries and the package index point at a closed port."""
    settings = Settings(home=tmp_path / "home", models=tmp_path / "models", package_index=("http://127.0.0.1:9/",))
    runtime = Runtime.from_settings(settings, engine_factory=FakeEngineFactory())
    install_model(runtime.store, "tiny", write_tiny_gguf(tmp_path / "tiny.gguf"), template=CHATML)
    server = BackgroundServer(runtime).start()
    yield server
    server.stop()
    runtime.close()


def test_every_operation_over_the_fake_engine(
    fake_server: BackgroundServer, tmp_path: Path, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    runtime = fake_server.runtime

    def ensure_tiny() -> None:  # a fuzzed delete may have removed it
        if runtime.store.find("tiny") is None:
            install_model(runtime.store, "tiny", tmp_path / "tiny.gguf", template=CHATML)

    schema = load_schema(create_app(runtime).openapi())
    steering = Steering(models=("tiny",), digests=(runtime.store.get("tiny").model_digest or "",), ensure=ensure_tiny)
    run = FuzzRun()
    try:
        fuzz_operations(schema, fake_server.url, run, max_examples=EXAMPLES, steering=steering)
    finally:
        _report(request, capsys, "fake engine", run)
    operations = len(list(schema.get_all_operations()))
    assert operations >= 23 and len(run.by_operation) >= operations
    assert run.total >= operations * EXAMPLES  # every operation with a body or parameter ran both modes
    assert run.by_status[200] >= run.total // 10  # steered cases reached the use cases, not just validation
    ensure_tiny()
    _still_serving(fake_server.url, "tiny")


_INFERENCE = ("/api/generate", "/api/chat", "/api/embed", "/api/embeddings", "/api/show", "/v1/")


def _bounded(path: str, body: Any) -> Any:
    """A real model's case kept short: a few tokens, no reloads (load-time options, keep_alive dropped)."""
    if not isinstance(body, dict):
        return body
    body = {
        k: v
        for k, v in body.items()
        if k not in ("keep_alive", "max_tokens", "max_completion_tokens", "max_output_tokens")
    }
    options = body.get("options")
    if isinstance(options, dict):
        options = {k: v for k, v in options.items() if k not in LOAD_TIME_OPTIONS}
        options["num_predict"] = 4
        body["options"] = options
    elif path in ("/api/generate", "/api/chat"):
        body["options"] = {"num_predict": 4}
    if path.startswith("/v1/") and path != "/v1/embeddings":
        body["max_output_tokens" if path == "/v1/responses" else "max_tokens"] = 4
    return body


def test_inference_on_the_real_model(
    live_server: BackgroundServer, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    """The inference operations (read-only on the shared store) driven into llama.cpp: grammars from
    fuzzed formats and tool schemas, odd sampling values, odd messages."""
    schema = load_schema(create_app(live_server.runtime).openapi())
    run = FuzzRun()
    examples = max(3, EXAMPLES // 3)
    try:
        fuzz_operations(
            schema,
            live_server.url,
            run,
            max_examples=examples,
            modes=(GenerationMode.POSITIVE,),
            timeout=120,
            steering=Steering(models=(SMOL,)),
            prepare=_bounded,
            only=lambda path: path.startswith(_INFERENCE),
        )
    finally:
        _report(request, capsys, "real model", run)
    assert len(run.by_operation) == 11 and run.total >= 10 * examples
    assert run.by_status[200] >= run.total // 5
    _still_serving(live_server.url, SMOL)
