"""``nbllm run``'s ``>>>`` session on a pseudo-terminal, against the real model on a live server."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pexpect
import pytest

from nbllm.client import Client
from nbllm.runtime import Runtime
from nbllm.server import BackgroundServer
from nbllm.store import ModelStore
from tests.cli.support import PROMPT, spawn
from tests.conftest import GREEDY_MODEL
from tests.support.models import install_model

MODEL = "smollm2:135m"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def env(live_server: BackgroundServer, tmp_path: Path) -> dict[str, str]:
    return {"OLLAMA_HOST": live_server.url, "NBLLM_HOME": str(tmp_path / "home")}


def _command(child: pexpect.spawn, line: str, answer: str) -> None:
    """Type a line, expect ``answer`` in the output, then a fresh prompt."""
    child.sendline(line)
    child.expect_exact(answer)
    child.expect_exact(PROMPT)


def _bye(child: pexpect.spawn, command: str = "/bye") -> None:
    child.sendline(command)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_session_multiline_parameters_show_and_save(
    env: dict[str, str], live_server: BackgroundServer, tmp_path: Path
) -> None:
    child = spawn("run", MODEL, env=env)
    child.expect_exact(PROMPT)
    _command(child, "/?", "/? shortcuts    Help for keyboard shortcuts")
    _command(child, "/set parameter temperature 0", "Set parameter 'temperature' to '0'")
    _command(child, "/set parameter num_predict 24", "Set parameter 'num_predict' to '24'")
    _command(child, "/set parameter nonsense 1", "Couldn't set parameter: \"unknown parameter 'nonsense'\"")
    _command(child, "/set system You answer geography questions in one sentence.", "Set system message.")
    _command(child, "/set verbose", "Set 'verbose' mode.")
    child.sendline('"""What is the capital')
    child.expect_exact("Press Enter to send")  # the ... prompt of a multi-line message
    child.sendline('of France?"""')
    child.expect("Paris")
    child.expect(r"eval rate:\s+\d+\.\d\d tokens/s")
    child.expect_exact(PROMPT)
    _command(child, "/show template", "<|im_start|>")
    _command(child, "/show system", "You answer geography questions in one sentence.")
    _command(child, "/show parameters", "User defined parameters:")
    assert f"  {'temperature':<30} 0\r\n  {'num_predict':<30} 24\r\n" in child.before  # Go's "  %-30s %v"
    _command(child, "/save geo-quiz:test", "Created new model 'geo-quiz:test'")
    _command(child, "/save Not A Name!", "Usage:")
    _command(child, "/save bad/name!!", "error: The model name 'bad/name!!' is invalid")
    _command(child, "/set nohistory", "")
    _command(child, "/show license", "Apache License")
    _command(child, "/set history", "")
    _command(child, "/clear", "Cleared session context")
    _command(child, "/frobnicate", "Unknown command '/frobnicate'. Type /? for help")
    _bye(child)

    replay = spawn("run", "geo-quiz:test", env=env)  # a saved session starts where it was left
    replay.expect_exact(">>> What is the capital\r\nof France?")
    replay.expect("Paris")
    replay.expect_exact(PROMPT)
    _bye(replay, "/exit")
    with Client(live_server.url) as client:
        saved = client.show("geo-quiz:test")
        client.delete("geo-quiz:test")
    assert saved.system == "You answer geography questions in one sentence."
    assert re.search(r"^temperature\s+0$", saved.parameters or "", re.M)
    assert re.search(r"^num_predict\s+24$", saved.parameters or "", re.M)
    roles = [m.role for m in saved.messages or []]
    assert roles == ["system", "user", "assistant"]
    assert saved.messages is not None and saved.messages[1].content == "What is the capital\nof France?"
    assert "Paris" in saved.messages[2].content

    history = (tmp_path / "home" / "history").read_text()
    assert "/set parameter temperature 0" in history and "/clear" in history
    assert "/show license" not in history  # typed while history was off


