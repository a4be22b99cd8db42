"""JSON schemas that ask too much, match nothing, or would let invalid JSON through (issue #18).

The conversion's cost is bounded (property tests over generated bounds and nestings), the grammars
mean what the schema says (checked token by token with llama.cpp's own grammar engine on SmolLM2's
vocabulary), strings can never hold raw control characters, and over HTTP a hostile schema is a 400
while the server's memory stays put and it goes on serving.
"""

from __future__ import annotations

import ctypes
import json
import math
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import llama_cpp as L
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbllm.engine.grammar import MAX_GRAMMAR_BYTES, format_grammar, tool_call_grammar
from nbllm.errors import InvalidRequest
from nbllm.prompt.tools import ToolCallParser, ToolCallSyntax
from nbllm.server import BackgroundServer

HUGE = 1_000_000_000
MODEL = "smollm2:135m"


def tool(parameters: dict[str, Any], name: str = "f") -> dict[str, Any]:
    """A tool whose arguments follow ``parameters``."""
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


def tools_grammar(parameters: dict[str, Any]) -> str:
    """The forced tool-call grammar (SmolLM2's framing) for one tool."""
    return tool_call_grammar([tool(parameters)], prefix="<tool_call>", suffix="</tool_call>", lazy=False).grammar


# --- cost: whatever the bounds, conversion is small and quick, or a 400 -------------------------

bounds = st.one_of(st.integers(0, 3000), st.integers(0, 10**7), st.sampled_from([HUGE, 10**18, 2**63]))


@st.composite
def schemas(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    """Strings with length bounds, arrays with item bounds, patterns with counts, nested."""
    kind = draw(st.sampled_from(["string", "array", "object", "pattern"] if depth < 4 else ["string", "pattern"]))
    if kind == "string":
        keys = draw(st.sets(st.sampled_from(["minLength", "maxLength"])))
        return {"type": "string", **{k: draw(bounds) for k in keys}}
    if kind == "pattern":
        low, high = draw(bounds), draw(st.one_of(st.none(), bounds))
        return {"type": "string", "pattern": f"^a[0-9]{{{low},{'' if high is None else high}}}(b.){{{low}}}$"}
    if kind == "array":
        keys = draw(st.sets(st.sampled_from(["minItems", "maxItems"])))
        return {"type": "array", "items": draw(schemas(depth + 1)), **{k: draw(bounds) for k in keys}}
    props = draw(st.lists(schemas(depth + 1), min_size=1, max_size=4))
    return {"type": "object", "properties": {f"p{i}": p for i, p in enumerate(props)}}


def converted_within_limits(build: Any) -> None:
    """``build()`` makes a grammar under the size cap in bounded memory, or refuses with InvalidRequest."""
    tracemalloc.start()
    try:
        grammar = build()
    except InvalidRequest as exc:
        assert str(exc)
    else:
        assert isinstance(grammar, str) and len(grammar) <= MAX_GRAMMAR_BYTES
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"converting took {peak / 2**20:.1f} MiB"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schemas())
def test_any_bounds_convert_small_or_are_refused(schema: dict[str, Any]) -> None:
    converted_within_limits(lambda: format_grammar(schema))
    converted_within_limits(lambda: tools_grammar({"type": "object", "properties": {"x": schema}}))


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "minLength": HUGE},
        {"type": "string", "maxLength": HUGE},
        {"type": "array", "items": {"type": "string"}, "minItems": HUGE},
        {"type": "array", "items": {"type": "string"}, "maxItems": HUGE},
        {"type": "string", "pattern": "^a{1000000000}$"},
        {"type": "string", "pattern": "^a{0," + "9" * 5000 + "}$"},
        {"type": "string", "maxLength": 1e300},
    ],
    ids=lambda s: json.dumps(s)[:50],
)
def test_huge_bounds_are_refused_naming_the_field_and_limit(schema: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest, match=r"too large: format\.\w+"):
        format_grammar(schema)
    with pytest.raises(InvalidRequest, match=r"too large: tools\.f\.parameters\.properties\.x\.\w+"):
        tools_grammar({"type": "object", "properties": {"x": schema}})


