"""Fast unit tests of the notebook layer's pure parts: interpolation, arguments, tool schemas, streams."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Literal

import pytest
from pydantic import BaseModel

from nbllm.errors import ServerUnreachable
from nbllm.notebook.display import close_fences
from nbllm.notebook.interpolation import interpolate, strip_markers
from nbllm.notebook.magic_args import (
    ChatArgs,
    HelpRequested,
    MagicArgumentError,
    ServeArgs,
    ShowArgs,
    parse,
)
from nbllm.notebook.session import default_client
from nbllm.notebook.streaming import StreamPump
from nbllm.notebook.tools import ToolBox, function_to_tool, parse_docstring


def test_interpolation_replaces_known_names_and_leaves_code_alone() -> None:
    ns = {"lang": "Python", "n": 3, "In": ["", "x = {1: 2}"]}
    prompt = "In {lang}, why does `d = {k: v for k, v in x}` differ from {}? Also {undefined}, {n}, {In[1]}, {n:>4}"
    assert interpolate(prompt, ns) == (
        "In Python, why does `d = {k: v for k, v in x}` differ from {}? Also {undefined}, 3, x = {1: 2}, {n:>4}"
    )
    assert interpolate("{In[9]}", ns) == "{In[9]}"


def test_nbval_markers_are_stripped() -> None:
    assert strip_markers("# NBVAL_IGNORE_OUTPUT\nWhy?\n#NBVAL_SKIP\n") == "Why?\n"
    assert strip_markers("# a real comment\n") == "# a real comment\n"


def test_fences_close_only_when_open() -> None:
    assert close_fences("~~~~\ncode") == "~~~~\ncode\n~~~~"
    assert close_fences("````\n```\nstill code") == "````\n```\nstill code\n````"
    assert close_fences("plain") == "plain"


def test_chat_arguments_parse_into_typed_args() -> None:
    args = parse(
        "chat",
        "smollm2:135m -m gemma3:270m -s 'Be brief.' -o temperature=0 -o stop=END --format json "
        "--tools add,mul --thread t1 --new --think --no-stream --host local",
    )
    assert isinstance(args, ChatArgs)
    assert args.models == ("smollm2:135m", "gemma3:270m")
    assert args.system == "Be brief."
    assert args.options == {"temperature": 0.0, "stop": ("END",)}
    assert args.tools == ("add", "mul")
    assert (args.thread, args.new, args.think, args.stream, args.host) == ("t1", True, True, False, "local")
    assert parse("chat", "").models == ()


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(MagicArgumentError, match="unknown parameter 'bogus'"):
        parse("chat", "-o bogus=1")
    with pytest.raises(MagicArgumentError, match="not key=value"):
        parse("chat", "-o temperature")
    with pytest.raises(MagicArgumentError, match="invalid float32 value"):
        parse("generate", "-o temperature=hot")
    with pytest.raises(MagicArgumentError, match="unrecognized arguments: --tools"):
        parse("generate", "--tools f")
    with pytest.raises(MagicArgumentError, match="the following arguments are required: model"):
        parse("pull", "")
    with pytest.raises(MagicArgumentError, match="No closing quotation"):
        parse("chat", "-s 'unterminated")
    with pytest.raises(HelpRequested, match="usage: pull"):
        parse("pull", "-h")


def test_line_magic_arguments() -> None:
    assert parse("show", "m --template") == ShowArgs(model="m", field="template")
    assert parse("serve", "--port 0") == ServeArgs(port=0)
    assert parse("serve", "stop").action == "stop"
    assert parse("bench", "a b -n 2").options == {"num_predict": 128}
    assert parse("bench", "a -o num_predict=5").options == {"num_predict": 5}
    assert parse("ps", "--watch --interval 0.01").interval == 0.2


class Point(BaseModel):
    x: float
    y: float


def test_google_docstring_and_annotations_become_the_tool_schema() -> None:
    class Local:
        pass

    def locate(
        city: str,
        unit: Literal["c", "f"] = "c",
        tags: list[int] | None = None,
        at: Point | None = None,
        other: Local | None = None,
    ) -> str:
        """Find a city.

        Args:
            city (str): The city's name,
                in English.
            unit: Temperature unit.

        Returns:
            str: Where it is.
        """
        return city

    tool = function_to_tool(locate)
    assert tool.type == "function"
    assert tool.function.name == "locate"
    assert tool.function.description == "Find a city."
    params = tool.function.parameters
    assert params["type"] == "object"
    assert params["required"] == ["city"]
    props = params["properties"]
    assert props["city"] == {"type": "string", "description": "The city's name, in English."}
    assert props["unit"] == {"type": "string", "enum": ["c", "f"], "default": "c", "description": "Temperature unit."}
    assert props["tags"] == {"type": "array", "items": {"type": "integer"}, "default": None}
    assert props["at"]["$ref"] == "#/$defs/Point"
    assert params["$defs"]["Point"]["required"] == ["x", "y"]
    assert props["other"] == {"type": "string", "default": None}  # an unresolvable annotation: a string
    assert "title" not in str(params)


def test_docstring_without_args_section() -> None:
    assert parse_docstring("Just text.\n\nMore text.") == ("Just text.\n\nMore text.", {})
    assert parse_docstring(None) == ("", {})


def test_toolbox_validates_coerces_and_records_errors() -> None:
    def add(a: int, b: int = 1) -> int:
        """Add."""
        return a + b

    def boom() -> None:
        """Fail."""
        raise RuntimeError("no luck")

    box = ToolBox.of([add, boom])
    ok = box.call("add", {"a": "2", "b": 3})
    assert (ok.result, ok.error, ok.content) == (5, None, "5")
    assert ok.duration_s >= 0
    bad = box.call("add", {"a": "two"})
    assert bad.error is not None and bad.error.startswith("invalid arguments: a:")
    extra = box.call("add", {"a": 1, "c": 2})
    assert extra.error is not None and "c: Extra inputs are not permitted" in extra.error
    assert box.call("boom", {}).content == "error: RuntimeError: no luck"
    assert box.call("nope", {}).error == "LookupError: no tool named 'nope' (tools: add, boom)"
    ok.arguments = {"a": 10}
    assert box.run(ok).result == 11
    assert "add(a=10) → 11" in ok.summary()


def test_stream_pump_interleaves_sources_and_reports_errors() -> None:
    def slow(tag: str, n: int) -> Iterator[str]:
        for i in range(n):
            time.sleep(0.01)
            yield f"{tag}{i}"

    def failing() -> Iterator[str]:
        yield "x"
        raise ValueError("broken")

    pump: StreamPump[str] = StreamPump([lambda: slow("a", 3), lambda: slow("b", 3), failing]).start()
    items: dict[int, list[str]] = {0: [], 1: [], 2: []}
    errors, done = [], 0
    for event in pump.events(tick=0.01):
        if event is None:
            continue
        if event.item is not None:
            items[event.source].append(event.item)
        if event.error is not None:
            errors.append(event.error)
        done += event.done
    assert items == {0: ["a0", "a1", "a2"], 1: ["b0", "b1", "b2"], 2: ["x"]}
    assert done == 3
    assert [str(e) for e in errors] == ["broken"]


def test_stream_pump_stop_closes_the_stream_in_the_worker() -> None:
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            i = 0
            while True:
                time.sleep(0.01)
                i += 1
                yield i
        finally:
            closed.set()

    pump: StreamPump[int] = StreamPump([endless]).start()
    for event in pump.events(tick=0.01):
        if event is not None and event.item == 3:
            pump.stop()
    assert pump.stopped
    assert closed.wait(2)
    assert pump.join(2)


def test_default_client_falls_back_in_process_only_when_host_was_not_set() -> None:
    from nbllm.client import Client
    from nbllm.config import Settings, parse_host

    opened: list[Client] = []

    def http(url: str) -> Client:
        opened.append(Client(url))
        return opened[-1]

    dead = parse_host("127.0.0.1:9")  # discard port: nothing listens
    implicit = Settings.model_construct(_fields_set=set(), host=dead)
    assert default_client(implicit, http, lambda: "local") == "local"
    explicit = Settings(host="127.0.0.1:9")
    with pytest.raises(ServerUnreachable, match=r"OLLAMA_HOST=http://127\.0\.0\.1:9"):
        default_client(explicit, http, lambda: "local")
    assert [c.host for c in opened] == ["http://127.0.0.1:9", "http://127.0.0.1:9"]
    for client in opened:
        client.close()


def test_thinking_is_folded_and_partial_fences_closed() -> None:
    from nbllm.notebook.answer import Answer, render_body
    from nbllm.schema import ChatResponse, Message

    answer = Answer(model="m", started_at=0.0)
    answer.feed(ChatResponse(model="m", created_at="t", message=Message(role="assistant", thinking="hmm")), 0.1)
    answer.feed(ChatResponse(model="m", created_at="t", message=Message(role="assistant", content="```py\nx")), 0.2)
    body = render_body([answer], [], partial=True)
    assert body == "<details><summary>Thinking</summary>\n\nhmm\n\n</details>\n\n```py\nx\n```"
    assert answer.first_at == 0.1 and answer.message().thinking == "hmm"
