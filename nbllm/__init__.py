"""nbllm: a Jupyter-native, pure-Python take on Ollama.

Importing the package is cheap and has no side effects; heavy pieces load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nbllm._version import __version__

if TYPE_CHECKING:
    from nbllm.client import Client, LocalClient
    from nbllm.config import Settings
    from nbllm.notebook import load_ipython_extension, unload_ipython_extension
    from nbllm.runtime import Runtime
    from nbllm.server import BackgroundServer, create_app

__all__ = [
    "BackgroundServer",
    "Client",
    "LocalClient",
    "Runtime",
    "Settings",
    "__version__",
    "create_app",
    "load_ipython_extension",
    "unload_ipython_extension",
]

_LAZY = {
    "BackgroundServer": "nbllm.server",
    "Client": "nbllm.client",
    "LocalClient": "nbllm.client",
    "Runtime": "nbllm.runtime",
    "Settings": "nbllm.config",
    "create_app": "nbllm.server",
    "load_ipython_extension": "nbllm.notebook",
    "unload_ipython_extension": "nbllm.notebook",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nbllm' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
