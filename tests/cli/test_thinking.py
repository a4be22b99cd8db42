"""``nbllm run --think / --hidethinking`` and the REPL's ``/set think`` / ``/set nothink`` on a real thinking model."""

from __future__ import annotations

from pathlib import Path

import pexpect
import pytest

from nbllm.runtime import Runtime
from nbllm.server import BackgroundServer
from tests.cli.support import PROMPT, nbllm, spawn
from tests.support.thinking import QUESTION, install_thinker

OPENING, CLOSING = "Thinking...\n", "...done thinking.\n\n"


@pytest.fixture(scope="module")
def model(real_runtime: Runtime) -> str:
    return install_thinker(real_runtime)


@pytest.fixture
def host(live_server: BackgroundServer, tmp_path: Path) -> dict[str, str]:
    return {"OLLAMA_HOST": live_server.url, "NBLLM_HOME": str(tmp_path / "home")}


def test_run_think_shows_the_thinking_then_the_answer(host: dict[str, str], model: str) -> None:
    shown = nbllm("run", model, QUESTION, "--think", env=host)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(OPENING) and CLOSING in shown.stdout
    thinking, _, answer = shown.stdout.removeprefix(OPENING).partition(CLOSING)
    assert thinking.strip() and answer.strip() and "<think>" not in shown.stdout

    hidden = nbllm("run", model, QUESTION, "--hidethinking", env=host)  # thinks (the default), not shown
    assert hidden.returncode == 0 and hidden.stdout == answer

    off = nbllm("run", model, QUESTION, "--think=false", env=host)
    assert off.returncode == 0 and "Thinking..." not in off.stdout and "<think>" not in off.stdout
    assert off.stdout.strip()


def test_repl_set_nothink_and_think(host: dict[str, str], model: str) -> None:
    child = spawn("run", model, env=host)
    child.expect_exact(PROMPT)
    child.sendline("/set nothink")
    child.expect_exact("Set 'nothink' mode.")
    child.expect_exact(PROMPT)
    child.sendline(QUESTION)
    child.expect_exact(PROMPT)
    assert "Thinking..." not in child.before and "<think>" not in child.before
    child.sendline("/clear")  # (an answer without thinking in the history is an example the model would follow)
    child.expect_exact("Cleared session context")
    child.expect_exact(PROMPT)
    child.sendline("/set think low")
    child.expect_exact("Set 'think' mode to 'low'.")
    child.expect_exact(PROMPT)
    child.sendline(QUESTION)
    child.expect_exact("Thinking...")
    child.expect_exact("...done thinking.")
    child.expect_exact(PROMPT)
    child.sendline("/bye")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
