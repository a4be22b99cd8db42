"""Named host profiles: ``c.NbllmMagics.hosts`` / ``%config`` and ``NBLLM_HOME/hosts.ini`` for the magics
and ``nbllm bench``; keys are named by environment variable and never appear anywhere."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from nbllm.backends import BackendError
from nbllm.backends.profiles import HostProfile, load_profiles, parse_profiles
from nbllm.config import Settings
from nbllm.notebook import load_ipython_extension, unload_ipython_extension
from nbllm.notebook.magics import NbllmMagics
from nbllm.notebook.session import NotebookSession
from tests.cli.support import nbllm
from tests.notebook.shellrun import cell, line
from tests.support.schedule_server import ScheduleServer

KEY_ENV = "NBLLM_TEST_LAB_KEY"
SECRET = "sk-lab-profile-never-shown-0815"


@pytest.fixture(scope="module")
def sched() -> Iterator[ScheduleServer]:
    server = ScheduleServer().start()
    yield server
    server.stop()


@pytest.fixture
def nb_profiles(shell: InteractiveShell, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NbllmMagics]:
    """The extension with an empty NBLLM_HOME (no hosts.ini) and the lab key in the environment."""
    monkeypatch.setenv(KEY_ENV, SECRET)
    magics = load_ipython_extension(shell, session=NotebookSession(settings=Settings(home=tmp_path)))
    yield magics
    unload_ipython_extension(shell)


def _everything_shown(run: object, magics: NbllmMagics) -> str:
    session = magics.session
    return repr(run) + repr(magics.hosts) + repr(session._clients) + repr(session.timings.frame().to_dict())


def test_config_profile_routes_chat_with_its_key(
    shell: InteractiveShell, nb_profiles: NbllmMagics, sched: ScheduleServer
) -> None:
    url = f"openai+{sched.url}/v1"
    line(shell, "config", f'NbllmMagics.hosts = {{"lab": {{"url": "{url}", "api_key_env": "{KEY_ENV}"}}}}')
    assert nb_profiles.hosts["lab"]["api_key_env"] == KEY_ENV
    sched.requests.clear()
    run = cell(shell, "chat", "t10-g10-n3 --host lab --new --var r", "hello there")
    assert shell.user_ns["r"].text == "tok0 tok1 tok2 "
    (seen,) = sched.requests
    assert seen["path"] == "/v1/chat/completions" and seen["headers"]["authorization"] == f"Bearer {SECRET}"
    assert shell.user_ns["r"].timings[0].host == url  # the profile's URL, as %timings shows it
    frame = line(shell, "timings").result
    assert SECRET not in _everything_shown((run.outputs, run.stdout, frame.to_csv()), nb_profiles)


def test_default_host_may_be_a_profile_and_bench_uses_its_key(
    shell: InteractiveShell, nb_profiles: NbllmMagics, sched: ScheduleServer
) -> None:
    nb_profiles.hosts = {"lab": {"url": f"openai+{sched.url}/v1", "api_key_env": KEY_ENV}}
    nb_profiles.host = "lab"
    nb_profiles.api_key_env = "NBLLM_TEST_UNSET_KEY"  # the profile's variable wins for its host
    sched.requests.clear()
    run = line(shell, "bench", "t10-g10-n2 -c 1 -n 2 --warmup 0 --no-plots")
    result = run.result
    assert list(result.runs["completed"]) == [2] and list(result.runs["failed"]) == [0]
    assert list(result.runs["target"]) == ["lab"] and list(result.runs["url"]) == [f"openai+{sched.url}/v1"]
    streamed = [r for r in sched.requests if r["body"].get("stream")]
    assert len(streamed) == 2 and {r["headers"]["authorization"] for r in sched.requests} == {f"Bearer {SECRET}"}
    assert SECRET not in _everything_shown((run.outputs, run.stdout, result.requests.to_csv()), nb_profiles)


def test_a_word_no_profile_has_is_an_ollama_host_and_its_errors_say_so(
    shell: InteractiveShell, nb_profiles: NbllmMagics, sched: ScheduleServer
) -> None:
    """``--host WORD``: the profile if one has that name, else ``http://WORD:11434`` as Ollama reads it."""
    nb_profiles.hosts = {"lab": f"openai+{sched.url}/v1", "gpu2": sched.url}
    note = "(and no host profile named 'nbllm-no-such-host' either; known: gpu2, lab)"
    unreachable = r"could not connect to a server at http://nbllm-no-such-host:11434; .*"
    with pytest.raises(UsageError, match=unreachable + re.escape(note)):
        cell(shell, "chat", "t10-g10-n3 --host nbllm-no-such-host --new", "hi")
    with pytest.raises(UsageError, match=unreachable + re.escape(note)):
        line(shell, "ps", "--host nbllm-no-such-host")
    with pytest.raises(UsageError, match=r"warm-up failed on http://nbllm-no-such-host:11434 .*" + re.escape(note)):
        line(shell, "bench", "m -c 1 -n 1 --host nbllm-no-such-host")
    with pytest.raises(UsageError) as caught:  # a URL is never a profile: no note
        line(shell, "ps", "--host http://nbllm-no-such-host")
    assert "no host profile" not in str(caught.value)
    sched.requests.clear()
    line(shell, "bench", "t10-g10-n2 -c 1 -n 1 --warmup 0 --no-plots --host gpu2")  # a URL profile: Ollama API
    assert [r["path"] for r in sched.requests if r["body"].get("stream")] == ["/api/generate"]


