"""Thinking in the notebook, over scripted chunk streams that carry ``message.thinking`` (fast, no model).

The server's side (parsing a model's reasoning into ``message.thinking``) is tested with the
engine; here the chunks are what such a server streams: the thinking first, then the answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from nbllm.client import BaseClient
from nbllm.notebook import load_ipython_extension, unload_ipython_extension
from nbllm.notebook.answer import Answer
from nbllm.notebook.display import LiveDisplay
from nbllm.notebook.live_answer import LiveAnswer
from nbllm.notebook.magics import NbllmMagics
from nbllm.notebook.session import NotebookSession
from nbllm.notebook.timing import COLUMN_NOTES, timing_frame
from nbllm.notebook.widgets._fallback import WIDGET_VIEW
from nbllm.schema import ChatRequest, ChatResponse, GenerateRequest, GenerateResponse, Message

THOUGHTS = ["The user ", "greets me; ", "<b>reply</b> kindly."]
WORDS = ["Hello", " there", "!"]


def _chunk(*, thinking: str | None = None, content: str = "") -> ChatResponse:
    return ChatResponse(
        model="m", created_at="t", message=Message(role="assistant", content=content, thinking=thinking)
    )


class ThinkingClient(BaseClient):
    """Streams ``THOUGHTS`` as thinking chunks, then ``WORDS``; records the requests."""

    host = "scripted"

    def __init__(self) -> None:
        self.requests: list[Any] = []

    def _chat(self, req: ChatRequest) -> Iterator[ChatResponse]:
        self.requests.append(req)
        yield from (_chunk(thinking=t) for t in THOUGHTS)
        yield from (_chunk(content=w) for w in WORDS)
        yield ChatResponse(
            model=req.model,
            created_at="t",
            message=Message(role="assistant", content=""),
            done=True,
            done_reason="stop",
            eval_count=len(THOUGHTS) + len(WORDS),
            eval_duration=60_000_000,
        )

    def _generate(self, req: GenerateRequest) -> Iterator[GenerateResponse]:
        self.requests.append(req)
        yield from (GenerateResponse(model="m", created_at="t", response="", thinking=t) for t in THOUGHTS)
        yield GenerateResponse(model="m", created_at="t", response="".join(WORDS), done=True, eval_count=4)

    def ps(self) -> Any:
        raise AssertionError("not asked")

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"unexpected call {name}")


ThinkingClient.__abstractmethods__ = frozenset()


class ScriptedSession(NotebookSession):
    """A notebook session whose every magic talks to one scripted client."""

    def __init__(self, client: BaseClient) -> None:
        super().__init__()
        self.scripted = client

    def client(self, host: str | None = None) -> BaseClient:
        return self.scripted


@pytest.fixture
def scripted(shell: InteractiveShell) -> Iterator[tuple[NbllmMagics, ThinkingClient]]:
    """The extension loaded over a :class:`ThinkingClient`, answers drawn at every chunk."""
    client = ThinkingClient()
    magics = load_ipython_extension(shell, session=ScriptedSession(client))
    magics.update_interval = 0.0
    yield magics, client
    unload_ipython_extension(shell)


def test_thinking_streams_into_a_collapsed_section_and_ends_folded(
    shell: InteractiveShell, scripted: tuple[NbllmMagics, ThinkingClient]
) -> None:
    magics, _client = scripted
    with capture_output() as cap:
        shell.run_cell_magic("chat", "m --var r", "Hi")
    widgets = [o.data for o in cap.outputs if WIDGET_VIEW in o.data]
    assert widgets, "the thinking widget was never shown"
    static = widgets[0]["text/html"]  # the widget's own static copy: collapsed
    assert static.startswith("<details><summary>Thinking…</summary>") and "<details open" not in static
    final = cap.outputs[-1].data
    assert WIDGET_VIEW not in final  # the finished answer is static Markdown
    body = final["text/markdown"]
    thought = "The user greets me; &lt;b>reply&lt;/b> kindly."  # the model's tags are shown, escaped
    assert body.startswith(f"<details><summary>Thinking</summary>\n\n{thought}\n\n</details>\n\nHello there!")
    assert "open" not in body.split("</details>")[0]  # collapsed in the saved notebook
    result = shell.user_ns["r"]
    assert result.thinking == "".join(THOUGHTS) and result.text == "Hello there!"
    assert magics.session.threads["default"][-1].thinking == "".join(THOUGHTS)


def test_an_opened_section_stays_open_while_thinking_streams_and_the_widget_closes_at_the_end() -> None:
    display = LiveDisplay(interval=0.0)
    live = LiveAnswer(display, interval=0.0)
    answer = Answer(model="m", started_at=0.0)
    with capture_output() as cap:
        display.show({"text/plain": "m: …"}, raw=True)
        live.redraw([answer], [])
        assert live.view is None  # no thinking yet: plain Markdown
        answer.feed(_chunk(thinking=THOUGHTS[0]), 0.1)
        live.redraw([answer], [])
        view = live.view
        assert view is not None and not view.expanded and view.section.titles == ("Thinking…",)
        view.section.selected_index = 0  # what the front end sends when the user clicks the title
        for i, text in enumerate(THOUGHTS[1:], 2):
            answer.feed(_chunk(thinking=text), 0.1 * i)
            live.redraw([answer], [])
        answer.feed(_chunk(content="Hello"), 0.5)
        live.redraw([answer], [])
        assert view.expanded and view.thought == "".join(THOUGHTS) and view.plain.startswith("Hello")
        assert view.section.titles == ("Thinking",)  # the answer began: the thinking is over
        live.finish({"text/plain": "Hello"})
    assert view.comm is None  # closed: nothing of it is left in the kernel
    shown = [o.data for o in cap.outputs]
    assert sum(WIDGET_VIEW in d for d in shown) == 1  # shown once, then only its text changes
    assert shown[-1] == {"text/plain": "Hello"}


def test_no_stream_shows_only_the_folded_final_answer(
    shell: InteractiveShell, scripted: tuple[NbllmMagics, ThinkingClient]
) -> None:
    with capture_output() as cap:
        shell.run_cell_magic("generate", "m --no-stream", "Hi")
    assert len(cap.outputs) == 1 and WIDGET_VIEW not in cap.outputs[0].data
    assert cap.outputs[0].data["text/markdown"].startswith("<details><summary>Thinking</summary>")


@pytest.mark.parametrize(
    ("flags", "think"),
    [("", None), ("--think", True), ("--think low", "low"), ("--think=high", "high"), ("--think false", False)],
)
@pytest.mark.parametrize("magic", ["chat", "generate"])
def test_think_flag_reaches_the_request(
    shell: InteractiveShell, scripted: tuple[NbllmMagics, ThinkingClient], magic: str, flags: str, think: Any
) -> None:
    _magics, client = scripted
    with capture_output():
        shell.run_cell_magic(magic, f"m --no-stream {flags}", "Hi")
    assert client.requests[-1].think == think


def test_timings_split_thinking_from_the_answer(
    shell: InteractiveShell, scripted: tuple[NbllmMagics, ThinkingClient]
) -> None:
    with capture_output():
        shell.run_cell_magic("chat", "m --var r", "Hi")
        frame = shell.run_line_magic("timings", "")
    row = frame.iloc[-1]
    assert (row["eval_tokens"], row["thinking_chunks"], row["thinking_chars"]) == (6, 3, len("".join(THOUGHTS)))
    assert frame.attrs["notes"] == COLUMN_NOTES and "message.thinking" in COLUMN_NOTES["thinking_chunks"]
    assert "<code>thinking_chunks</code>" in frame._repr_html_()  # the DataFrame says what the counts are
    assert shell.user_ns["r"].timings[0].summary().startswith("6 tokens (3 thinking) · ")


def test_an_answer_without_thinking_keeps_empty_thinking_columns() -> None:
    answer = Answer(model="m", started_at=0.0)
    answer.feed(_chunk(content="Hi"), 0.1)
    record = answer.timing()
    assert record.thinking_chunks is None and record.thinking_chars is None
    assert "thinking" not in record.summary()
    frame = timing_frame([record])
    assert frame["thinking_chunks"].isna().all() and "<code>thinking_chunks" not in frame._repr_html_()
