"""Every magic in a real IPython shell, over the real llama.cpp runtime (smollm2:135m)."""

from __future__ import annotations

import _thread
import json
import subprocess
import sys
import threading
import time

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from nbllm.client import LocalClient
from nbllm.notebook import get_magics, get_session, load_ipython_extension, timings, unload_ipython_extension
from nbllm.notebook.display import escape_html
from nbllm.notebook.magics import NbllmMagics
from nbllm.notebook.session import NotebookSession
from nbllm.notebook.timing import COLUMNS
from nbllm.runtime import Runtime
from tests.notebook.shellrun import cell, line

SHORT = "-o temperature=0 -o num_predict=12"
MAGICS = {"pull", "list", "show", "ps", "stop", "rm", "serve", "timings", "bench"}


def test_load_ext_registers_magics_and_nothing_else(shell: InteractiveShell, real_runtime: Runtime) -> None:
    custom_exc = shell.custom_exceptions
    callbacks = {name: list(cbs) for name, cbs in shell.events.callbacks.items()}
    rm_alias = shell.magics_manager.magics["line"]["rm"]
    shell.run_line_magic("load_ext", "nbllm")
    try:
        magics = shell.magics_manager.magics
        assert set(magics["line"]) >= MAGICS and {"chat", "generate"} <= set(magics["cell"])
        assert shell.custom_exceptions == custom_exc  # no set_custom_exc
        added = {name: [cb for cb in cbs if cb not in callbacks[name]] for name, cbs in shell.events.callbacks.items()}
        instance = get_magics(shell)
        assert instance is not None
        assert {name: cbs for name, cbs in added.items() if cbs} == {"post_run_cell": [instance.errors.record]}
        shell.run_line_magic("config", "NbllmMagics.default_model = 'gemma3:270m'")
        assert get_session(shell) is instance.session
        assert instance.default_model == "gemma3:270m"
        shell.run_line_magic("reset", "-f")  # IPython re-defines its aliases: not over %rm
        assert magics["line"]["rm"].__self__ is instance
    finally:
        shell.run_line_magic("unload_ext", "nbllm")
        shell.config.pop("NbllmMagics", None)
    assert shell.magics_manager.magics["line"]["rm"] is rm_alias
    assert "chat" not in shell.magics_manager.magics["cell"]
    assert {name: list(cbs) for name, cbs in shell.events.callbacks.items()} == callbacks  # the callback is gone


def test_chat_streams_throttled_updates_and_ends_as_a_static_bundle(shell: InteractiveShell, nb: NbllmMagics) -> None:
    nb.update_interval = 0.05
    run = cell(shell, "chat", f"--new {SHORT} --var r", "Name three colors.")
    result = shell.user_ns["r"]
    first, final = run.outputs[0], run.final
    display_id = first.transient["display_id"]
    assert all(o.transient["display_id"] == display_id for o in run.outputs)  # one output area, updated in place
    assert final.update and set(final.data) == {"text/markdown", "text/plain"}
    assert result.text and final.data["text/markdown"].startswith(escape_html(result.text))
    assert final.data["text/plain"].startswith(result.text)
    meta = final.metadata["nbllm"]
    assert meta["model"] == "smollm2:135m" and meta["kind"] == "chat" and meta["host"] == "in-process"
    assert meta["options"] == {"temperature": 0.0, "num_predict": 12}
    timing = meta["timings"][0]
    assert timing["eval_tokens"] == result.timings[0].eval_tokens > 0
    assert 0 < timing["ttft_s"] <= timing["wall_s"]
    json.dumps(final.metadata)  # the metadata is JSON (saved in the notebook)
    updates = len(run.outputs) - 2
    assert updates <= timing["wall_s"] / 0.05 + 3  # throttled: not one message per token


