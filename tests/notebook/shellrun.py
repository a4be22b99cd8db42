"""Running magics in the test shell and collecting what they displayed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output


@dataclass
class Run:
    """What one magic call displayed and returned."""

    outputs: list[Any]
    result: Any = None
    stdout: str = ""
    stderr: str = ""

    @property
    def final(self) -> Any:
        """The last display (the static bundle streamed answers end with)."""
        assert self.outputs, "nothing was displayed"
        return self.outputs[-1]


def cell(shell: InteractiveShell, magic: str, line: str, body: str) -> Run:
    """Run ``%%magic line`` with ``body``, capturing displays."""
    with capture_output() as cap:
        result = shell.run_cell_magic(magic, line, body)
    return Run(list(cap.outputs), result, cap.stdout, cap.stderr)


def line(shell: InteractiveShell, magic: str, text: str = "") -> Run:
    """Run ``%magic text``, capturing displays."""
    with capture_output() as cap:
        result = shell.run_line_magic(magic, text)
    return Run(list(cap.outputs), result, cap.stdout, cap.stderr)
