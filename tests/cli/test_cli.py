"""The ``nbllm`` command as a user runs it: a subprocess against a live server, or in-process."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from nbllm.client import Client
from nbllm.server import BackgroundServer
from tests.cli.support import nbllm
from tests.conftest import GREEDY_MODEL
from tests.support.index_server import IndexServer
from tests.support.model_facts import ModelFacts

MODEL = "smollm2:135m"
GREEDY = GREEDY_MODEL  # same weights, temperature 0, at most 48 tokens

__all__ = ["nbllm"]


@pytest.fixture
def host(live_server: BackgroundServer) -> dict[str, str]:
    return {"OLLAMA_HOST": live_server.url}


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


def test_pull_prints_ollama_statuses(host: dict[str, str], smollm2_facts: ModelFacts) -> None:
    result = nbllm("pull", MODEL, env=host)
    assert result.returncode == 0
    lines = result.stderr.splitlines()
    assert lines[0] == "pulling manifest" and lines[-1] == "success"
    assert re.search(rf"^pulling {smollm2_facts.short_digest}\.\.\. 100% ▕█+▏\s+98 MB$", result.stderr, re.M)
    assert "verifying sha256 digest" in lines and "writing manifest" in lines


def test_show(host: dict[str, str], smollm2_facts: ModelFacts) -> None:
    template = nbllm("show", MODEL, "--template", env=host).stdout
    assert template.startswith("{{- if or .System .Tools }}<|im_start|>system")
    summary = nbllm("show", MODEL, env=host).stdout
    assert re.search(r"^\s+architecture\s+llama$", summary, re.M)
    assert re.search(rf"^\s+context length\s+{smollm2_facts.context_length}$", summary, re.M)
    assert "Capabilities" in summary and re.search(r"^\s+tools$", summary, re.M)


def test_ps_and_stop(host: dict[str, str]) -> None:
    assert nbllm("run", MODEL, "--keepalive", "10m", env=host).returncode == 0
    ps = nbllm("ps", env=host).stdout
    assert re.match(r"NAME\s+ID\s+SIZE\s+PROCESSOR\s+UNTIL", ps)
    assert re.search(rf"^{re.escape(MODEL)}\s+[0-9a-f]{{12}}\s+\d+ MB\s+100% CPU\s+(9|10) minutes from now$", ps, re.M)
    assert nbllm("stop", MODEL, env=host).returncode == 0
    assert MODEL not in nbllm("ps", env=host).stdout
    again = nbllm("stop", MODEL, env=host)
    assert again.returncode == 1 and again.stderr.startswith("Error: ") and "not running" in again.stderr


def test_keepalive_forever_shows_forever(host: dict[str, str]) -> None:
    assert nbllm("run", MODEL, "--keepalive=-1m", env=host).returncode == 0
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
        # A sampled answer now and then never ends (about 1 run in 50: "You can just type Bob ..." over and
        # over); num_predict -1 is capped at 10 x num_ctx, so a 256-token context bounds it to 2560 tokens.
        "OLLAMA_CONTEXT_LENGTH": "256",
    }
    result = nbllm("run", MODEL, "Say hi to Bob.", "--verbose", env=env)
    assert result.returncode == 0, result.stderr
    evaluated = re.search(r"^eval count:\s+(\d+) token", result.stderr, re.M)
    assert evaluated and 0 < int(evaluated.group(1)) <= 2560
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


def test_list_prefix_and_json(host: dict[str, str]) -> None:
    rows = nbllm("list", "SMOLLM2-G", env=host).stdout.splitlines()
    assert len(rows) == 2 and rows[1].startswith(GREEDY + " ")  # prefix ignores case, as Ollama's
    data = json.loads(nbllm("ls", "--json", env=host).stdout)
    names = [m["name"] for m in data["models"]]
    assert MODEL in names and GREEDY in names
    model = next(m for m in data["models"] if m["name"] == MODEL)
    assert model["size"] > 90_000_000 and len(model["digest"]) == 64 and model["details"]["format"] == "gguf"


def test_show_flags(host: dict[str, str], live_server: BackgroundServer, smollm2_facts: ModelFacts) -> None:
    with Client(live_server.url) as client:
        resp = client.show(MODEL)
    assert resp.license and resp.system and resp.parameters
    # --template and --system print the text as it is; the others end with a newline (Ollama's Print/Println)
    assert nbllm("show", MODEL, "--template", env=host).stdout == resp.template
    assert nbllm("show", MODEL, "--system", env=host).stdout == resp.system
    assert nbllm("show", MODEL, "--license", env=host).stdout == resp.license + "\n"
    assert nbllm("show", MODEL, "--parameters", env=host).stdout == resp.parameters + "\n"
    modelfile = nbllm("show", MODEL, "--modelfile", env=host).stdout
    assert modelfile == resp.modelfile + "\n" and re.search(r"^FROM ", modelfile, re.M)
    both = nbllm("show", MODEL, "--license", "--template", env=host)
    assert both.returncode == 1
    assert both.stderr == (
        "Error: only one of '--license', '--modelfile', '--parameters', '--system', or '--template' can be specified\n"
    )
    data = json.loads(nbllm("show", MODEL, "--json", env=host).stdout)
    assert data["details"]["quantization_level"] == smollm2_facts.quantization and "completion" in data["capabilities"]


def test_show_summary_sections(host: dict[str, str], smollm2_facts: ModelFacts) -> None:
    out = nbllm("show", MODEL, env=host).stdout
    sections = re.findall(r"^  (\S.*)$", out, re.M)
    assert sections == ["Model", "Capabilities", "Parameters", "System", "License"]
    model_block = out.split("\n\n")[0].splitlines()
    assert model_block[1:] == [
        "    architecture        llama",
        "    parameters          134.52M",
        f"    context length      {smollm2_facts.context_length}",
        f"    embedding length    {smollm2_facts.embedding_length}",
        f"    quantization        {smollm2_facts.quantization}",
    ]
    assert re.search(r'^    stop           "<\|im_end\|>"$', out, re.M)
    assert re.search(r"^    temperature    0\.2$", out, re.M)
    assert out.rstrip().endswith("...")  # license: two lines, then "..."
    verbose = nbllm("show", MODEL, "-v", env=host).stdout
    assert re.search(r"^  Metadata$", verbose, re.M)
    assert re.search(r"^    general\.architecture\s+llama$", verbose, re.M)
    assert re.search(r"^    tokenizer\.ggml\.tokens\s+\[.* \.\.\.\+\d+ more\]$", verbose, re.M)


def test_cp_then_rm_unloads_and_deletes(host: dict[str, str], live_server: BackgroundServer) -> None:
    copy = nbllm("cp", MODEL, "cli-copy:test", env=host)
    assert (copy.returncode, copy.stdout) == (0, f"copied '{MODEL}' to 'cli-copy:test'\n")
    assert nbllm("run", "cli-copy:test", "--keepalive", "10m", env=host).returncode == 0
    assert "cli-copy:test" in nbllm("ps", env=host).stdout
    removed = nbllm("rm", "cli-copy:test", env=host)
    assert (removed.returncode, removed.stdout, removed.stderr) == (0, "deleted 'cli-copy:test'\n", "")
    assert "cli-copy:test" not in nbllm("ps", env=host).stdout  # unloaded first, as Ollama does
    assert "cli-copy:test" not in nbllm("list", env=host).stdout
    again = nbllm("rm", "cli-copy:test", env=host)
    assert again.returncode == 1 and again.stderr == "Error: model 'cli-copy:test' not found\n"
    bad = nbllm("cp", "no-such-model", "x:y", env=host)
    assert bad.returncode == 1 and bad.stderr.startswith("Error: ") and len(bad.stderr.splitlines()) == 1


def test_pull_unknown_model_fails_with_one_error_line(host: dict[str, str]) -> None:
    result = nbllm("pull", "no-such-model:1b", env=host)
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == "pulling manifest"
    assert result.stderr.splitlines()[-1].startswith("Error: pull model manifest")
    assert len(result.stderr.splitlines()) == 2


def test_ps_json_has_nbllm_extras(host: dict[str, str]) -> None:
    assert nbllm("run", MODEL, "--keepalive", "1m", env=host).returncode == 0
    data = json.loads(nbllm("ps", "--json", env=host).stdout)
    model = next(m for m in data["models"] if m["name"] == MODEL)
    assert model["processor"] == "100% CPU" and model["size_vram"] == 0
    assert model["active_requests"] == 0 and model["queued_requests"] == 0 and model["context_length"] > 0
    assert nbllm("ps", "nothing-like-this", env=host).stdout == "NAME    ID    SIZE    PROCESSOR    UNTIL\n"
    nbllm("stop", MODEL, env=host)


THINK_ERROR = 'invalid value for --think: "maybe" (must be true, false, high, medium, low, or max)'


def test_run_flags_are_checked_before_anything_loads(host: dict[str, str]) -> None:
    cases = {
        ("--keepalive", "soon"): 'Error: time: invalid duration "soon"\n',
        ("--think=maybe",): f"Error: {THINK_ERROR}\n",
        ("--format", "yaml"): "Error: invalid format 'yaml': use json or a JSON schema\n",
    }
    for flags, error in cases.items():
        result = nbllm("run", MODEL, "hi", *flags, env=host)
        assert (result.returncode, result.stderr) == (1, error)


def test_run_think_on_a_model_without_thinking(host: dict[str, str]) -> None:
    result = nbllm("run", GREEDY, "hi", "--think", env=host)
    assert result.returncode == 1 and result.stderr == f'Error: "{GREEDY}" does not support thinking\n'


def test_run_format_json(host: dict[str, str]) -> None:
    result = nbllm("run", GREEDY, "Describe a cat as JSON.", "--format", "json", env=host)
    assert result.returncode == 0 and result.stdout.lstrip().startswith("{")


def test_run_without_prompt_or_input_only_loads(host: dict[str, str]) -> None:
    result = nbllm("run", MODEL, "--keepalive", "3m", env=host)
    assert (result.returncode, result.stdout) == (0, "")
    assert re.search(rf"^{re.escape(MODEL)}\s.*   2 minutes from now$", nbllm("ps", env=host).stdout, re.M)
    nbllm("stop", MODEL, env=host)


def test_unknown_command_and_missing_argument_are_one_line_errors() -> None:
    assert nbllm("frobnicate").stderr == "Error: No such command 'frobnicate'.\n"
    missing = nbllm("run")
    assert (missing.returncode, missing.stderr) == (1, "Error: Missing argument 'MODEL'.\n")