def test_chat_thread_system_prompt_and_safe_interpolation(shell: InteractiveShell, nb: NbllmMagics) -> None:
    shell.user_ns["city"] = "Paris"
    cell(shell, "chat", f"--thread trip --new -s 'Answer briefly.' {SHORT}", "# NBVAL_IGNORE_OUTPUT\nWhere is {city}?")
    cell(shell, "chat", f"--thread trip {SHORT}", "Code: {'a': {city}} and {nothing}")
    cell(shell, "chat", f"--thread trip {SHORT} --no-interp", "Keep {city}")
    thread = nb.session.threads["trip"]
    assert [m.role for m in thread] == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert thread[0].content == "Answer briefly."
    assert thread[1].content == "Where is Paris?"
    assert thread[3].content == "Code: {'a': Paris} and {nothing}"
    assert thread[5].content == "Keep {city}"
    cell(shell, "chat", f"--thread trip --new {SHORT}", "Hello")
    assert [m.role for m in nb.session.threads["trip"]] == ["user", "assistant"]


def test_format_json_and_schema_variable(shell: InteractiveShell, nb: NbllmMagics) -> None:
    shell.user_ns["Person"] = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    run = cell(shell, "chat", "--new -o temperature=0 -o num_predict=40 --format Person --var p", "Invent a person.")
    person = shell.user_ns["p"].json()
    assert isinstance(person["name"], str) and isinstance(person["age"], int)
    assert run.final.data["text/markdown"].startswith("```json\n")
    with pytest.raises(UsageError, match="--format must be 'json' or the name of a variable"):
        cell(shell, "chat", "--format NoSuchVar", "x")


def test_generate_raw_and_errors_are_one_line(shell: InteractiveShell, nb: NbllmMagics) -> None:
    run = cell(shell, "generate", "--raw -o temperature=0 -o num_predict=6 --var g", "1, 2, 3, 4,")
    assert shell.user_ns["g"].text.strip()
    assert run.final.metadata["nbllm"]["kind"] == "generate"
    quiet = cell(shell, "generate", "--no-stream --raw -o temperature=0 -o num_predict=6", "1, 2, 3, 4,")
    (only,) = quiet.outputs  # CI mode: just the final bundle, no display id to update
    assert not only.update and only.data["text/plain"].startswith(shell.user_ns["g"].text)
    with pytest.raises(UsageError, match="does not support thinking"):
        cell(shell, "chat", "--think", "Hi")
    with pytest.raises(UsageError, match=r"model 'no-such-model' not found.*%pull"):
        cell(shell, "chat", "no-such-model", "Hi")
    with pytest.raises(UsageError, match="unknown parameter 'bogus'"):
        cell(shell, "chat", "-o bogus=1", "Hi")
    with pytest.raises(UsageError, match="the cell is empty"):
        cell(shell, "chat", "", "\n  \n")
    with pytest.raises(UsageError, match="could not connect"):
        cell(shell, "chat", "--host http://127.0.0.1:9", "Hi")
    with capture_output() as cap:  # through run_cell: one line on stderr, no traceback, and the cell fails
        outcome = shell.run_cell("%%chat --think\nHi")
    assert isinstance(outcome.error_in_exec, UsageError)
    assert "Traceback" not in cap.stderr + cap.stdout


def test_side_by_side_models_finish_with_a_comparison_table(shell: InteractiveShell, nb: NbllmMagics) -> None:
    before = len(nb.session.timings)
    run = cell(
        shell, "chat", "-m smollm2:135m -m smollm2-greedy:135m -o temperature=0 -o num_predict=8 --var both", "Say hi."
    )
    assert run.outputs[0].data["text/markdown"].startswith("<table>")  # the columns, from the start
    final = run.final
    markdown = final.data["text/markdown"]
    assert "<th>smollm2:135m<br><sub>" in markdown and "<th>smollm2-greedy:135m<br><sub>" in markdown
    assert "| model | tokens | tok/s |" in markdown
    assert final.metadata["nbllm"]["models"] == ["smollm2:135m", "smollm2-greedy:135m"]
    results = shell.user_ns["both"]
    assert [r.model for r in results] == ["smollm2:135m", "smollm2-greedy:135m"]
    assert all(r.text for r in results)
    assert len(nb.session.timings) == before + 2
    raw = cell(shell, "generate", "-m smollm2:135m -m smollm2-greedy:135m --raw -o num_predict=4", "1, 2, 3,")
    assert (
        raw.final.metadata["nbllm"]["kind"] == "generate" and "| smollm2-greedy:135m |" in raw.final.data["text/plain"]
    )


