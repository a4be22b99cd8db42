"""``%bench`` takes ``nbllm bench``'s flags (the same engine, the same names), each with its help."""

from __future__ import annotations

from nbllm.cli.bench import bench
from nbllm.notebook.magics import NbllmMagics

TERMINAL_ONLY = {"--no-progress", "--json"}
"""Flags of a terminal: the notebook's bar is a widget and its result a Python object."""


def test_every_nbllm_bench_flag_is_a_bench_magic_flag_with_help() -> None:
    parser = NbllmMagics.bench.parser  # type: ignore[attr-defined]  # set by @magic_arguments
    magic = {opt: action for action in parser._actions for opt in action.option_strings}
    cli = {opt for param in bench.params if param.param_type_name == "option" for opt in param.opts}
    assert cli - TERMINAL_ONLY - set(magic) == set()
    assert all(action.help for action in magic.values())
    assert "--prompt" in magic and "--runs" in magic  # and the model comparison's own
