"""The package's public surface, and that importing it stays cheap."""

from __future__ import annotations

import subprocess
import sys

import nbllm


def test_all_is_sorted_and_resolvable() -> None:
    assert nbllm.__all__ == sorted(nbllm.__all__)
    for name in nbllm.__all__:
        assert getattr(nbllm, name) is not None


def test_unknown_attribute_raises() -> None:
    try:
        nbllm.DoesNotExist  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "DoesNotExist" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_import_pulls_in_no_heavy_modules() -> None:
    heavy = "('llama_cpp', 'IPython', 'starlette', 'fastapi', 'ipywidgets', 'pandas')"
    code = f"import sys, nbllm, nbllm.cli; print(','.join(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