def test_model_management_magics(shell: InteractiveShell, nb: NbllmMagics, real_runtime: Runtime) -> None:
    listed = line(shell, "list").result
    assert {"name", "id", "size", "modified"} <= set(listed.columns)
    assert "smollm2:135m" in set(listed["name"])
    shown = line(shell, "show", "smollm2:135m").result
    bundle = shown._repr_mimebundle_()
    assert "Capabilities" in bundle["text/markdown"] and "tools" in bundle["text/plain"]
    assert "<|im_start|>" in line(shell, "show", "smollm2:135m --template").result.text()
    cell(shell, "chat", f"--new {SHORT}", "Hi")
    running = line(shell, "ps").result
    assert "smollm2:135m" in set(running["name"]) and {"processor", "until", "context"} <= set(running.columns)
    assert "stopped smollm2:135m" in repr(line(shell, "stop", "smollm2:135m").result)
    assert "smollm2:135m" not in set(line(shell, "ps").result["name"])
    LocalClient(real_runtime).copy("smollm2:135m", "nb-copy:latest")
    assert "deleted 'nb-copy'" in repr(line(shell, "rm", "nb-copy").result)
    assert "nb-copy:latest" not in set(line(shell, "list").result["name"])
    assert "usage: pull" in repr(line(shell, "pull", "--help").result)
    with pytest.raises(UsageError, match="not found"):
        line(shell, "show", "nope-model")
    run = line(shell, "pull", "smollm2:135m")
    assert "application/vnd.jupyter.widget-view+json" in run.outputs[0].data
    assert run.final.data["text/plain"].splitlines()[-1] == "success"


def test_ps_watch_refreshes_in_the_background(shell: InteractiveShell, nb: NbllmMagics) -> None:
    view = line(shell, "ps", "--watch --interval 0.2").result
    assert view in nb.session.watchers and view.running
    cell(shell, "chat", f"--new {SHORT}", "Hi")
    deadline = time.monotonic() + 10
    while "smollm2:135m" not in view.table.value and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "smollm2:135m" in view.table.value and view.refreshes >= 2
    view.stop_button.click()
    assert not view.running and view.stop_button.disabled


def test_serve_in_kernel_reachable_by_curl_and_ollama(shell: InteractiveShell, nb: NbllmMagics) -> None:
    nb.host = ""  # the default: the in-kernel server once started
    started = line(shell, "serve", "--port 0").result
    url = started.url
    try:
        assert line(shell, "serve", "--port 0").result.url == url  # idempotent
        assert url in repr(line(shell, "serve", "status").result)
        tags = subprocess.run(["curl", "-sf", f"{url}/api/tags"], capture_output=True, text=True, timeout=30)
        assert "smollm2:135m" in {m["name"] for m in json.loads(tags.stdout)["models"]}
        code = (
            "import ollama, sys; c = ollama.Client(host=sys.argv[1]); "
            "r = c.chat(model='smollm2:135m', messages=[{'role': 'user', 'content': 'Hi'}], "
            "options={'num_predict': 4, 'temperature': 0}); "
            "print(r.message.content and 'ok', [m.model for m in c.list().models])"
        )
        out = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True, timeout=120)
        assert out.stdout.startswith("ok") and "smollm2:135m" in out.stdout, out.stderr
        run = cell(shell, "chat", f"--new {SHORT}", "Hi")  # the magics now go through the server
        assert run.final.metadata["nbllm"]["host"] == url
    finally:
        assert "stopped the server" in repr(line(shell, "serve", "stop").result)
    gone = subprocess.run(["curl", "-sf", f"{url}/api/tags"], capture_output=True, timeout=30)
    assert gone.returncode != 0
    assert "no server is running" in repr(line(shell, "serve", "stop").result)