def test_many_fields_share_one_budget() -> None:
    one = {"type": "string", "maxLength": 2000}
    format_grammar({"type": "object", "properties": {f"p{i}": one for i in range(10)}})
    with pytest.raises(InvalidRequest, match="would exceed"):
        format_grammar({"type": "object", "properties": {f"p{i}": one for i in range(500)}})


@pytest.mark.parametrize(
    "schema",
    [
        {"enum": []},
        {"anyOf": []},
        {"oneOf": []},
        {"allOf": []},
        {"type": []},
        {"const": math.nan},
        {"enum": [1, math.inf]},
        {"type": "string", "minLength": 3, "maxLength": 2},
        {"type": "array", "minItems": 2, "maxItems": 1},
    ],
    ids=lambda s: json.dumps(s),
)
def test_schemas_that_match_nothing_are_refused(schema: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest, match=r"invalid JSON schema in format"):
        format_grammar(schema)
    with pytest.raises(InvalidRequest, match=r"invalid JSON schema in tools\.f\.parameters\.properties\.x"):
        tools_grammar({"type": "object", "properties": {"x": schema}})


def test_model_made_nan_is_never_a_tool_call() -> None:
    parser = ToolCallParser(ToolCallSyntax(prefix="<tool_call>", suffix="</tool_call>"), ["f"])
    content, calls = parser.feed('<tool_call>{"name": "f", "arguments": {"x": NaN}}</tool_call>')
    assert calls == [] and content == ""
    assert "NaN" in parser.finish()  # what never became a call is content, a plain string
    parser = ToolCallParser(ToolCallSyntax(prefix="<tool_call>", suffix="</tool_call>"), ["f"])
    _, calls = parser.feed('<tool_call>{"name": "f", "arguments": "{\\"x\\": Infinity}"}</tool_call>')
    assert [c.arguments for c in calls] == [{"value": '{"x": Infinity}'}]
    json.dumps(calls[0].arguments, allow_nan=False)


def _no_constant(name: str) -> None:
    raise AssertionError(f"{name} in a response")


def test_nan_in_a_requests_tool_call_arguments_is_never_a_5xx(app_client: Any) -> None:
    # Python's JSON parser takes NaN; the arguments only reach the prompt, and nothing echoes them back
    call = {"function": {"name": "f", "arguments": {"x": math.nan}}}
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "", "tool_calls": [call]}]
    body = {"model": "tiny", "stream": False, "messages": [*messages, {"role": "user", "content": "go"}]}
    resp = app_client.post("/api/chat", content=json.dumps({**body, "options": {"num_predict": 3}}))
    assert resp.status_code < 500, resp.text
    json.loads(resp.text, parse_constant=_no_constant)


# --- meaning: llama.cpp's grammar engine, token by token, on SmolLM2's vocabulary ---------------


@pytest.fixture(scope="module")
def vocab(smollm2_gguf: Path) -> Iterator[Any]:
    """SmolLM2's vocabulary (the model loaded without its weights)."""
    params = L.llama_model_default_params()
    params.vocab_only = True
    model = L.llama_model_load_from_file(str(smollm2_gguf).encode(), params)
    assert model
    yield L.llama_model_get_vocab(model)
    L.llama_model_free(model)


def _tokens(vocab: Any, text: str) -> list[int]:
    raw = text.encode()
    out = (L.llama_token * (len(raw) + 8))()
    n = L.llama_tokenize(vocab, raw, len(raw), out, len(out), False, False)  # noqa: FBT003  # positional-only
    assert n >= 0
    return list(out[:n])


