"""The ``nbllm`` command as a user runs it: a subprocess against a live server, or in-process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nbllm.server import BackgroundServer
from tests.conftest import GREEDY_MODEL
from tests.support.index_server import IndexServer

MODEL = "smollm2:135m"
GREEDY = GREEDY_MODEL  # same weights, temperature 0, at most 48 tokens


def nbllm(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("NBLLM_", "OLLAMA_"))}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "nbllm", *args],
        capture_output=True,
        text=True,
        env=full_env,
        input=stdin if stdin is not None else "",
        timeout=timeout,
    )


@pytest.fixture
def host(live_server: BackgroundServer) -> dict[str, str]:
    return {"OLLAMA_HOST": live_server.url}


def test_help_lists_commands_and_serve_lists_environment() -> None:
    out = nbllm("--help").stdout
    for command in ("serve", "run", "pull", "list", "ps", "show", "stop", "rm", "cp"):
        assert re.search(rf"^\s+{command}\b", out, re.M), command
    serve_help = nbllm("serve", "--help").stdout
    for var in (
        "OLLAMA_HOST",
        "OLLAMA_MODELS",
        "OLLAMA_KEEP_ALIVE",
        "OLLAMA_NUM_PARALLEL",
        "OLLAMA_ORIGINS",
        "OLLAMA_LOAD_TIMEOUT",
        "OLLAMA_FLASH_ATTENTION",
        "OLLAMA_NOPRUNE",
    ):
        assert var in serve_help


def test_list(host: dict[str, str]) -> None:
    result = nbllm("list", env=host)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert re.match(r"NAME\s{4,}ID\s{4,}SIZE\s{4,}MODIFIED$", header)
    row = next(r for r in rows if r.startswith(MODEL + " "))
    assert re.match(rf"{re.escape(MODEL)}\s+[0-9a-f]{{12}}\s+98 MB\s+.+ ago$", row), row


def test_run_one_shot_verbose(host: dict[str, str]) -> None:
    result = nbllm("run", GREEDY, "What is the capital of France? Answer in one word.", "--verbose", env=host)
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    for label in (
        "total duration:",
        "load duration:",
        "prompt eval count:",
        "prompt eval duration:",
        "prompt eval rate:",
        "eval count:",
        "eval duration:",
        "eval rate:",
    ):
        assert label in result.stderr
    assert re.search(r"^eval rate:\s+\d+\.\d\d tokens/s$", result.stderr, re.M)
    assert re.search(r"^eval count:\s+\d+ token\(s\)$", result.stderr, re.M)


def test_run_reads_piped_stdin(host: dict[str, str]) -> None:
    result = nbllm("run", GREEDY, env=host, stdin="Repeat the word banana.")
    assert result.returncode == 0 and "banana" in result.stdout.lower()


def test_pull_prints_ollama_statuses(host: dict[str, str]) -> None:
    result = nbllm("pull", MODEL, env=host)
    assert result.returncode == 0
    lines = result.stderr.splitlines()
    assert lines[0] == "pulling manifest" and lines[-1] == "success"
    assert re.search(r"^pulling b179c9523d0e\.\.\. 100% ▕█+▏\s+98 MB$", result.stderr, re.M)
    assert "verifying sha256 digest" in lines and "writing manifest" in lines


def test_show(host: dict[str, str]) -> None:
    template = nbllm("show", MODEL, "--template", env=host).stdout
    assert template.startswith("{{- if or .System .Tools }}<|im_start|>system")
    summary = nbllm("show", MODEL, env=host).stdout
    assert re.search(r"^\s+architecture\s+llama$", summary, re.M)
    assert re.search(r"^\s+context length\s+8192$", summary, re.M)
    assert "Capabilities" in summary and re.search(r"^\s+tools$", summary, re.M)


def test_ps_and_stop(host: dict[str, str]) -> None:
    assert nbllm("run", MODEL, "Say hi to Bob.", "--keepalive", "10m", env=host).returncode == 0
    ps = nbllm("ps", env=host).stdout
    assert re.match(r"NAME\s+ID\s+SIZE\s+PROCESSOR\s+UNTIL", ps)
    assert re.search(rf"^{re.escape(MODEL)}\s+[0-9a-f]{{12}}\s+\d+ MB\s+100% CPU\s+(9|10) minutes from now$", ps, re.M)
    assert nbllm("stop", MODEL, env=host).returncode == 0
    assert MODEL not in nbllm("ps", env=host).stdout
    again = nbllm("stop", MODEL, env=host)
    assert again.returncode == 1 and again.stderr.startswith("Error: ") and "not running" in again.stderr


def test_keepalive_forever_shows_forever(host: dict[str, str]) -> None:
    assert nbllm("run", MODEL, "Say hi to Bob.", "--keepalive=-1m", env=host).returncode == 0
    assert re.search(rf"^{re.escape(MODEL)}\s.*Forever$", nbllm("ps", env=host).stdout, re.M)
    nbllm("stop", MODEL, env=host)


def test_errors_are_one_line_and_nonzero(host: dict[str, str]) -> None:
    result = nbllm("show", "no-such-model", env=host)
    assert result.returncode == 1 and result.stderr == "Error: model 'no-such-model' not found\n"


def test_without_a_server_run_works_in_process(tmp_path: Path, package_index: IndexServer) -> None:
    env = {
        "NBLLM_MODELS": str(tmp_path / "models"),
        "NBLLM_PACKAGE_INDEX": package_index.url,
        "NBLLM_HOME": str(tmp_path / "home"),
        "OLLAMA_NUM_PARALLEL": "1",
    }
    result = nbllm("run", MODEL, "Say hi to Bob.", "--verbose", env=env)
    assert result.returncode == 0, result.stderr
    assert "pulling manifest" in result.stderr and "success" in result.stderr and "eval rate:" in result.stderr
    assert result.stdout.strip()
    assert (tmp_path / "models" / "manifests" / "registry.ollama.ai" / "library" / "smollm2" / "135m").is_file()
    listing = nbllm("list", env=env).stdout
    assert MODEL in listing


def test_ps_without_a_server_is_a_clear_error(tmp_path: Path) -> None:
    result = nbllm("ps", env={"OLLAMA_HOST": "127.0.0.1:9", "NBLLM_HOME": str(tmp_path)})
    assert result.returncode == 1
    assert result.stderr.startswith("Error: could not connect to a running nbllm server at http://127.0.0.1:9")


def test_bad_environment_variable_is_reported(tmp_path: Path) -> None:
    result = nbllm("list", env={"OLLAMA_KEEP_ALIVE": "whenever", "NBLLM_HOME": str(tmp_path)})
    assert result.returncode == 1 and "OLLAMA_KEEP_ALIVE" in result.stderr