def test_interrupt_stops_generation_promptly_and_keeps_the_partial_answer(
    shell: InteractiveShell, nb: NbllmMagics, real_runtime: Runtime
) -> None:
    cell(shell, "chat", f"--thread stop --new {SHORT}", "Hi")  # loaded, and a thread to keep intact
    before = list(nb.session.threads["stop"])
    timer = threading.Timer(1.5, _thread.interrupt_main)
    started = time.monotonic()
    timer.start()
    try:
        with capture_output() as cap, pytest.raises(KeyboardInterrupt):
            shell.run_cell_magic(
                "chat",
                "--thread stop -o temperature=0 -o num_predict=3000 --var part",
                "List the numbers from 1 to 500, separated by commas.",  # greedy: runs to num_predict
            )
        stopped = time.monotonic() - started
    finally:
        timer.cancel()
        timer.join()
    assert stopped < 1.5 + 2.0, f"took {stopped:.1f} s to stop"
    final = cap.outputs[-1]
    assert final.metadata["nbllm"]["interrupted"] is True
    part = shell.user_ns["part"]
    assert part.interrupted and part.text and final.data["text/plain"].startswith(part.text)
    assert nb.session.threads["stop"] == before  # the interrupted exchange is not kept
    deadline = time.monotonic() + 10  # the engine slot is freed: nothing active on the model any more
    while any(m.active_requests for m in LocalClient(real_runtime).ps().models) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(m.active_requests for m in LocalClient(real_runtime).ps().models)
    assert cell(shell, "chat", f"--thread stop {SHORT} --var after", "Hi again").result is None
    assert shell.user_ns["after"].text


def test_timings_dataframe_plot_and_bench(shell: InteractiveShell, nb: NbllmMagics) -> None:
    cell(shell, "chat", f"--new {SHORT}", "Hi")
    frame = line(shell, "timings").result
    assert list(frame.columns) == COLUMNS
    assert len(frame) == len(nb.session.timings) >= 1
    row = frame.iloc[-1]
    assert row["model"] == "smollm2:135m" and row["eval_tokens"] > 0 and row["eval_tok_s"] > 0
    assert row["total_s"] >= row["eval_s"] > 0 and row["ttft_s"] > 0
    assert len(timings(shell)) == len(frame)
    plot = frame.plot()
    assert len(plot.figure.axes) == 2 and plot.png().startswith(b"\x89PNG")
    assert "image/png" in plot._repr_mimebundle_()
    assert len(frame.tail(1)) == 1 and frame.tail(1).plot().stats.index.tolist() == ["smollm2:135m"]
    assert hasattr(frame.plot, "scatter")  # pandas' own plotting is still there
    run = line(shell, "bench", "smollm2:135m smollm2-greedy:135m -n 2 --prompt Hi -o num_predict=4")
    bench = run.result
    assert len(bench) == 4 and set(bench["kind"]) == {"bench"}
    assert bench.groupby("model").size().to_dict() == {"smollm2-greedy:135m": 2, "smollm2:135m": 2}
    assert any("image/png" in o.data for o in run.outputs)
    assert any("| model | runs | tok/s |" in o.data.get("text/markdown", "") for o in run.outputs)
    assert "timings cleared" in repr(line(shell, "timings", "--clear").result)
    assert len(timings(shell)) == 0


def test_unload_stops_the_server_and_a_fresh_load_starts_clean(shell: InteractiveShell, real_runtime: Runtime) -> None:
    magics = load_ipython_extension(shell, session=NotebookSession(runtime=real_runtime))
    server = magics.session.serve(port=0)
    unload_ipython_extension(shell)
    assert not server.running
    assert real_runtime.store.find("smollm2:135m") is not None  # a borrowed runtime is left alone
