"""``%%chat --thread NAME --persist`` and ``%threads`` over the fake engine (fast): names, files, atomicity."""

from __future__ import annotations

import _thread
import errno
import json
import os
import shlex
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from nbllm.config import Settings
from nbllm.engine.fake import FakeEngineFactory
from nbllm.errors import StoreError
from nbllm.notebook import load_ipython_extension, unload_ipython_extension
from nbllm.notebook.magic_args import ChatArgs
from nbllm.notebook.magics import NbllmMagics
from nbllm.notebook.session import NotebookSession
from nbllm.notebook.threads import resume_thread
from nbllm.runtime import Runtime
from nbllm.schema import Message
from nbllm.server import BackgroundServer
from nbllm.store.threads import SavedThread, ThreadError, ThreadStore
from tests.notebook.shellrun import cell, line

HOSTILE = ["../x", "a/b", "", "x" * 65, "a\x00b", "..", ".hidden", "/etc/passwd", "a\\b", "-x", "a b"]


@pytest.fixture
def nbf(shell: InteractiveShell, fake_runtime: Runtime) -> Iterator[NbllmMagics]:
    """The extension over the fake runtime (model ``tiny``), answering in this process."""
    magics = load_ipython_extension(shell, session=NotebookSession(runtime=fake_runtime))
    magics.host, magics.default_model = "local", "tiny"
    yield magics
    unload_ipython_extension(shell)


def _threads_dir(rt: Runtime) -> Path:
    return rt.settings.home / "threads"


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


@pytest.mark.parametrize("name", HOSTILE, ids=repr)
def test_a_hostile_thread_name_is_refused_in_one_line_and_nothing_is_written(
    shell: InteractiveShell, nbf: NbllmMagics, fake_runtime: Runtime, tmp_path: Path, name: str
) -> None:
    before = _files(tmp_path)
    with pytest.raises(ThreadError, match="invalid thread name"):
        ThreadStore(_threads_dir(fake_runtime)).path(name)
    with pytest.raises(UsageError, match="invalid thread name") as err:
        cell(shell, "chat", f"--thread={shlex.quote(name)} --persist", "Hi")
    assert "\n" not in str(err.value)
    assert _files(tmp_path) == before  # nothing written anywhere (no model loaded either)
    assert fake_runtime.scheduler.ps() == []


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[1, 2]", b'{"format": "someone.else/1"}', b'{"format": "nbllm.thread/1", "model": "m"}', b"\xff"],
    ids=["not-json", "a-list", "foreign", "no-messages", "binary"],
)
def test_a_damaged_or_foreign_file_is_refused_and_left_alone(
    shell: InteractiveShell, nbf: NbllmMagics, fake_runtime: Runtime, content: bytes
) -> None:
    path = _threads_dir(fake_runtime) / "t.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    for flags in ("", " --new"):
        with pytest.raises(UsageError, match=r"damaged or not nbllm's") as err:
            cell(shell, "chat", f"--thread t --persist{flags}", "Hi")
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert path.read_bytes() == content
    frame = line(shell, "threads").result
    assert list(frame["name"]) == ["t"] and "damaged" in frame["error"][0]


def test_a_failed_write_leaves_the_previous_file_and_no_partial_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ThreadStore(tmp_path / "threads")
    first = SavedThread("t", "tiny", (Message(role="user", content="one"), Message(role="assistant", content="1")))
    store.save(first)
    saved = store.path("t").read_bytes()
    written: list[int] = []

    def full_disk(fd: int) -> None:  # the new bytes are in the temporary file; the disk fills before they land
        written.append(os.fstat(fd).st_size)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("nbllm.store.blobs.os.fsync", full_disk)
    second = SavedThread("t", "tiny", (*first.messages, Message(role="user", content="two" * 1000)))
    with pytest.raises(StoreError, match="not enough disk space"):
        store.save(second)
    assert written and written[0] > len(saved)  # it failed mid-write, after the new content was written
    assert store.path("t").read_bytes() == saved
    assert sorted(p.name for p in store.root.iterdir()) == ["t.json"]  # no temporary file left
    loaded = store.load("t")
    assert loaded is not None and loaded.messages == first.messages


