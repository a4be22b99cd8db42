"""Driving a live server with cases generated from its own OpenAPI document (schemathesis + hypothesis).

Each operation of ``app.openapi()`` is fuzzed in two modes: *positive* (bodies that match the
schema: every field, type and nesting the document describes) and *negative* (bodies that break
it: wrong types, missing fields, junk). Every case is sent over HTTP to a real server on loopback.
What must hold for every answer:

- no 5xx at all, except that ``/api/pull`` and ``/api/push`` may report an unreachable registry
  with 500 and ``{"error": ...}`` as Ollama does -- never an unexpected exception
  (``internal error: ...``);
- an error answer is JSON in its API family's shape (``{"error": "..."}``; ``/v1``: OpenAI's);
- every answer comes within the timeout (no hang), and the server still answers afterwards.

Names sent to pull and push are pointed at a closed loopback port, so no case leaves the machine.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from nbllm.errors import InvalidModelName
from nbllm.store import ModelName

__all__ = ["FuzzRun", "fuzz_operations", "load_schema"]

CLOSED = "127.0.0.1:9"
"""A loopback port nothing listens on: a registry that refuses at once."""
_UPSTREAM = ("/api/pull", "/api/push")


def load_schema(doc: dict[str, Any]) -> Any:
    """A schemathesis schema of an OpenAPI document."""
    return schemathesis.openapi.from_dict(doc)


@dataclass
class FuzzRun:
    """Cases tried, by operation and by answer status."""

    by_operation: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    errors: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    @property
    def total(self) -> int:
        """Cases sent."""
        return sum(self.by_operation.values())

    def summary(self) -> str:
        """One line for the test log."""
        statuses = " ".join(f"{code}:{n}" for code, n in sorted(self.by_status.items()))
        return f"{self.total} cases over {len(self.by_operation)} operations; statuses {statuses}"


def _offline(value: Any) -> Any:
    """A model name pointed at the closed port (other values unchanged)."""
    if not isinstance(value, str):
        return value
    try:
        name = ModelName.parse(value)
    except InvalidModelName:
        return value
    return f"{CLOSED}/{name.namespace}/{name.model}:{name.tag}"


def _keep_offline(path: str, body: Any) -> Any:
    if path in _UPSTREAM and isinstance(body, dict):
        return {k: _offline(v) if k in ("model", "name") else v for k, v in body.items()}
    return body


def check_answer(path: str, resp: requests.Response) -> None:
    """The rules in the module docstring, for one answer."""
    status = resp.status_code
    text = resp.text
    if status >= 500:
        assert path in _UPSTREAM and status == 500, (status, text[:500])
        assert "internal error" not in text, text[:500]
    if status >= 400 and resp.request.method != "HEAD":
        error = json.loads(text)["error"]
        if path.startswith("/v1/"):
            assert isinstance(error, dict) and error["message"] and error["type"], text[:500]
        else:
            assert isinstance(error, str) and error, text[:500]


@dataclass(frozen=True)
class Steering:
    """Known-good values mixed into positive cases, so that they get past name lookup to the real work.

    Random strings are almost never the name of a stored model; with this, about half of the
    positive cases name one (``models``) or an existing blob (``digests``). ``ensure()`` runs
    before each case (say, to put back a model a fuzzed delete removed).
    """

    models: tuple[str, ...] = ()
    digests: tuple[str, ...] = ()
    ensure: Callable[[], None] | None = None


_NAME_FIELDS = ("model", "name", "source", "from")
_NEEDS = {  # fields an operation needs to get past its first check, and a value that passes it
    "/api/copy": {"source": None},
    "/api/chat": {"model": None, "messages": [{"role": "user", "content": "Hi"}]},
    "/v1/chat/completions": {"model": None, "messages": [{"role": "user", "content": "Hi"}]},
    "/api/embed": {"model": None, "input": "Hi"},
    "/api/embeddings": {"model": None, "prompt": "Hi"},
    "/v1/embeddings": {"model": None, "input": "Hi"},
    "/api/create": {"model": None, "from": None},
    **{p: {"model": None} for p in ("/api/show", "/api/delete", "/api/generate", "/v1/completions", *_UPSTREAM)},
}


def _often(data: st.DataObject, label: str) -> bool:
    """True about three times in four (hypothesis favours small values: 0 is "steer")."""
    return data.draw(st.integers(0, 3), label=label) < 3


def _steer(path: str, case: Any, steering: Steering, data: st.DataObject) -> None:
    """Mix known-good values into a positive case (see Steering)."""
    body = case.body
    if steering.models and isinstance(body, dict):
        for key, good in _NEEDS.get(path, {}).items():
            if not body.get(key) and _often(data, f"fill {key}"):
                body[key] = good if good is not None else data.draw(st.sampled_from(steering.models))
        for key in _NAME_FIELDS:
            if body.get(key) and _often(data, f"steer {key}"):
                body[key] = data.draw(st.sampled_from(steering.models))
    params = case.path_parameters or {}
    if "name" in params and steering.models and _often(data, "steer path name"):
        params["name"] = data.draw(st.sampled_from(steering.models))
    if "digest" in params and steering.digests and _often(data, "steer digest"):
        params["digest"] = data.draw(st.sampled_from(steering.digests))


def fuzz_operations(
    schema: Any,
    base_url: str,
    run: FuzzRun,
    *,
    max_examples: int,
    modes: tuple[GenerationMode, ...] = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE),
    timeout: float = 30.0,
    steering: Steering | None = None,
    prepare: Callable[[str, Any], Any] | None = None,
    only: Callable[[str], bool] | None = None,
) -> None:
    """Send ``max_examples`` cases per operation and mode to ``base_url``; assert every answer.

    ``prepare(path, body)`` may bound a body (say, the tokens a real model generates).
    """
    session = requests.Session()
    target = _Target(base_url, session, timeout, steering or Steering(), prepare)
    for result in schema.get_all_operations():
        operation = result.ok()
        if only is not None and not only(operation.path):
            continue
        for mode in modes:
            _fuzz_one(operation, mode, target, run, max_examples)
    session.close()


@dataclass(frozen=True)
class _Target:
    base_url: str
    session: requests.Session
    timeout: float
    steering: Steering
    prepare: Callable[[str, Any], Any] | None


def _fuzz_one(operation: Any, mode: GenerationMode, target: _Target, run: FuzzRun, max_examples: int) -> None:
    path = operation.path
    label = f"{operation.label} {mode.value}"

    @settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,  # the same cases on every run: CI failures reproduce
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def one(data: st.DataObject) -> None:
        case = data.draw(operation.as_strategy(generation_mode=mode))
        if mode is GenerationMode.POSITIVE:
            _steer(path, case, target.steering, data)
        if isinstance(case.body, (dict, list)) or case.body is None:
            body = _keep_offline(path, case.body)
            case.body = target.prepare(path, body) if target.prepare is not None else body
        if target.steering.ensure is not None:
            target.steering.ensure()
        resp = case.call(base_url=target.base_url, session=target.session, timeout=target.timeout)
        run.by_operation[label] += 1
        run.by_status[resp.status_code] += 1
        if resp.status_code == 400:
            run.errors[label][resp.text[:80]] += 1
        try:
            check_answer(path, resp)
        except (AssertionError, ValueError, KeyError) as exc:
            raise AssertionError(f"{label}: {case.path_parameters} {case.body!r:.1000}") from exc

    try:
        one()
    except Unsatisfiable:  # negative mode, nothing to break: no body, no parameters
        assert mode is GenerationMode.NEGATIVE and not run.by_operation[label], path