def accepts(vocab: Any, grammar: str, text: str) -> bool:
    """Whether llama.cpp's grammar sampler lets a model write exactly ``text`` and then stop."""
    sampler = L.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    assert sampler, "llama.cpp refused the grammar"
    try:
        for token in [*_tokens(vocab, text), L.llama_vocab_eos(vocab)]:
            data = (L.llama_token_data * 1)(L.llama_token_data(token, 0.0, 0.0))
            L.llama_sampler_apply(
                sampler, ctypes.byref(L.llama_token_data_array(data=data, size=1, selected=-1, sorted=False))
            )
            if data[0].logit == -math.inf:
                return False
            L.llama_sampler_accept(sampler, token)
        return True
    finally:
        L.llama_sampler_free(sampler)


STRING_OBJECT = {"type": "object", "properties": {"s": {"type": "string"}}, "required": ["s"]}
BOUNDED_OBJECT = {"type": "object", "properties": {"s": {"type": "string", "maxLength": 40}}, "required": ["s"]}


@pytest.mark.parametrize(
    "grammar",
    [format_grammar("json"), format_grammar(STRING_OBJECT), format_grammar(BOUNDED_OBJECT)],
    ids=["json", "schema", "maxLength"],
)
@pytest.mark.parametrize("raw", ["\x01", "\n", "\t", "\x1f", "\x7f"], ids=repr)
def test_strings_hold_no_raw_control_characters(vocab: Any, grammar: str, raw: str) -> None:
    escaped = json.dumps(raw)[1:-1]  # \u0001, \n, ...
    assert accepts(vocab, grammar, f'{{"s": "a{escaped}b"}}')
    assert not accepts(vocab, grammar, f'{{"s": "a{raw}b"}}')


def test_tool_call_arguments_hold_no_raw_control_characters(vocab: Any) -> None:
    grammar = tools_grammar(STRING_OBJECT)
    call = '<tool_call>\n{{"name": "f", "arguments": {{"s": "a{}b"}}}}\n</tool_call>'
    assert accepts(vocab, grammar, call.format("\\n"))
    assert not accepts(vocab, grammar, call.format("\n"))


@pytest.mark.parametrize(
    "pattern,value",
    [
        ("^a.c$", "a\x01c"),
        ("^a.c$", 'a"c'),
        ("^a.c$", "a\\c"),
        ("^[ -~]{1,5}$", 'a"b'),
        ("^[^,]+$", "x\ny"),
        ('^a"b\\nc$', 'a"b\nc'),
        ("^[\\x00-\\x1f]$", "\x02"),
    ],
)
def test_patterns_match_the_json_text_of_their_values(vocab: Any, pattern: str, value: str) -> None:
    grammar = format_grammar({"type": "string", "pattern": pattern})
    assert accepts(vocab, grammar, json.dumps(value))  # the escaped form
    assert not accepts(vocab, grammar, f'"{value}"')  # raw: not JSON


@pytest.mark.parametrize("low,high", [(0, 5), (3, None), (1999, 2001), (2001, 2001), (0, 4500), (2500, 5600)])
def test_length_bounds_are_exact(vocab: Any, low: int, high: int | None) -> None:
    schema: dict[str, Any] = {"type": "string", "minLength": low}
    if high is not None:
        schema["maxLength"] = high
    grammar = format_grammar(schema)
    top = low + 9000 if high is None else high
    for n in {low - 1, low, low + 1, top - 1000, top - 1, top, top + 1}:
        if n >= 0:
            assert accepts(vocab, grammar, '"' + "x" * n + '"') == (low <= n and (high is None or n <= high)), n


