"""``nbllm serve`` in the foreground, and the seed's command sequence run top to bottom against it."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from nbllm.config import Settings
from nbllm.runtime import Runtime
from nbllm.server import BackgroundServer
from nbllm.store import ModelStore
from tests.cli.support import PROMPT, ServeProcess, free_port, nbllm, spawn
from tests.support.index_server import IndexServer
from tests.support.models import install_model

MODEL = "smollm2:135m"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "systemd.md"


def read_environment_file(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines as systemd's EnvironmentFile= reads them (blank lines and # comments skipped)."""
    env = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip().strip("\"'")
    return env


@pytest.fixture
def servers() -> Iterator[list[ServeProcess]]:
    started: list[ServeProcess] = []
    yield started
    for server in started:
        server.kill()


def test_seed_sequence(tmp_path: Path, package_index: IndexServer, servers: list[ServeProcess]) -> None:
    """serve, pull, list, show --template, run --keepalive=-1m, ps, stop, ps — as the tutorial does them."""
    port = free_port()
    env_file = tmp_path / "nbllm.env"  # the tutorial's /etc/ollama.env, on a free port
    env_file.write_text(f"\nOLLAMA_HOST=0.0.0.0:{port}\nOLLAMA_MODELS={tmp_path / 'models'}\n\n")
    server_env = {**read_environment_file(env_file.read_text()), "NBLLM_PACKAGE_INDEX": package_index.url}
    server = ServeProcess({**server_env, "NBLLM_HOME": str(tmp_path / "home")}, tmp_path / "serve.log")
    servers.append(server)
    server.wait_ready()
    cli = {"OLLAMA_HOST": f"127.0.0.1:{port}", "NBLLM_HOME": str(tmp_path / "cli-home")}

    pull = nbllm("pull", MODEL, env=cli)
    assert pull.returncode == 0, pull.stderr
    lines = pull.stderr.splitlines()
    assert lines[0] == "pulling manifest" and lines[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    bars = lines[1:-3]
    assert bars and all(re.fullmatch(r"pulling [0-9a-f]{12}\.\.\. 100% ▕█+▏ +[\d.]+ [KMG]?B", b) for b in bars), bars
    assert len({b.index("▏") for b in bars}) == 1

    listing = nbllm("list", env=cli).stdout.splitlines()
    assert re.fullmatch(r"NAME {12}ID {14}SIZE {5}MODIFIED", listing[0])
    assert re.fullmatch(r"smollm2:135m    [0-9a-f]{12}    98 MB    (Less than a second|\d+ seconds?) ago", listing[1])

    template = nbllm("show", MODEL, "--template", env=cli).stdout
    assert template.startswith("{{- if or .System .Tools }}<|im_start|>system") and "{{ .Content }}" in template

    child = spawn("run", MODEL, "--keepalive=-1m", env=cli)
    child.expect_exact(PROMPT)
    assert ANSI.sub("", child.before + child.after).endswith(">>> Send a message (/? for help)")
    child.sendline("/bye")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    ps = nbllm("ps", env=cli).stdout.splitlines()
    assert re.fullmatch(r"NAME {12}ID {14}SIZE {6}PROCESSOR {4}UNTIL", ps[0])
    assert re.fullmatch(r"smollm2:135m    [0-9a-f]{12}    \d+ MB    100% CPU     Forever", ps[1])
    assert ps[1].split()[1] == listing[1].split()[1]  # the same ID in list and ps

    stop = nbllm("stop", MODEL, env=cli)
    assert (stop.returncode, stop.stdout, stop.stderr) == (0, "", "")
    assert nbllm("ps", env=cli).stdout == "NAME    ID    SIZE    PROCESSOR    UNTIL\n"

    # systemctl stop: SIGTERM with a model loaded forever; the server unloads it and exits 0
    assert nbllm("run", MODEL, "--keepalive=-1m", env=cli).returncode == 0  # no prompt: load only
    assert server.stop(signal.SIGTERM) == 0
    log = server.log()
    assert f"msg=unloaded {MODEL}" in log
    assert log.index("Shutting down") < log.rindex(f"msg=unloaded {MODEL}")  # unloaded by the shutdown
    assert "Traceback" not in log


def test_ctrl_c_unloads_models_and_exits_cleanly(
    tmp_path: Path, real_runtime: Runtime, servers: list[ServeProcess]
) -> None:
    source = real_runtime.store.get(MODEL)
    assert source.model_path is not None
    install_model(ModelStore(tmp_path / "models"), MODEL, source.model_path, template=source.template)
    port = free_port()
    env = {"OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": str(tmp_path / "models"), "NBLLM_HOME": str(tmp_path)}
    server = ServeProcess(env, tmp_path / "serve.log")
    servers.append(server)
    server.wait_ready()
    assert nbllm("run", MODEL, "--keepalive", "10m", env=env).returncode == 0
    assert MODEL in nbllm("ps", env=env).stdout
    assert server.stop(signal.SIGINT) == 0
    log = server.log()
    assert f"msg=unloaded {MODEL}" in log and "Traceback" not in log and "KeyboardInterrupt" not in log
    assert nbllm("ps", env=env).returncode == 1  # nothing listens any more


def test_busy_port_is_a_one_line_error(live_server: BackgroundServer, tmp_path: Path) -> None:
    hostport = live_server.url.removeprefix("http://")
    result = nbllm("serve", env={"OLLAMA_HOST": hostport, "NBLLM_HOME": str(tmp_path)})
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == f"Error: listen tcp {hostport}: bind: address already in use"


def test_systemd_example_matches_the_seed_and_its_environment_file_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    text = DOCS.read_text()
    unit = re.search(r"```ini\n(.*?)```", text, re.S)
    env_block = re.search(r"tee /etc/nbllm\.env << EOF_ENV\n(.*?)EOF_ENV", text, re.S)
    assert unit is not None and env_block is not None
    directives = dict(line.split("=", 1) for line in unit.group(1).splitlines() if "=" in line)
    assert directives["ExecStart"].endswith("nbllm serve")
    assert directives["EnvironmentFile"] == "/etc/nbllm.env"
    assert directives["Restart"] == "always" and directives["After"] == "network-online.target"
    assert directives["WantedBy"] == "default.target"
    for key, value in read_environment_file(env_block.group(1)).items():
        monkeypatch.setenv(key, value)
    settings = Settings.from_env()
    assert settings.host.bind_host == "0.0.0.0" and settings.host.port == 11434
    assert settings.models_dir == Path("/data/LLM/nbllm/models") and settings.keep_alive == 300
