"""How answers look and what they leave behind, in a real IPython shell over the real engine (smollm2:135m).

Issue #23's kernel-level items: one clear line for ``%pull`` of an unknown name, ``%timings`` that
keep only finished (or interrupted) answers with integer token counts, model text shown as text,
the load shown while waiting (never "(empty answer)"), side-by-side columns that do not move,
``{Err}``/``{In[n]}``/``{Out[n]}`` in prompts, ``-f code|text|json``, and the backend said once
when it changes.
"""

from __future__ import annotations

import json
import re

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from nbllm.notebook.display import escape_html
from nbllm.notebook.magics import NbllmMagics
from nbllm.notebook.outputs import CODE_NOTE
from tests.notebook.shellrun import cell, line

pytestmark = pytest.mark.model

SHORT = "-o temperature=0 -o num_predict=12"
OUR_TAGS = re.compile(r"</?(sub|details|summary|table|tr|th|td)\b[^>]*>|<br>")


def test_pull_of_an_unknown_name_fails_with_one_clear_line(shell: InteractiveShell, nb: NbllmMagics) -> None:
    with capture_output() as cap:
        outcome = shell.run_cell("%pull no-such-model")
    error = outcome.error_in_exec
    assert isinstance(error, UsageError)
    message = str(error)
    assert "\n" not in message and "Errno" not in message and "Name or service" not in message
    assert "smollm2:135m" in message and "gemma3:270m" in message  # the built-in names
    # offline here: not a built-in name, and the registry could not be reached (online: Ollama's 404 line)
    assert re.fullmatch(
        r"pull model manifest: ('no-such-model:latest' is not one of nbllm's built-in models \(.*\), "
        r"and the registry registry\.ollama\.ai could not be reached|file does not exist \(.*\))",
        message,
    ), message
    shown = json.dumps([o.data for o in cap.outputs])
    assert "built-in" not in shown and "error" not in shown  # said once: by the error line, not the output too


def test_only_finished_answers_join_the_timings_with_integer_counts(shell: InteractiveShell, nb: NbllmMagics) -> None:
    nb.session.timings.clear()
    with pytest.raises(UsageError, match="not found"):
        cell(shell, "chat", "no-such-model", "Hi")
    with pytest.raises(UsageError, match="could not connect"):
        cell(shell, "chat", "--host http://127.0.0.1:9", "Hi")
    assert len(nb.session.timings) == 0  # failed requests leave no empty row
    both = cell(shell, "chat", f"-m smollm2:135m -m no-such-model {SHORT}", "Hi")
    assert "not found" in both.final.data["text/markdown"]  # the failing column says why
    cell(shell, "generate", f"--raw {SHORT}", "1, 2, 3,")
    frame = line(shell, "timings").result
    assert frame["model"].tolist() == ["smollm2:135m", "smollm2:135m"] and frame["done_reason"].notna().all()
    assert str(frame["eval_tokens"].dtype) == "Int64" and str(frame["prompt_tokens"].dtype) == "Int64"
    assert (frame["eval_tokens"] > 0).all()
    record = nb.session.timings.records()[0]
    assert frame["eval_tok_s"].iloc[0] == record.eval_tok_s and frame["ttft_s"].iloc[0] == record.ttft_s  # full
    shown = frame._repr_html_() + repr(frame)
    assert not re.search(r"\d\.\d{4,}", shown)  # displayed rounded: no six-decimal figures
    assert f"<td>{record.eval_tokens}</td>" in shown and f"<td>{record.eval_tokens}.0</td>" not in shown
    assert f"<td>{record.eval_tok_s:.1f}</td>" in shown
    assert frame.plot().stats.index.tolist() == ["smollm2:135m"]  # no empty bar for the failed model


def test_model_text_is_shown_as_text(shell: InteractiveShell, nb: NbllmMagics) -> None:
    # greedy SmolLM2 continues an HTML page with more tags: what a Markdown renderer would swallow
    run = cell(
        shell, "generate", "--raw -o temperature=0 -o num_predict=24 --var g", "<html>\n<body>\n<h1>Hello</h1>\n"
    )
    text = shell.user_ns["g"].text
    assert "<" in text, text
    markdown = run.final.data["text/markdown"]
    assert markdown.startswith(escape_html(text)) and run.final.data["text/plain"].startswith(text)
    assert "<" not in OUR_TAGS.sub("", markdown)  # no tag of the model's reaches the renderer
    for update in run.outputs[1:-1]:  # nor while it streams
        assert "<" not in OUR_TAGS.sub("", update.data["text/markdown"])


