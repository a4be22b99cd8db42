"""Fast unit tests of the notebook layer's pure parts: interpolation, arguments, tool schemas, streams."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

import pytest
from IPython.core.error import UsageError
from pydantic import BaseModel

from nbllm.errors import ServerUnreachable
from nbllm.notebook.bench_args import BenchArgs
from nbllm.notebook.display import close_fences
from nbllm.notebook.interpolation import interpolate, strip_markers
from nbllm.notebook.magic_args import (
    ChatArgs,
    PsArgs,
    PullArgs,
    ServeArgs,
    ShowArgs,
    ShowHelp,
    parse_line,
)
from nbllm.notebook.magics import NbllmMagics
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


_ARGS = {"chat": ChatArgs, "generate": ChatArgs, "pull": PullArgs, "show": ShowArgs, "serve": ServeArgs}
_ARGS |= {"bench": BenchArgs, "ps": PsArgs}


def parse(magic: str, line: str) -> Any:
    """The line of ``%magic`` parsed by the magic's own ``@magic_arguments`` parser."""
    return parse_line(getattr(NbllmMagics, magic), line, _ARGS[magic])


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
    with pytest.raises(UsageError, match="unknown parameter 'bogus'"):
        parse("chat", "-o bogus=1")
    with pytest.raises(UsageError, match="not key=value"):
        parse("chat", "-o temperature")
    with pytest.raises(UsageError, match="invalid float32 value"):
        parse("generate", "-o temperature=hot")
    with pytest.raises(UsageError, match="unrecognized arguments: --tools"):
        parse("generate", "--tools f")
    with pytest.raises(UsageError, match="the following arguments are required: model"):
        parse("pull", "")
    with pytest.raises(UsageError, match="No closing quotation"):
        parse("chat", "-s 'unterminated")
    with pytest.raises(ShowHelp, match="usage: pull"):
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


def test_model_text_is_escaped_outside_code_and_kept_inside() -> None:
    from nbllm.notebook.answer import Answer, render_body
    from nbllm.notebook.display import escape_html
    from nbllm.schema import ChatResponse, Message

    text = (
        "<tool_response>{'temp': 21}</tool_response> and <think>x</think> a<b & c<|im_end|>\n"
        "> quoted\n\n`<kbd>` stays\n\n```html\n<p>kept</p>\n```\n<b>after</b>"
    )
    answer = Answer(model="m", started_at=0.0)
    answer.feed(ChatResponse(model="m", created_at="t", message=Message(role="assistant", content=text)), 0.1)
    body = render_body([answer], [])
    assert body == escape_html(text)
    assert body.startswith("&lt;tool_response>{'temp': 21}&lt;/tool_response> and &lt;think>x&lt;/think> a&lt;b &amp; ")
    assert "c&lt;|im_end|>\n> quoted" in body  # a block quote is still a block quote
    assert "`<kbd>` stays" in body and "```html\n<p>kept</p>\n```" in body  # code is shown as written
    assert body.endswith("&lt;b>after&lt;/b>")
    assert escape_html("```\n<open fence") == "```\n<open fence"  # a fence still streaming is code


def test_live_status_says_loading_then_counts_and_how_to_stop_a_long_answer() -> None:
    from nbllm.notebook.answer import LONG_ANSWER_TOKENS, STOP_HINT, Answer
    from nbllm.notebook.chat import live_bundle
    from nbllm.schema import ChatResponse, Message

    answer = Answer(model="smollm2:135m", started_at=0.0)
    assert live_bundle("", answer.live_status()) == {
        "text/plain": "waiting for the first token…",
        "text/markdown": "<sub>waiting for the first token…</sub>",
    }
    answer.loading = True
    assert live_bundle("", answer.live_status())["text/plain"] == "loading smollm2:135m…"  # no "(empty answer)"
    chunk = ChatResponse(model="m", created_at="t", message=Message(role="assistant", content="a"))
    for i in range(LONG_ANSWER_TOKENS - 1):
        answer.feed(chunk, 1.0 + i * 0.01)
    assert answer.live_status().startswith(f"{LONG_ANSWER_TOKENS - 1} tokens · ")
    assert STOP_HINT not in answer.live_status()
    answer.feed(chunk, 3.0)
    assert answer.live_status().endswith(f"{LONG_ANSWER_TOKENS} tokens · 100.0 tok/s · {STOP_HINT}")


def test_output_format_flags_and_code_extraction() -> None:
    from nbllm.notebook.answer import code_blocks
    from nbllm.notebook.outputs import CODE_NOTE, final_bundle

    assert parse("chat", "-f code").output == "code"
    assert parse("chat", "--output-format md").output == "markdown"
    assert parse("chat", "-f json").format == "json"  # -f json asks the model for JSON
    assert parse("chat", "-f json --format Person").format == "Person"
    assert parse("generate", "-f text").output == "text"
    with pytest.raises(UsageError, match="invalid choice"):
        parse("chat", "-f html")
    with pytest.raises(UsageError, match="-f code works with one model at a time"):
        parse("chat", "-m a -m b -f code")
    assert code_blocks("So:\n```python\ndef f():\n    return 1\n```\nand\n~~~\nf()\n~~~\n") == (
        "def f():\n    return 1\n\nf()"
    )
    inserted: list[str] = []
    code = final_bundle("code", markdown="m", text="```py\nx = 1\n```", footer="f", set_next_input=inserted.append)
    assert inserted == ["x = 1"] and CODE_NOTE in code["text/markdown"]
    assert final_bundle("text", markdown="*a*", text="<a>", footer="f") == {"text/plain": "<a>\n\n[f]"}
    as_json = final_bundle("json", markdown="m", text='{"a": [1, 2]}', footer="f")
    assert as_json["application/json"] == {"a": [1, 2]}
    broken = final_bundle("json", markdown="m", text='{"a": ', footer="f")
    assert "not valid JSON" in broken["text/markdown"]


def test_err_interpolation_by_cell_and_last() -> None:
    from nbllm.notebook.interpolation import CellErrors

    errors = CellErrors()
    ns = {"Err": errors, "In": ["", "1/0"], "Out": {2: 42}}
    assert interpolate("{Err} {Err[-1]} {Err[3]}", ns) == "{Err} {Err[-1]} {Err[3]}"  # none yet: left alone
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError as exc:
        errors.add(3, exc)
    errors.add(5, KeyError("k"))
    assert interpolate("{Err[3]}", ns).startswith("Traceback (most recent call last):")
    assert interpolate("{Err[3]}", ns).endswith("ZeroDivisionError: division by zero")
    assert interpolate("{Err}", ns) == interpolate("{Err[-1]}", ns) == interpolate("{Err[5]}", ns) == "KeyError: 'k'"
    assert interpolate("{Err[-2]}", ns) == interpolate("{Err[3]}", ns)
    assert interpolate("{Err[4]} {In[1]} {Out[2]}", ns) == "{Err[4]} 1/0 42"
