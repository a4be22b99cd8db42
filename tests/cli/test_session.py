"""The ``>>>`` session with scripted input, in-process over FakeEngines (fast; test_repl.py runs it for real)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nbllm.cli.session import Session
from nbllm.cli.slash import dispatch
from nbllm.cli.turn import RunOptions
from nbllm.client import LocalClient
from nbllm.engine.fake import FakeEngineFactory
from nbllm.runtime import Runtime
from nbllm.schema import Message


class ScriptedReader:
    """Lines (or exceptions to raise) in order; remembers which prompt each was read at."""

    def __init__(self, *lines: str | type[BaseException]) -> None:
        self.lines = list(lines)
        self.prompts: list[str] = []
        self.history: list[bool] = []

    def read(self, *, alt: bool = False) -> str:
        self.prompts.append("... " if alt else ">>> ")
        item = self.lines.pop(0) if self.lines else EOFError
        if isinstance(item, type):
            raise item()
        return item

    def set_history(self, *, enabled: bool) -> None:
        self.history.append(enabled)


@pytest.fixture
def client(fake_runtime: Runtime) -> Iterator[LocalClient]:
    yield LocalClient(fake_runtime)


def _run(client: LocalClient, *lines: str | type[BaseException]) -> tuple[Session, ScriptedReader]:
    reader = ScriptedReader(*lines)
    session = Session(client, RunOptions(model="tiny", wordwrap=False), reader, dispatch)
    session.run()
    return session, reader


def test_multiline_message_and_system_reach_the_model(
    client: LocalClient, fake_factory: FakeEngineFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_factory.replies.extend(["Noted."])
    session, reader = _run(client, '/set system """Be', 'brief."""', '"""line one', "line two", 'end"""', "/bye")
    assert reader.prompts == [">>> ", "... ", ">>> ", "... ", "... ", ">>> "]
    prompt = fake_factory.loads[-1].prompts[-1]
    assert "<|im_start|>system\nBe\nbrief.<|im_end|>" in prompt
    assert "<|im_start|>user\nline one\nline two\nend<|im_end|>" in prompt
    assert session.opts.messages == [
        Message(role="system", content="Be\nbrief."),
        Message(role="user", content="line one\nline two\nend"),
        Message(role="assistant", content="Noted."),
    ]
    out = capsys.readouterr().out
    assert "Set system message.\n" in out and "Noted.\n\n" in out


def test_set_system_replaces_the_last_and_clear_keeps_it(client: LocalClient) -> None:
    session, _ = _run(client, "/set system one", "/set system two", "/clear", "/bye")
    assert session.opts.system == "two"
    assert session.opts.messages == [Message(role="system", content="two")]


def test_a_failed_answer_leaves_no_trace(client: LocalClient, capsys: pytest.CaptureFixture[str]) -> None:
    session, _ = _run(client, "/set think", "Hello?", "/bye")
    captured = capsys.readouterr()
    assert 'warning: model "tiny" does not support thinking output' in captured.err
    assert 'Error: "tiny" does not support thinking' in captured.err
    assert session.opts.messages == []


def test_ctrl_c_and_ctrl_d_at_the_prompt(client: LocalClient, capsys: pytest.CaptureFixture[str]) -> None:
    _, reader = _run(client, KeyboardInterrupt, EOFError)
    assert capsys.readouterr().out == "\nUse Ctrl + d or /bye to exit.\n\n"
    assert reader.lines == []


def test_settings_commands(client: LocalClient, capsys: pytest.CaptureFixture[str]) -> None:
    session, reader = _run(
        client,
        "/set parameter temperature 0",
        "/set parameter stop <a> <b>",
        "/set parameter top_k many",
        "/set format json",
        "/set verbose",
        "/set nowordwrap",
        "/set nohistory",
        "/set history",
        "/set think low",
        "/set colour",
        "/nope",
        "/exit",
    )
    opts = session.opts
    assert opts.options == {"temperature": 0.0, "stop": ["<a>", "<b>"]}
    assert (opts.format, opts.verbose, opts.wordwrap, opts.think) == ("json", True, False, "low")
    assert reader.history == [False, True]
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "Set parameter 'temperature' to '0'",
        "Set parameter 'stop' to '<a>, <b>'",
        "Couldn't set parameter: \"invalid integer value for parameter 'top_k': 'many'\"",
        "Set format to 'json' mode.",
        "Set 'verbose' mode.",
        "Set 'nowordwrap' mode.",
        "Set 'think' mode to 'low'.",
        "Unknown command '/set colour'. Type /? for help",
        "Unknown command '/nope'. Type /? for help",
    ]


def test_save_and_load(client: LocalClient, fake_runtime: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    session, _ = _run(
        client,
        "/set system Be brief.",
        "/set parameter num_predict 5",
        "Hello there",
        "/save tiny-brief:v1",
        "/load tiny-brief:v1",
        "/load nothing-here",
        "/bye",
    )
    saved = fake_runtime.store.get("tiny-brief:v1")
    assert saved.system == "Be brief." and saved.params["num_predict"] == 5
    assert [m["role"] for m in saved.messages] == ["system", "user", "assistant"]
    assert saved.messages[1]["content"] == "Hello there"
    out = capsys.readouterr().out
    assert "Created new model 'tiny-brief:v1'\n" in out
    assert "Loading model 'tiny-brief:v1'\n" in out and "Couldn't find model 'nothing-here'\n" in out
    assert session.opts.model == "tiny-brief:v1" and session.opts.messages == []
    assert [m.role for m in session.opts.loaded_messages] == ["system", "user", "assistant"]