def test_while_the_model_loads_only_the_loading_line_shows(shell: InteractiveShell, nb: NbllmMagics) -> None:
    line(shell, "stop", "smollm2:135m")
    nb.update_interval = 0.02
    run = cell(shell, "chat", f"--new {SHORT} --var r", "Hi")
    live = [o.data for o in run.outputs[1:-1]]
    waiting = [d for d in live if d["text/plain"] in ("loading smollm2:135m…", "waiting for the first token…")]
    assert waiting and waiting[0]["text/plain"] == "loading smollm2:135m…", live[:3]
    assert all(d["text/markdown"] == f"<sub>{d['text/plain']}</sub>" for d in waiting)  # the line alone
    assert all("empty answer" not in d["text/markdown"] for d in live)
    assert shell.user_ns["r"].text and "empty answer" not in run.final.data["text/markdown"]


def test_side_by_side_columns_keep_their_layout_to_the_end(shell: InteractiveShell, nb: NbllmMagics) -> None:
    nb.update_interval = 0.02
    run = cell(shell, "chat", "-m smollm2:135m -m smollm2-greedy:135m -o num_predict=8", "Say hi.")
    heads = re.compile(r"<table>\n<tr>\n<th>smollm2:135m<br><sub>[^<]+</sub></th>\n<th>smollm2-greedy:135m<br><sub>")
    for output in run.outputs:  # the first draw, every update and the final output: the same two columns
        assert heads.match(output.data["text/markdown"]), output.data["text/markdown"][:200]
    assert "| model | tokens | tok/s |" in run.final.data["text/markdown"]


def test_prompts_can_quote_inputs_outputs_and_errors(shell: InteractiveShell, nb: NbllmMagics) -> None:
    shell.run_cell("6 * 7", store_history=True)
    answer_cell = shell.execution_count - 1
    with capture_output():
        shell.run_cell("{}['missing']", store_history=True)
    failed = shell.execution_count - 1
    cell(
        shell,
        "chat",
        "--new -o num_predict=1",
        f"In: {{In[{answer_cell}]}} Out: {{Out[{answer_cell}]}}\nExplain:\n{{Err}}",
    )
    prompt = nb.session.threads["default"][0].content
    assert prompt.startswith("In: 6 * 7 Out: 42\nExplain:\nTraceback (most recent call last):")
    assert "{}['missing']" in prompt and prompt.endswith("KeyError: 'missing'")
    assert "interactiveshell.py" not in prompt  # IPython's own frame is left out, as IPython shows it
    cell(shell, "chat", "--new -o num_predict=1", f"{{Err[{failed}]}}|{{Err[-1]}}|{{Err[{answer_cell}]}}")
    by_cell, last, none = nb.session.threads["default"][0].content.split("|")
    assert by_cell == last == nb.errors[failed] and none == f"{{Err[{answer_cell}]}}"


def test_output_formats_code_text_and_json(shell: InteractiveShell, nb: NbllmMagics) -> None:
    shell.rl_next_input = None
    code = cell(
        shell,
        "chat",
        "--new -f code -o temperature=0 -o num_predict=60 --var c",
        "Write a Python function add(a, b) that returns a + b, in a code block.",
    )
    inserted = shell.rl_next_input
    assert "```" in shell.user_ns["c"].text and inserted and "```" not in inserted  # the code, without fences
    assert "def add" in inserted and CODE_NOTE in code.final.data["text/markdown"]
    text = cell(shell, "chat", f"--new -f text {SHORT} --var t", "Say hi.")
    assert set(text.final.data) == {"text/plain"} and text.final.data["text/plain"].startswith(shell.user_ns["t"].text)
    shell.user_ns["Pet"] = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    as_json = cell(shell, "chat", "--new -f json --format Pet -o temperature=0 -o num_predict=60 --var j", "A pet.")
    pet = shell.user_ns["j"].json()
    assert as_json.final.data["application/json"] == pet and isinstance(pet["name"], str)  # shown as JSON


def test_the_backend_is_said_once_when_it_changes(shell: InteractiveShell, nb: NbllmMagics) -> None:
    nb.host = ""
    nb.last_host = None
    first = cell(shell, "chat", f"--new {SHORT}", "Hi")  # in this kernel from the start: nothing to say
    url = line(shell, "serve", "--port 0").result.url
    try:
        via = cell(shell, "chat", f"--new {SHORT}", "Hi")
    finally:
        line(shell, "serve", "stop")
    after = cell(shell, "chat", f"--new {SHORT}", "Hi")
    again = cell(shell, "chat", f"--new {SHORT}", "Hi")
    notes = [
        [o.data["text/plain"] for o in run.outputs if "answering" in o.data["text/plain"]]
        for run in (first, via, after, again)
    ]
    assert notes == [
        [],
        [f"answering through the server at {url}"],
        ["answering in this kernel (in-process): no server is in use now; %serve starts one"],
        [],
    ]
