"""Widgets of the notebook layer, one per module, composed from stock ipywidgets (no custom JS).

Importing this package without ipywidgets installed raises an error with the install hint.
"""

from __future__ import annotations

try:
    import ipywidgets  # noqa: F401
except ImportError as exc:  # pragma: no cover - ipywidgets is a dependency; kept for slim installs
    raise ImportError("nbllm's notebook widgets need ipywidgets: pip install 'ipywidgets>=8.1'") from exc

from nbllm.notebook.widgets.inspector import ToolCallInspector
from nbllm.notebook.widgets.progress import PullProgress
from nbllm.notebook.widgets.ps import PsView
from nbllm.notebook.widgets.thinking import ThinkingAnswer

__all__ = ["PsView", "PullProgress", "ThinkingAnswer", "ToolCallInspector"]
