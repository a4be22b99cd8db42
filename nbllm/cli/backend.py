"""Which backend a command talks to: the server at OLLAMA_HOST, or this process when none runs.

Ollama's CLI needs a running server. nbllm's does too for ``ps``, ``stop`` and ``serve`` state, but
when nothing answers at the default address and OLLAMA_HOST was not set, ``run``, ``pull``,
``list``, ``show``, ``cp`` and ``rm`` work in this process on the same model store (no daemon
to start first). With OLLAMA_HOST set, an unreachable server is an error, never a silent fallback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbllm.errors import ServerUnreachable

if TYPE_CHECKING:  # the client (httpx, pydantic) loads when a command runs, not for `nbllm --help`
    from nbllm.client import BaseClient
    from nbllm.config import Settings

__all__ = ["connect"]


def connect(*, local_ok: bool = True, settings: Settings | None = None) -> BaseClient:
    """A client of the server at OLLAMA_HOST, or (``local_ok``, no OLLAMA_HOST) an in-process one."""
    from nbllm.client import Client, LocalClient
    from nbllm.config import Settings

    settings = settings or Settings.from_env()
    client = Client(settings=settings)
    if client.heartbeat():
        return client
    client.close()
    if local_ok and "host" not in settings.model_fields_set:
        from nbllm.runtime import Runtime

        return LocalClient(Runtime.from_settings(settings))
    raise ServerUnreachable(
        f"could not connect to a running nbllm server at {settings.host.url}; start one with `nbllm serve`"
    )