def test_ctrl_c_stops_the_answer_and_the_session_goes_on(env: dict[str, str], live_server: BackgroundServer) -> None:
    child = spawn("run", MODEL, env={**env, "OLLAMA_NOHISTORY": "1"})
    child.expect_exact(PROMPT)
    _command(child, "/set parameter num_predict 2000", "Set parameter 'num_predict' to '2000'")
    child.sendline("Write a very long story about a dragon who learns to bake bread.")
    child.expect_exact("\x1b[?2004l")  # the line editor has handed over the terminal
    child.expect(r"[A-Za-z]{3,}")  # the answer is streaming
    time.sleep(0.5)
    interrupted = time.monotonic()
    child.sendintr()
    child.expect_exact(PROMPT, timeout=10)
    assert time.monotonic() - interrupted < 5  # 2000 tokens take ~20 s here: it stopped, it did not finish
    with Client(live_server.url) as client:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            running = [m for m in client.ps().models if m.name == MODEL]
            if running and running[0].active_requests == 0:
                break
            time.sleep(0.1)
        assert running and running[0].active_requests == 0, "the server kept generating after Ctrl-C"
    child.sendintr()  # Ctrl-C at an empty prompt explains how to leave
    child.expect_exact("Use Ctrl + d or /bye to exit.")
    child.expect_exact(PROMPT)
    child.sendline("/set parameter num_predict 8")
    child.expect_exact(PROMPT)
    child.sendline("Say hello.")
    child.expect(r"[A-Za-z]{2,}")
    child.expect_exact(PROMPT)
    child.sendcontrol("d")  # Ctrl-D exits
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    home = Path(env["NBLLM_HOME"])
    assert not (home / "history").exists() or (home / "history").read_text() == ""  # OLLAMA_NOHISTORY


def test_load_show_info_and_format(env: dict[str, str]) -> None:
    child = spawn("run", MODEL, env=env)
    child.expect_exact(PROMPT)
    _command(child, "/load no-such-model", "Couldn't find model 'no-such-model'")
    _command(child, f"/load {GREEDY_MODEL}", f"Loading model '{GREEDY_MODEL}'")
    child.sendline("/show info")
    child.expect(r"architecture\s+llama")
    child.expect(r"temperature\s+0")  # the loaded model's parameters
    child.expect_exact(PROMPT)
    _command(child, "/set format yaml", "Invalid or missing format. For 'json' mode use '/set format json'")
    _command(child, "/set format json", "Set format to 'json' mode.")
    child.sendline("Describe a cat.")
    child.expect(r"\{")
    child.expect_exact(PROMPT)
    _command(child, "/set noformat", "Disabled format.")
    _command(child, "/set think", 'warning: model "smollm2-greedy:135m" does not support thinking output')
    _command(child, "Hello?", 'Error: "smollm2-greedy:135m" does not support thinking')  # the session goes on
    _command(child, "/set nothink", "Set 'nothink' mode.")
    child.sendline("Hello?")
    child.expect(r"[A-Za-z]{2,}")
    child.expect_exact(PROMPT)
    _bye(child)


@pytest.mark.parametrize(("flags", "wrapped"), [((), True), (("--nowordwrap",), False)])
def test_one_shot_word_wrap_on_a_terminal(env: dict[str, str], flags: tuple[str, ...], *, wrapped: bool) -> None:
    prompt = "Describe the city of Paris in detail, with its history."
    child = spawn("run", GREEDY_MODEL, prompt, *flags, env=env, columns=40)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    # what is left on each line once the spinner's "\r" redraws are done
    lines = [ANSI.sub("", line).rstrip("\r").split("\r")[-1] for line in child.before.split("\n")]
    text = [line for line in lines if line.strip()]
    assert text and sum(len(line) for line in text) > 100
    if wrapped:  # Ollama wraps at the terminal width less 5 columns
        assert all(len(line) <= 35 for line in text), text
    else:
        assert any(len(line) > 40 for line in text), text


def test_in_process_session_without_a_server(tmp_path: Path, real_runtime: Runtime) -> None:
    """No server and no OLLAMA_HOST: the session runs the model in the nbllm process itself."""
    source = real_runtime.store.get(MODEL)
    assert source.model_path is not None
    store = ModelStore(tmp_path / "models")
    install_model(store, MODEL, source.model_path, template=source.template, params=source.params)
    env = {"OLLAMA_MODELS": str(tmp_path / "models"), "NBLLM_HOME": str(tmp_path / "home"), "OLLAMA_NUM_PARALLEL": "1"}
    child = spawn("run", MODEL, env=env)
    child.expect_exact(PROMPT)
    _command(child, "/set parameter num_predict 2000", "Set parameter 'num_predict' to '2000'")
    child.sendline("Write a very long story about a dragon who learns to bake bread.")
    child.expect_exact("\x1b[?2004l")
    child.expect(r"[A-Za-z]{3,}")
    interrupted = time.monotonic()
    child.sendintr()
    child.expect_exact(PROMPT, timeout=10)
    assert time.monotonic() - interrupted < 5
    _command(child, "/set parameter num_predict 8", "Set parameter 'num_predict' to '8'")
    asked = time.monotonic()
    child.sendline("Say hello.")  # the one decode slot is free again: the stopped answer was cancelled
    child.expect(r"[A-Za-z]{2,}")
    child.expect_exact(PROMPT)
    assert time.monotonic() - asked < 12  # the rest of 2000 tokens would take 20 s and more
    _command(child, "/save short:story", "Created new model 'short:story'")
    _bye(child)
    saved = store.get("short:story")
    assert saved.params["num_predict"] == 8 and [m["role"] for m in saved.messages] == ["user", "assistant"]