def test_ollama_host_is_never_a_profile(sched: ScheduleServer, tmp_path: Path) -> None:
    """``OLLAMA_HOST=WORD`` is ``http://WORD:11434`` for ``nbllm bench`` even where a profile has that name."""
    word = "nbllm-no-such-host"
    (tmp_path / "hosts.ini").write_text(f"[{word}]\nurl = {sched.url}\n")
    env = {"NBLLM_HOME": str(tmp_path), "OLLAMA_HOST": word}
    sched.requests.clear()
    result = nbllm("bench", "t10-g10-n2", "-n", "1", "--no-progress", env=env)
    assert result.returncode != 0 and f"warm-up failed on http://{word}:11434" in result.stderr
    assert "no host profile" not in result.stderr and not sched.requests
    result = nbllm("bench", "t10-g10-n2", "-n", "1", "--warmup", "0", "--host", word, "--no-progress", env=env)
    assert result.returncode == 0, result.stderr  # given as --host, the word is the profile
    assert sched.requests and word in result.stdout  # the target is named by its profile
    del env["OLLAMA_HOST"]
    result = nbllm("bench", "m", "-n", "1", "--host", "nbllm-no-such-other", "--no-progress", env=env)
    assert "(and no host profile named 'nbllm-no-such-other' either" in result.stderr


def test_a_profile_never_holds_a_key(shell: InteractiveShell, nb_profiles: NbllmMagics, sched: ScheduleServer) -> None:
    nb_profiles.hosts = {"lab": {"url": f"openai+{sched.url}/v1", "api_key": SECRET}}
    with pytest.raises(UsageError) as caught:
        cell(shell, "chat", "t10-g10-n3 --host lab --new", "hi")
    message = str(caught.value)
    assert "unknown field(s) api_key" in message and "api_key_env" in message and SECRET not in message
    with pytest.raises(BackendError, match="must name an environment variable"):
        parse_profiles({"lab": {"url": "openai+http://h:1/v1", "api_key_env": SECRET + "-x y"}})
    with pytest.raises(BackendError, match="cannot name a host profile"):
        parse_profiles({"local": "http://h:1"})
    with pytest.raises(BackendError, match="needs a url"):
        parse_profiles({"lab": {"api_key_env": "K"}})


def test_hosts_ini_is_shared_by_the_magics_and_nbllm_bench(
    shell: InteractiveShell, nb_profiles: NbllmMagics, sched: ScheduleServer, tmp_path: Path
) -> None:
    (tmp_path / "hosts.ini").write_text(
        f'[lab]\nurl = "openai+{sched.url}/v1"\napi_key_env = {KEY_ENV}\n\n[plain]\nurl = {sched.url}\n'
    )
    assert load_profiles(tmp_path) == {
        "lab": HostProfile("lab", f"openai+{sched.url}/v1", KEY_ENV),
        "plain": HostProfile("plain", sched.url, None),
    }
    sched.requests.clear()
    cell(shell, "chat", "t10-g10-n2 --host lab --new", "hi")
    assert sched.requests[-1]["headers"]["authorization"] == f"Bearer {SECRET}"
    nb_profiles.hosts = {"lab": sched.url}  # the magics' config wins over the file
    line(shell, "bench", "t10-g10-n2 -c 1 -n 1 --warmup 0 --no-plots --host lab")
    assert sched.requests[-1]["path"] == "/api/generate"

    env = {"NBLLM_HOME": str(tmp_path), KEY_ENV: SECRET}
    sched.requests.clear()
    result = nbllm("bench", "t10-g10-n2", "--host", "lab", "-n", "2", "--warmup", "0", "--json", env=env)
    assert result.returncode == 0, result.stderr
    (run,) = json.loads(result.stdout)
    assert run["completed"] == 2 and run["backend"] == "openai"
    assert {r["headers"]["authorization"] for r in sched.requests} == {f"Bearer {SECRET}"}
    assert SECRET not in result.stdout + result.stderr
    unknown = nbllm("bench", "m", "--host", "lbb", "-n", "1", env=env)
    assert unknown.returncode != 0 and "no host profile named 'lbb' either; known: lab, plain)" in unknown.stderr
    (tmp_path / "hosts.ini").write_text(f"[lab]\nurl = http://h:1\napi_key = {SECRET}\n")
    leaked = nbllm("bench", "m", "--host", "lab", "-n", "1", env=env)
    assert leaked.returncode != 0 and "unknown field(s) api_key" in leaked.stderr and SECRET not in leaked.stderr