@pytest.mark.parametrize("low,high", [(0, 0), (0, 3), (2, 2), (0, 2500), (2100, 4100)])
def test_item_bounds_are_exact(vocab: Any, low: int, high: int) -> None:
    grammar = format_grammar({"type": "array", "items": {"const": 1}, "minItems": low, "maxItems": high})
    for n in {0, 1, low - 1, low, high, high + 1, (low + high) // 2}:
        if n >= 0:
            assert accepts(vocab, grammar, "[" + ",".join(["1"] * n) + "]") == (low <= n <= high), n


# --- over HTTP, the real engine ---------------------------------------------------------------


@pytest.fixture
def http(live_server: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=120) as client:
        yield client


def _hostile(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    user = [{"role": "user", "content": "Hi"}]
    return [
        (
            "/api/chat",
            {"model": MODEL, "messages": user, "tools": [tool({"type": "object", "properties": {"x": schema}})]},
        ),
        ("/api/generate", {"model": MODEL, "prompt": "Hi", "format": schema}),
        (
            "/v1/chat/completions",
            {
                "model": MODEL,
                "messages": user,
                "response_format": {"type": "json_schema", "json_schema": {"schema": schema}},
            },
        ),
    ]


@pytest.mark.parametrize(
    "schema", [{"type": "string", "minLength": HUGE}, {"enum": []}, {"anyOf": []}], ids=lambda s: json.dumps(s)
)
def test_hostile_schemas_are_400_and_the_server_carries_on(http: httpx.Client, schema: dict[str, Any]) -> None:
    ok = {"model": MODEL, "prompt": "Hi", "stream": False, "options": {"num_predict": 2}}
    assert http.post("/api/generate", json=ok).status_code == 200  # the model loaded before measuring
    rss = psutil.Process().memory_info().rss  # the server runs in this process
    for path, body in _hostile(schema):
        resp = http.post(path, json={**body, "stream": False, "options": {"num_predict": 4}})
        assert resp.status_code == 400, resp.text
        error = resp.json()["error"]
        message = error["message"] if path.startswith("/v1") else error
        assert "JSON schema" in message, message
        if path.startswith("/v1"):
            assert error["type"] == "invalid_request_error"
    grown = psutil.Process().memory_info().rss - rss
    assert grown < 64 * 2**20, f"the server grew {grown / 2**20:.0f} MiB"
    after = http.post("/api/generate", json=ok)
    assert after.status_code == 200 and after.json()["done"]


def test_large_legitimate_bounds_work(http: httpx.Client) -> None:
    # maxLength 20000 used to be 20000 nested groups: llama.cpp's parser overflowed the stack (SIGSEGV)
    schema = {"type": "object", "properties": {"a": {"type": "string", "maxLength": 20000}}, "required": ["a"]}
    resp = http.post(
        "/api/generate",
        json={"model": MODEL, "prompt": "Say hi.", "format": schema, "stream": False, "options": {"num_predict": 3}},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["response"].replace(" ", "").startswith('{"a')


def test_constrained_strings_are_strict_json(http: httpx.Client) -> None:
    # a text to copy with raw line breaks and tabs inside its strings: what a model copies if it may
    poem = {"type": "string", "minLength": 30, "maxLength": 60}  # too short to end where the line does
    schema = {
        "type": "object",
        "properties": {"title": {"type": "string"}, "poem": poem},
        "required": ["title", "poem"],
    }
    text = '{"title": "The\tsea", "poem": "Waves roll in\nwaves roll out\nthe tide turns"}'
    prompt = f"Repeat this JSON exactly, character for character:\n{text}"
    for seed in (1, 2, 3):
        options = {"temperature": 0.7, "seed": seed, "num_predict": 160}
        body = {"model": MODEL, "prompt": prompt, "format": schema, "stream": False, "options": options}
        data = http.post("/api/generate", json=body).json()
        assert data["done_reason"] == "stop", data  # the bounds let the object close within num_predict
        assert set(json.loads(data["response"], strict=True)) == {"title", "poem"}
        chat = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "stream": False, "options": options}
        call = http.post("/api/chat", json={**chat, "tools": [tool(schema, "write")], "tool_choice": "required"})
        assert call.status_code == 200, call.text
        (made,) = call.json()["message"]["tool_calls"]  # the call parsed (strictly) out of the output
        assert set(made["function"]["arguments"]) == {"title", "poem"}
