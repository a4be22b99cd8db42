"""Nothing lands in a cell but the magic's own output: interrupts stop quietly, server logs stay out of cells."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from nbllm.notebook import load_ipython_extension, unload_ipython_extension
from nbllm.notebook.session import NotebookSession

RAISE_QUIET = "from nbllm.notebook.magics import quiet_interrupt\nraise quiet_interrupt(get_ipython())"


def test_quiet_interrupt_fails_the_cell_without_a_traceback(shell: InteractiveShell) -> None:
    before = (shell.custom_exceptions, shell.CustomTB)
    with capture_output() as cap:
        result = shell.run_cell(RAISE_QUIET)
    assert isinstance(result.error_in_exec, KeyboardInterrupt)  # the cell failed: Run All stops there
    assert (cap.stdout, cap.stderr, cap.outputs) == ("", "", [])
    assert (shell.custom_exceptions, shell.CustomTB) == before  # the handler lived for that cell only
    with capture_output() as cap:
        result = shell.run_cell("raise KeyboardInterrupt")
    assert isinstance(result.error_in_exec, KeyboardInterrupt) and "KeyboardInterrupt" in cap.stdout


def test_quiet_interrupt_leaves_other_exceptions_to_their_handlers(shell: InteractiveShell) -> None:
    seen: list[type[BaseException]] = []

    def handler(sh: object, etype: type[BaseException], value: BaseException, tb: object, tb_offset: object = None):
        seen.append(etype)

    shell.set_custom_exc((LookupError,), handler)
    try:
        with capture_output() as cap:
            shell.run_cell(
                "from nbllm.notebook.magics import quiet_interrupt\nq = quiet_interrupt(get_ipython())\n"
                "raise KeyError('x')"
            )
            shell.run_cell("raise LookupError('y')")
        assert seen == [KeyError, LookupError] and cap.stdout == ""
    finally:
        shell.set_custom_exc((), None)


@contextlib.contextmanager
def no_root_handlers() -> Iterator[None]:
    """A plain kernel's logging: nothing on the root logger (pytest's own capture handlers taken off)."""
    saved = logging.root.handlers[:]
    logging.root.handlers.clear()
    try:
        yield
    finally:
        logging.root.handlers[:] = saved


def test_server_logs_never_reach_stderr_and_go_to_the_log_file(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with no_root_handlers():
        _check_server_logs(shell, capsys, tmp_path)
    assert logging.getLogger("nbllm").handlers == [] and logging.getLogger("nbllm").level == logging.NOTSET


def _check_server_logs(shell: InteractiveShell, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    server_log = logging.getLogger("nbllm.server.errors")
    server_log.error("stream failed: before load")  # Python's last resort: to stderr, i.e. into the cell
    assert "before load" in capsys.readouterr().err
    magics = load_ipython_extension(shell, session=NotebookSession())
    try:
        server_log.error("stream failed: dropped")
        logging.getLogger("uvicorn.error").error("Exception in ASGI application")
        assert capsys.readouterr().err == ""
        log_file = tmp_path / "server.log"
        magics.session.capture_logs(str(log_file))
        server_log.error("stream failed: into the file")
        logging.getLogger("nbllm.server.thread").info("nbllm server listening on http://x")
        assert capsys.readouterr().err == ""
        text = log_file.read_text()
        assert "ERROR nbllm.server.errors: stream failed: into the file" in text and "listening on" in text
        assert "dropped" not in text
    finally:
        unload_ipython_extension(shell)