def test_persist_saves_each_exchange_and_a_new_session_continues_it(
    shell: InteractiveShell, nbf: NbllmMagics, fake_runtime: Runtime, fake_factory: FakeEngineFactory
) -> None:
    cell(shell, "chat", "--thread t --persist -s 'Be brief.' -o temperature=0 -o seed=3", "Name a colour.")
    cell(shell, "chat", "--thread t --persist", "Another one.")
    path = _threads_dir(fake_runtime) / "t.json"
    doc = json.loads(path.read_text())
    assert doc["model"] == "tiny" and doc["options"] == {"temperature": 0, "seed": 3}
    assert [m["role"] for m in doc["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert os.stat(path).st_mode & 0o777 == 0o600
    unload_ipython_extension(shell)  # "restart": a new session, nothing in memory
    magics = load_ipython_extension(shell, session=NotebookSession(runtime=fake_runtime))
    magics.host, magics.default_model = "local", "some-other-model"  # the thread's model is used
    assert magics.session.threads == {}
    cell(shell, "chat", "--thread t --persist --var r", "And a third.")
    prompt = fake_factory.loads[-1].prompts[-1]
    assert "Be brief." in prompt and "Name a colour." in prompt and "Another one." in prompt
    assert [m.role for m in magics.session.threads["t"]] == ["system", *["user", "assistant"] * 3]
    doc = json.loads(path.read_text())
    assert len(doc["messages"]) == 7 and doc["options"] == {"temperature": 0, "seed": 3}
    frame = line(shell, "threads").result
    assert list(frame["name"]) == ["t"] and list(frame["turns"]) == [3] and list(frame["model"]) == ["tiny"]
    assert frame["bytes"][0] == path.stat().st_size
    assert "deleted thread 't'" in repr(line(shell, "threads", "--delete t").result)
    assert not path.exists() and "t" not in magics.session.threads
    assert "no saved thread" in repr(line(shell, "threads", "--delete t").result)


def test_an_interrupted_exchange_is_not_saved(
    shell: InteractiveShell, nbf: NbllmMagics, fake_runtime: Runtime, fake_factory: FakeEngineFactory
) -> None:
    cell(shell, "chat", "--thread t --persist", "Hi")
    path = _threads_dir(fake_runtime) / "t.json"
    saved = path.read_bytes()
    fake_factory.loads[-1].token_delay = 0.05
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            cell(shell, "chat", "--thread t --persist -o num_predict=500", "Count to a thousand. " * 20)
    finally:
        timer.cancel()
        timer.join()
    assert path.read_bytes() == saved
    assert len(nbf.session.threads["t"]) == 2


def test_persist_takes_one_model(shell: InteractiveShell, nbf: NbllmMagics) -> None:
    with pytest.raises(UsageError, match="--persist works with one model"):
        cell(shell, "chat", "--thread t --persist -m tiny -m tiny", "Hi")


def test_persist_turns_kv_snapshots_on_for_a_runtime_the_session_owns(tmp_path: Path) -> None:
    session = NotebookSession(settings=Settings(home=tmp_path / "home", models=tmp_path / "models"))
    assert not session.settings.kv_snapshots
    assert session.keep_kv_snapshots("tiny")
    assert session.settings.kv_snapshots and session.runtime.settings.kv_snapshots
    session.close()


def test_a_runtime_given_to_the_session_is_left_as_it_is(fake_runtime: Runtime) -> None:
    session = NotebookSession(runtime=fake_runtime)
    assert not session.keep_kv_snapshots("tiny")
    assert not fake_runtime.settings.kv_snapshots


def test_snapshots_go_on_only_when_this_kernel_answers(tmp_path: Path) -> None:
    """In-process or through %serve's server in this kernel: this runtime's snapshots; another server: its own."""
    args = ChatArgs(thread="t", persist=True)
    for host, here in (("http://127.0.0.1:1", False), ("in-process", True), ("serve", True)):
        session = NotebookSession(settings=Settings(home=tmp_path / "home", models=tmp_path / "models"))
        try:
            if host == "serve":
                host = session.serve(port=0).url
            resumed = resume_thread(session, args, "tiny", host)
            assert resumed.models == ("tiny",)
            assert session.settings.kv_snapshots is here
        finally:
            session.close()


def test_a_thread_with_tool_calls_images_and_options_round_trips(tmp_path: Path) -> None:
    messages = (
        Message(role="system", content="s"),
        Message(role="user", content="é\u2028 {x}", images=["aGk="]),
        Message(role="assistant", tool_calls=[{"function": {"name": "f", "arguments": {"x": 1}}}]),
        Message(role="tool", content="1", tool_name="f", tool_call_id="c1"),
    )
    store = ThreadStore(tmp_path / "threads")
    store.save(SavedThread("t", "m:1b", messages, {"stop": ("a", "b"), "temperature": 0.0}, "high", "http://h:1"))
    loaded = store.load("t")
    assert loaded is not None and loaded.messages == messages and loaded.turns == 1
    assert (loaded.model, loaded.think, loaded.host) == ("m:1b", "high", "http://h:1")
    assert loaded.options == {"stop": ["a", "b"], "temperature": 0.0}
    assert store.names() == ["t"] and store.delete("t") and store.load("t") is None and not store.delete("t")


def test_a_thread_held_with_another_server_is_saved_here(
    shell: InteractiveShell, nbf: NbllmMagics, fake_runtime: Runtime
) -> None:
    """--host URL: the messages are saved in this kernel's NBLLM_HOME, with the host; snapshots are the server's."""
    with BackgroundServer(fake_runtime, port=0) as server:
        cell(shell, "chat", f"--thread remote --persist --host {server.url}", "Hi")
        cell(shell, "chat", f"--thread remote --persist --host {server.url}", "Again")
    loaded = ThreadStore(_threads_dir(fake_runtime)).load("remote")
    assert loaded is not None and loaded.turns == 2 and loaded.host == server.url
    assert not nbf.session.settings.kv_snapshots
    frame = line(shell, "threads").result
    assert list(frame["host"]) == [server.url]
